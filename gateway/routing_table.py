"""The routing table: an immutable snapshot of what this replica serves, rebuilt from the log only.

:class:`RoutingTable` is never mutated. :meth:`RoutingTable.apply` returns a new table (and what
changed); :class:`RoutingState` swaps its ``table`` attribute in one assignment, so a request that
resolved its route from one snapshot finishes on that version whatever arrives meanwhile.

Ordering: a ``model.ready`` or ``serving.stopped`` follows the rule of :mod:`schemas.generations`
(the worker keeps the same): applied only when its generation is greater than the one held for that
(model, alias), a stopped alias keeping its generation as a tombstone. A ``routing.updated`` is
applied only when its generation is greater than the model's policy generation.

Besides the model index, a table keeps two indexes built at apply time for the request path
(:mod:`gateway.routing_policy`): the route of every (alias, model), and each A/B policy compiled against
the model's routes. A decision then follows a short chain of objects whatever the number of models
(a cache miss per link is what a large table costs).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from schemas.generations import AliasGenerations
from schemas.model_ready import ModelReadyData, ServingStoppedData
from schemas.routing_updated import RoutingUpdatedData


@dataclass(frozen=True, slots=True)
class Route:
    """One served (model, alias): the exact version and Triton model answering it."""

    model_name: str
    alias: str
    version: int
    triton_model_name: str
    generation: int
    ready: ModelReadyData
    since: float  # unix time this replica applied it


_NO_ROUTES: Mapping[str, Route] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Policy:
    """A/B weights across aliases (percent, summing to 100) and the shadow target."""

    weights: tuple[tuple[str, int], ...]  # sorted by alias: the bucket walk is deterministic
    shadow_alias: str | None
    shadow_sample_percent: float
    generation: int


@dataclass(frozen=True, slots=True)
class WeightedRoutes:
    """A model's A/B policy compiled against its routes: the weighted aliases (sorted) own the buckets below their
    ``uppers`` (cumulative, a tuple shared by every policy of the same split) and answer with their ``routes``
    (None where the alias is not served); ``shadow`` is the shadow alias's route (None: none, or not served)."""

    uppers: tuple[int, ...]
    routes: tuple[Route | None, ...]
    shadow: Route | None
    shadow_sample_percent: float


@functools.lru_cache(maxsize=256)
def upper_buckets(weights: tuple[int, ...]) -> tuple[int, ...]:
    """The cumulative upper bucket of each weight: one tuple per distinct split, shared by the models using it."""
    return tuple(itertools.accumulate(weights))


@dataclass(frozen=True, slots=True)
class ModelRoutes:
    """Everything known about one registered model."""

    name: str
    routes: Mapping[str, Route] = field(default_factory=lambda: MappingProxyType({}))
    generations: AliasGenerations = field(default_factory=AliasGenerations)
    policy: Policy | None = None

    def by_version(self, version: int) -> Route | None:
        return next((route for route in self.routes.values() if route.version == version), None)

    def weighted(self) -> WeightedRoutes | None:
        """The policy compiled against the routes (None without a policy)."""
        policy = self.policy
        if policy is None:
            return None
        uppers = upper_buckets(tuple(weight for _, weight in policy.weights))
        routes = tuple(self.routes.get(alias) for alias, _ in policy.weights)
        shadow = self.routes.get(policy.shadow_alias) if policy.shadow_alias else None
        return WeightedRoutes(uppers, routes, shadow, policy.shadow_sample_percent)


@dataclass(frozen=True, slots=True)
class Change:
    """What one applied event changed (for acks, metrics and logs)."""

    kind: str  # "swap", "stop" or "policy"
    model_name: str
    alias: str | None = None
    route: Route | None = None
    previous_version: int | None = None


@dataclass(frozen=True, slots=True)
class RoutingTable:
    models: Mapping[str, ModelRoutes] = field(default_factory=lambda: MappingProxyType({}))
    route_count: int = 0  # routes over all models, kept by apply_all (a gauge per swap must not walk them all)
    by_alias: Mapping[str, Mapping[str, Route]] = field(default_factory=dict)  # alias -> model -> route
    weighted: Mapping[str, WeightedRoutes] = field(default_factory=dict)  # model -> its compiled A/B policy

    def model(self, name: str) -> ModelRoutes | None:
        return self.models.get(name)

    def route(self, model_name: str, alias: str) -> Route | None:
        return self.by_alias.get(alias, _NO_ROUTES).get(model_name)

    def routes(self) -> list[Route]:
        return [route for model in self.models.values() for route in model.routes.values()]

    def apply(
        self, data: ModelReadyData | ServingStoppedData | RoutingUpdatedData, now: float | None = None
    ) -> tuple[RoutingTable, Change | None]:
        """The table after ``data`` and what changed; ``(self, None)`` when the event is stale."""
        table, (change,) = self.apply_all([data], now)
        return table, change

    def apply_all(
        self, events: Sequence[ModelReadyData | ServingStoppedData | RoutingUpdatedData], now: float | None = None
    ) -> tuple[RoutingTable, list[Change | None]]:
        """The table after ``events`` in order, and what each changed (None: stale), copying the model index once:
        a replay of n records costs O(n), where applying them one by one copied it n times."""
        models: dict[str, ModelRoutes] | None = None
        before: dict[str, ModelRoutes] = {}  # each changed model as this table holds it
        route_count = self.route_count
        changes: list[Change | None] = []
        for data in events:
            current = (models if models is not None else self.models).get(data.model_name)
            model = current or ModelRoutes(name=data.model_name)
            applied = _applied(model, data, now)
            if applied is None:
                changes.append(None)
                continue
            if models is None:
                models = dict(self.models)
            before.setdefault(data.model_name, model)
            models[data.model_name], change = applied
            route_count += len(models[data.model_name].routes) - len(model.routes)
            changes.append(change)
        if models is None:
            return self, changes
        by_alias, weighted = self._indexes(models, before)
        return RoutingTable(MappingProxyType(models), route_count, by_alias, weighted), changes

    def _indexes(
        self, models: Mapping[str, ModelRoutes], before: Mapping[str, ModelRoutes]
    ) -> tuple[dict[str, Mapping[str, Route]], dict[str, WeightedRoutes]]:
        """This table's request-path indexes updated for the ``before`` models, now ``models[name]`` (an alias's
        index is copied once, on its first change)."""
        by_alias: dict[str, Mapping[str, Route]] = dict(self.by_alias)
        copied: dict[str, dict[str, Route]] = {}

        def writable(alias: str) -> dict[str, Route]:
            if alias not in copied:
                copied[alias] = dict(by_alias.get(alias, _NO_ROUTES))
                by_alias[alias] = copied[alias]
            return copied[alias]

        weighted = dict(self.weighted)
        for name, old in before.items():
            new = models[name]
            for alias in old.routes.keys() - new.routes.keys():
                del writable(alias)[name]
            for alias, route in new.routes.items():
                if old.routes.get(alias) is not route:
                    writable(alias)[name] = route
            compiled = new.weighted()
            if compiled is None:
                weighted.pop(name, None)
            else:
                weighted[name] = compiled
        for alias in [alias for alias, routes in copied.items() if not routes]:
            del by_alias[alias]
        return by_alias, weighted


def _applied(
    model: ModelRoutes, data: ModelReadyData | ServingStoppedData | RoutingUpdatedData, now: float | None
) -> tuple[ModelRoutes, Change] | None:
    """``model`` after ``data`` and what changed; None when the event is stale."""
    if isinstance(data, RoutingUpdatedData):
        if model.policy is not None and data.generation <= model.policy.generation:
            return None
        policy = Policy(
            weights=tuple(sorted(data.weights.items())),
            shadow_alias=data.shadow_alias,
            shadow_sample_percent=data.shadow_sample_percent if data.shadow_alias else 0.0,
            generation=data.generation,
        )
        return replace(model, policy=policy), Change("policy", data.model_name)
    generations = model.generations.apply(data.alias, data.generation)
    if generations is None:
        return None
    previous = model.routes.get(data.alias)
    previous_version = previous.version if previous else None
    if isinstance(data, ServingStoppedData):
        routes = {alias: route for alias, route in model.routes.items() if alias != data.alias}
        updated = replace(model, routes=MappingProxyType(routes), generations=generations)
        return updated, Change("stop", data.model_name, data.alias, None, previous_version)
    route = Route(
        model_name=data.model_name,
        alias=data.alias,
        version=data.version,
        triton_model_name=data.triton_model_name,
        generation=data.generation,
        ready=data,
        since=time.time() if now is None else now,
    )
    updated = replace(model, routes=MappingProxyType({**model.routes, data.alias: route}), generations=generations)
    return updated, Change("swap", data.model_name, data.alias, route, previous_version)


class RoutingState:
    """Holds the current snapshot; the only writer is the log follower (one task). ``listeners`` are told what
    each published snapshot changed (the native gRPC front's feed: ``gateway.grpc_front``)."""

    def __init__(self) -> None:
        self.table = RoutingTable()
        self.listeners: list[Callable[[Sequence[Change | None]], None]] = []

    def apply(self, data: ModelReadyData | ServingStoppedData | RoutingUpdatedData) -> Change | None:
        table, change = self.table.apply(data)
        self.table = table  # one assignment: readers see the old snapshot or the new one
        self._told([change])
        return change

    def apply_all(
        self, events: Sequence[ModelReadyData | ServingStoppedData | RoutingUpdatedData]
    ) -> list[Change | None]:
        """Every event in order, published as one new snapshot (readers never see part of them)."""
        table, changes = self.table.apply_all(events)
        self.table = table
        self._told(changes)
        return changes

    def _told(self, changes: Sequence[Change | None]) -> None:
        for listener in self.listeners:
            listener(changes)
