"""The ordering rule of the serving-state log, and that the worker and the gateways both keep it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.routing_table import RoutingState
from schemas.generations import AliasGenerations
from schemas.model_ready import ModelReadyData, ServingStoppedData
from tests.event_samples import all_events
from worker.serving_state import ServingState

SAMPLE: ModelReadyData = next(e for e in all_events() if e.type == "io.modelpromoter.model.ready.v1").data


def test_a_record_applies_only_above_the_generation_held_for_its_alias() -> None:
    held = AliasGenerations().apply("champion", 3)
    assert held is not None
    assert held.apply("champion", 3) is None, "a repeated generation is stale"
    assert held.apply("champion", 2) is None, "an older one is stale"
    assert held.apply("champion", 4) is not None


def test_another_alias_never_makes_a_record_stale() -> None:
    held = AliasGenerations().apply("champion", 7)
    assert held is not None
    challenger = held.apply("challenger", 2)
    assert challenger is not None
    assert dict(challenger.by_alias) == {"champion": 7, "challenger": 2}
    assert dict(held.by_alias) == {"champion": 7}, "applying returns a new value; the old one is unchanged"


def test_the_next_decision_is_above_every_alias_so_a_rollback_is_never_stale() -> None:
    held = AliasGenerations()
    assert held.next_generation() == 0
    for alias, generation in (("champion", 0), ("challenger", 1), ("champion", 2)):  # v1, v2@challenger, v2
        applied = held.apply(alias, generation)
        assert applied is not None
        held = applied
    rollback = held.next_generation()
    assert rollback == 3
    assert held.apply("champion", rollback) is not None
    assert held.apply("challenger", rollback) is not None


def _ready(alias: str, version: int, generation: int) -> ModelReadyData:
    data: ModelReadyData = SAMPLE.model_copy(
        update={
            "model_name": "m",
            "alias": alias,
            "version": version,
            "triton_model_name": f"m--v{version}",
            "generation": generation,
            "request_event_id": None,
        }
    )
    return data


records = st.lists(
    st.tuples(st.sampled_from(["champion", "challenger"]), st.integers(0, 4), st.integers(0, 12), st.booleans()),
    max_size=25,
)


@given(records)
def test_the_worker_and_a_gateway_serve_the_same_after_any_log(log: list[tuple[str, int, int, bool]]) -> None:
    worker, gateway = ServingState(), RoutingState()
    for alias, version, generation, stop in log:
        record = (
            ServingStoppedData(model_name="m", alias=alias, generation=generation)
            if stop
            else _ready(alias, version, generation)
        )
        assert worker.apply(record) == (gateway.apply(record) is not None)
    model = gateway.table.model("m")
    for alias in ("champion", "challenger"):
        served = worker.served("m", alias)
        route = model.routes.get(alias) if model else None
        assert (served.version if served else None) == (route.version if route else None)
    applied = model.generations if model else AliasGenerations()
    assert worker.next_generation("m") == applied.next_generation()
