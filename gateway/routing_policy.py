"""Which alias answers a request: a pin by the caller, else sticky A/B weights, else the default alias.

The A/B bucket of a client is ``int(sha256(client_id).hexdigest(), 16) % 100``: the same client
always lands in the same bucket (sticky across replicas and restarts); a request without a client
id gets a random bucket. Buckets are walked over the aliases in sorted order, each alias taking
as many consecutive buckets as its weight.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass

from gateway.routing_table import ModelRoutes, Route, RoutingTable, WeightedRoutes, upper_buckets


def client_bucket(client_id: str | None, rng: random.Random | None = None) -> int:
    """0..99, a pure function of ``client_id``; random when there is none."""
    if not client_id:
        return (rng or random).randrange(100)
    return int(hashlib.sha256(client_id.encode()).hexdigest(), 16) % 100


def bucket_owner(uppers: tuple[int, ...], bucket: int) -> int | None:
    """The index of the weight owning ``bucket``, given the weights' cumulative upper buckets (``upper_buckets``)."""
    index = bisect.bisect_right(uppers, bucket)
    return index if index < len(uppers) else None


def weighted_alias(weights: tuple[tuple[str, int], ...], bucket: int) -> str | None:
    """The alias owning ``bucket`` under ``weights`` (percent per alias, summing to 100)."""
    index = bucket_owner(upper_buckets(tuple(weight for _, weight in weights)), bucket)
    return None if index is None else weights[index][0]


class RouteError(Exception):
    """The request cannot be routed; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    shadow: Route | None


def resolve(
    table: RoutingTable,
    model_name: str,
    *,
    default_alias: str,
    client_id: str | None = None,
    alias: str | None = None,
    version: int | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """The route (and optional shadow) of one request, from one snapshot of the table."""
    if version is not None:
        route = _served_model(table, model_name).by_version(version)
        if route is None:
            raise RouteError(404, f"version {version} of model {model_name!r} is not served")
        return Decision(route, None)
    if alias is not None:
        pinned = table.route(model_name, alias)
        if pinned is None:
            _served_model(table, model_name)
            raise RouteError(404, f"alias {alias!r} of model {model_name!r} is not served")
        return Decision(pinned, None)
    weighted = table.weighted.get(model_name)
    if weighted is None:
        return Decision(_default_route(table, model_name, default_alias), None)
    route = _weighted_route(weighted, client_bucket(client_id, rng)) or _default_route(table, model_name, default_alias)
    return Decision(route, _shadow(weighted, route, rng))


def _served_model(table: RoutingTable, model_name: str) -> ModelRoutes:
    model = table.model(model_name)
    if model is None:
        raise RouteError(404, f"model {model_name!r} is not served by this gateway")
    return model


def _default_route(table: RoutingTable, model_name: str, default_alias: str) -> Route:
    route = table.route(model_name, default_alias)
    if route is None:
        served = ", ".join(sorted(_served_model(table, model_name).routes)) or "none"
        raise RouteError(503, f"model {model_name!r}: alias {default_alias!r} is not served (served aliases: {served})")
    return route


def _weighted_route(weighted: WeightedRoutes, bucket: int) -> Route | None:
    """The route of the alias owning ``bucket`` (None when that alias is not served), on the compiled policy."""
    index = bucket_owner(weighted.uppers, bucket)
    return None if index is None else weighted.routes[index]


def _shadow(weighted: WeightedRoutes, route: Route, rng: random.Random | None) -> Route | None:
    shadow = weighted.shadow
    if shadow is None or shadow is route or (rng or random).random() * 100 >= weighted.shadow_sample_percent:
        return None
    return shadow
