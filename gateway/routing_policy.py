"""Which alias answers a request: a pin by the caller, else sticky A/B weights, else the default alias.

The A/B bucket of a client is ``int(sha256(client_id).hexdigest(), 16) % 100``: the same client
always lands in the same bucket (sticky across replicas and restarts); a request without a client
id gets a random bucket. Buckets are walked over the aliases in sorted order, each alias taking
as many consecutive buckets as its weight.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from gateway.routing_table import ModelRoutes, Policy, Route, RoutingTable


def client_bucket(client_id: str | None, rng: random.Random | None = None) -> int:
    """0..99, a pure function of ``client_id``; random when there is none."""
    if not client_id:
        return (rng or random).randrange(100)
    return int(hashlib.sha256(client_id.encode()).hexdigest(), 16) % 100


def weighted_alias(weights: tuple[tuple[str, int], ...], bucket: int) -> str | None:
    """The alias owning ``bucket`` under ``weights`` (percent per alias, summing to 100)."""
    upper = 0
    for alias, weight in weights:
        upper += weight
        if bucket < upper:
            return alias
    return None


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
    model = table.model(model_name)
    if model is None:
        raise RouteError(404, f"model {model_name!r} is not served by this gateway")
    if version is not None:
        route = model.by_version(version)
        if route is None:
            raise RouteError(404, f"version {version} of model {model_name!r} is not served")
        return Decision(route, None)
    if alias is not None:
        pinned = model.routes.get(alias)
        if pinned is None:
            raise RouteError(404, f"alias {alias!r} of model {model_name!r} is not served")
        return Decision(pinned, None)
    route = _weighted_or_default(model, default_alias, client_id, rng)
    return Decision(route, _shadow(model.policy, model, route, rng))


def _weighted_or_default(
    model: ModelRoutes, default_alias: str, client_id: str | None, rng: random.Random | None
) -> Route:
    policy = model.policy
    if policy is not None:
        chosen = weighted_alias(policy.weights, client_bucket(client_id, rng))
        if chosen is not None and chosen in model.routes:
            return model.routes[chosen]
    route = model.routes.get(default_alias)
    if route is None:
        served = ", ".join(sorted(model.routes)) or "none"
        raise RouteError(503, f"model {model.name!r}: alias {default_alias!r} is not served (served aliases: {served})")
    return route


def _shadow(policy: Policy | None, model: ModelRoutes, route: Route, rng: random.Random | None) -> Route | None:
    if policy is None or policy.shadow_alias is None or policy.shadow_alias == route.alias:
        return None
    shadow = model.routes.get(policy.shadow_alias)
    if shadow is None or (rng or random).random() * 100 >= policy.shadow_sample_percent:
        return None
    return shadow
