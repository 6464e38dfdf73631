"""The gateway's routing table (ordering by generation, immutability) and policy (sticky A/B, pins, shadow)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.routing_policy import RouteError, client_bucket, resolve, weighted_alias
from gateway.routing_table import RoutingState, RoutingTable
from schemas.model_ready import ColumnSpec, ModelReadyData, ServingStoppedData, SignatureSummary, TensorSpec
from schemas.routing_updated import RoutingUpdatedData

SIGNATURE = SignatureSummary(
    inputs=[TensorSpec(name="input", datatype="FP64", shape=[2])],
    outputs=[TensorSpec(name="output", datatype="INT64", shape=[1])],
    columns=[ColumnSpec(name="a", type="double"), ColumnSpec(name="b", type="double")],
)


def ready(version: int, generation: int, alias: str = "champion", model: str = "m") -> ModelReadyData:
    return ModelReadyData(
        model_name=model,
        alias=alias,
        version=version,
        triton_model_name=f"{model}--v{version}",
        artifact_sha256="a" * 64,
        flavor="sklearn",
        signature=SIGNATURE,
        generation=generation,
    )


def policy(
    weights: dict[str, int], generation: int, shadow: str | None = None, sample: float = 0.0
) -> RoutingUpdatedData:
    return RoutingUpdatedData(
        model_name="m", weights=weights, shadow_alias=shadow, shadow_sample_percent=sample, generation=generation
    )


def served_version(state: RoutingState, alias: str = "champion") -> int | None:
    model = state.table.model("m")
    route = model.routes.get(alias) if model else None
    return route.version if route else None


def test_newer_generation_swaps_and_reports_the_previous_version() -> None:
    state = RoutingState()
    first = state.apply(ready(1, generation=0))
    change = state.apply(ready(2, generation=1))
    assert first is not None
    assert first.previous_version is None
    assert change is not None
    assert change.kind == "swap"
    assert change.previous_version == 1
    assert served_version(state) == 2


@pytest.mark.parametrize("stale_generation", [0, 1])
def test_stale_or_repeated_generation_never_moves_back(stale_generation: int) -> None:
    state = RoutingState()
    state.apply(ready(1, generation=0))
    state.apply(ready(2, generation=1))
    assert state.apply(ready(1, generation=stale_generation)) is None
    assert served_version(state) == 2


def test_generation_is_per_alias() -> None:
    state = RoutingState()
    state.apply(ready(3, generation=5, alias="champion"))
    assert state.apply(ready(2, generation=1, alias="challenger")) is not None
    assert (served_version(state), served_version(state, "challenger")) == (3, 2)


def test_stopped_alias_is_removed_and_a_stale_ready_cannot_resurrect_it() -> None:
    state = RoutingState()
    state.apply(ready(1, generation=0))
    change = state.apply(ServingStoppedData(model_name="m", alias="champion", generation=1))
    assert change is not None
    assert change.kind == "stop"
    assert change.previous_version == 1
    assert served_version(state) is None
    assert state.apply(ready(1, generation=0)) is None
    assert served_version(state) is None
    state.apply(ready(4, generation=2))
    assert served_version(state) == 4


def test_a_snapshot_held_by_a_request_is_never_modified() -> None:
    state = RoutingState()
    state.apply(ready(1, generation=0))
    held: RoutingTable = state.table
    state.apply(ready(2, generation=1))
    assert held.models["m"].routes["champion"].version == 1
    assert state.table is not held
    with pytest.raises(TypeError):
        held.models["m"].routes["champion"] = held.models["m"].routes["champion"]  # type: ignore[index]


def test_routing_updated_ordering_is_model_level() -> None:
    state = RoutingState()
    assert state.apply(policy({"champion": 50, "challenger": 50}, generation=3)) is not None
    assert state.apply(policy({"champion": 100}, generation=2)) is None
    model = state.table.model("m")
    assert model is not None
    assert model.policy is not None
    assert dict(model.policy.weights) == {"champion": 50, "challenger": 50}


def test_bucket_is_sha256_mod_100_and_random_only_without_client_id() -> None:
    import hashlib

    assert client_bucket("alice") == int(hashlib.sha256(b"alice").hexdigest(), 16) % 100
    assert client_bucket("alice") == client_bucket("alice")
    generators = [random.Random(seed) for seed in range(50)]
    buckets = {client_bucket(None, generator) for generator in generators}
    assert len(buckets) > 10


@pytest.mark.parametrize("weights", [{"champion": 90, "challenger": 10}, {"champion": 50, "challenger": 50}])
def test_ab_split_over_10000_clients_within_two_points_and_sticky(weights: dict[str, int]) -> None:
    state = RoutingState()
    state.apply(ready(1, generation=0, alias="champion"))
    state.apply(ready(2, generation=1, alias="challenger"))
    state.apply(policy(weights, generation=0))
    clients = [f"client-{i}" for i in range(10_000)]
    first = {c: resolve(state.table, "m", default_alias="champion", client_id=c).route.alias for c in clients}
    shares = Counter(first.values())
    for alias, weight in weights.items():
        assert abs(100 * shares[alias] / len(clients) - weight) <= 2, (alias, shares)
    again = {c: resolve(state.table, "m", default_alias="champion", client_id=c).route.alias for c in clients[:500]}
    assert all(first[c] == alias for c, alias in again.items())


def test_weighted_alias_walks_sorted_aliases() -> None:
    weights = (("a", 30), ("b", 70))
    assert [weighted_alias(weights, b) for b in (0, 29, 30, 99)] == ["a", "a", "b", "b"]


def test_pins_and_failures() -> None:
    state = RoutingState()
    state.apply(ready(1, generation=0, alias="champion"))
    state.apply(ready(2, generation=1, alias="challenger"))
    assert resolve(state.table, "m", default_alias="champion", alias="challenger").route.version == 2
    assert resolve(state.table, "m", default_alias="champion", version=1).route.alias == "champion"
    with pytest.raises(RouteError) as unknown:
        resolve(state.table, "nope", default_alias="champion")
    assert unknown.value.status == 404
    with pytest.raises(RouteError) as version:
        resolve(state.table, "m", default_alias="champion", version=9)
    assert version.value.status == 404
    with pytest.raises(RouteError) as no_default:
        resolve(state.table, "m", default_alias="production")
    assert no_default.value.status == 503
    assert "production" in no_default.value.message


def test_a_weighted_alias_that_is_not_served_falls_back_to_the_default() -> None:
    state = RoutingState()
    state.apply(ready(1, generation=0, alias="champion"))
    state.apply(policy({"challenger": 100}, generation=0))
    assert resolve(state.table, "m", default_alias="champion", client_id="x").route.alias == "champion"


def test_shadow_is_sampled_and_never_the_answering_alias() -> None:
    state = RoutingState()
    state.apply(ready(1, generation=0, alias="champion"))
    state.apply(ready(2, generation=1, alias="shadow"))
    state.apply(policy({"champion": 100}, generation=0, shadow="shadow", sample=25.0))
    rng = random.Random(7)
    decisions = [resolve(state.table, "m", default_alias="champion", client_id=str(i), rng=rng) for i in range(4000)]
    copies = sum(d.shadow is not None for d in decisions)
    assert all(d.route.alias == "champion" for d in decisions)
    assert 800 <= copies <= 1200
    pinned = resolve(state.table, "m", default_alias="champion", alias="shadow", rng=rng)
    assert pinned.shadow is None


def test_a_batch_applies_like_one_event_after_another_in_one_snapshot() -> None:
    events: list[ModelReadyData | ServingStoppedData | RoutingUpdatedData] = [
        ready(1, generation=0),
        ready(1, generation=0, model="other"),
        ready(2, generation=1),
        ready(1, generation=0),  # stale
        ready(3, generation=2, alias="challenger"),
        policy({"champion": 50, "challenger": 50}, generation=1),
        ServingStoppedData(model_name="m", alias="challenger", generation=3),
        ready(3, generation=2, alias="challenger"),  # stale after the stop
    ]
    one_by_one = RoutingTable()
    expected_changes = []
    for data in events:
        one_by_one, change = one_by_one.apply(data, now=1.0)
        expected_changes.append(change)
    before = RoutingTable()
    batched, changes = before.apply_all(events, now=1.0)
    assert changes == expected_changes
    assert [change is None for change in changes] == [False, False, False, True, False, False, False, True]
    assert batched == one_by_one
    assert batched.route_count == len(batched.routes()) == 2  # m/champion and other/champion
    assert before.models == {}  # the table a request may hold is untouched


def test_route_count_follows_swaps_and_stops() -> None:
    state = RoutingState()
    state.apply(ready(1, generation=0))
    state.apply(ready(2, generation=1, alias="challenger"))
    state.apply(ready(3, generation=2))  # a swap replaces a route
    assert state.table.route_count == 2
    state.apply(ServingStoppedData(model_name="m", alias="champion", generation=3))
    assert state.table.route_count == len(state.table.routes()) == 1


def test_a_batch_of_stale_events_keeps_the_snapshot() -> None:
    state = RoutingState()
    state.apply(ready(2, generation=1))
    held = state.table
    assert state.apply_all([ready(1, generation=0), ready(1, generation=1)]) == [None, None]
    assert state.table is held


def indexed_routes(table: RoutingTable) -> dict[tuple[str, str], int]:
    indexed = table.by_alias.items()
    return {(model, alias): route.version for alias, routes in indexed for model, route in routes.items()}


def test_the_request_path_indexes_follow_every_swap_stop_and_policy() -> None:
    rng = random.Random(3)
    models, aliases = ["m", "n", "o"], ["champion", "challenger", "shadow"]
    table, generation = RoutingTable(), 0
    for step in range(300):
        held = table
        held_routes, held_weighted = indexed_routes(held), dict(held.weighted)
        generation += 1
        model, alias = rng.choice(models), rng.choice(aliases)
        kind = rng.random()
        data: ModelReadyData | ServingStoppedData | RoutingUpdatedData
        if kind < 0.55:
            data = ready(step + 1, generation, alias=alias, model=model)
        elif kind < 0.8:
            data = ServingStoppedData(model_name=model, alias=alias, generation=generation)
        else:
            split = rng.randrange(101)
            data = RoutingUpdatedData(
                model_name=model,
                weights={"champion": split, "challenger": 100 - split},
                shadow_alias="shadow",
                shadow_sample_percent=10.0,
                generation=generation,
            )
        table, _ = table.apply(data, now=1.0)
        assert indexed_routes(held) == held_routes  # a snapshot a request holds never moves
        assert held.weighted == held_weighted
        expected = {(m.name, a): r.version for m in table.models.values() for a, r in m.routes.items()}
        assert indexed_routes(table) == expected
        assert all(routes for routes in table.by_alias.values())  # no empty alias index is kept
        for name, routes in table.models.items():
            assert table.weighted.get(name) == routes.weighted()
            for bucket in range(100):
                chosen = weighted_alias(routes.policy.weights, bucket) if routes.policy else None
                answering = routes.routes.get(chosen or "champion") or routes.routes.get("champion")
                if answering is None:
                    with pytest.raises(RouteError):
                        resolve(table, name, default_alias="champion", rng=FixedBucket(bucket))
                    continue
                decision = resolve(table, name, default_alias="champion", rng=FixedBucket(bucket))
                assert decision.route is answering
                assert decision.shadow is None  # 0.99 is never under the 10 % sample


class FixedBucket(random.Random):
    """Draws ``bucket`` for the A/B bucket of a request without a client id, and 0.99 for the shadow sample."""

    def __init__(self, bucket: int) -> None:
        super().__init__(0)
        self.bucket = bucket

    def randrange(self, *args: object, **kwargs: object) -> int:
        return self.bucket

    def random(self) -> float:
        return 0.99
