from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from schemas.gateway_status import (
    GatewayHeartbeat,
    GatewayHeartbeatData,
    GatewaySwapAcked,
    GatewaySwapAckedData,
    ServedRoute,
)
from schemas.model_ready import ModelReadyData
from tests.event_samples import all_events
from worker.gateway_view import GatewayView
from worker.metrics import WorkerMetrics
from worker.retirement import RetirementPlanner, Retirer
from worker.serving_state import ServingState

SAMPLE = next(e for e in all_events() if e.type == "io.modelpromoter.model.ready.v1").data


class Clock:
    """Monotonic seconds for the planner, and the same moments in UTC for the gateway view."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._start = datetime.now(UTC)

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return self._start + timedelta(seconds=self.now - 1000.0)


class Record:
    def __init__(self, value: bytes) -> None:
        self.value = value
        self.offset = 0


def ready(version: int, generation: int, alias: str = "champion") -> ModelReadyData:
    data: ModelReadyData = SAMPLE.model_copy(
        update={
            "version": version,
            "alias": alias,
            "generation": generation,
            "triton_model_name": f"iris--v{version}",
            "request_event_id": f"req-{generation}",
        }
    )
    return data


def heartbeat(gateway: str, *versions: int, interval_s: float = 5.0) -> Any:
    routes = [
        ServedRoute(model_name="iris-clf", alias=f"a{v}", version=v, triton_model_name=f"iris--v{v}", generation=1)
        for v in versions
    ]
    event = GatewayHeartbeat(
        source="/t",
        data=GatewayHeartbeatData(
            gateway_id=gateway, ready=True, started_at=datetime.now(UTC), interval_s=interval_s, routes=routes
        ),
    )
    return Record(event.to_json_bytes())


def ack(gateway: str, version: int) -> Any:
    route = ServedRoute(
        model_name="iris-clf", alias="champion", version=version, triton_model_name=f"iris--v{version}", generation=1
    )
    return Record(
        GatewaySwapAcked(source="/t", data=GatewaySwapAckedData(gateway_id=gateway, route=route)).to_json_bytes()
    )


def planner(keep: int = 1, grace_s: float = 60.0) -> tuple[RetirementPlanner, GatewayView, ServingState, Clock]:
    clock = Clock()
    state = ServingState()
    gateways = GatewayView(clock.utc)
    return (
        RetirementPlanner(state, gateways, keep_loaded_versions=keep, grace_s=grace_s, clock=clock),
        gateways,
        state,
        clock,
    )


def test_served_and_newest_versions_are_kept() -> None:
    plan, _, state, _ = planner(keep=2)
    for generation, version in enumerate((1, 2, 3)):
        state.apply(ready(version, generation))

    assert plan.due() == ["iris--v1"]  # v3 served, v2 kept for rollback


def test_an_old_version_a_promotion_is_loading_again_is_not_retired_under_it() -> None:
    plan, _, state, _ = planner(keep=1)
    for generation, version in enumerate((1, 2, 3)):
        state.apply(ready(version, generation))

    with plan.loads.promoting("iris--v1"):  # a rollback to v1 is loading and proving it
        assert plan.due() == ["iris--v2"]
    assert sorted(plan.due()) == ["iris--v1", "iris--v2"]


def test_a_live_gateway_still_routing_the_old_version_holds_it_until_it_acks() -> None:
    plan, gateways, state, clock = planner()
    state.apply(ready(1, 0))
    gateways.apply(ack("gw-1", 1))
    state.apply(ready(2, 1))

    assert plan.due() == []
    clock.now += 2
    gateways.apply(ack("gw-1", 2))
    assert plan.due() == ["iris--v1"]


def test_a_silent_gateway_stops_pinning_and_grace_ends_waiting() -> None:
    plan, gateways, state, clock = planner(grace_s=60)
    state.apply(ready(1, 0))
    gateways.apply(heartbeat("gw-1", 1, interval_s=5))
    gateways.apply(heartbeat("gw-2", 1, interval_s=100))
    state.apply(ready(2, 1))

    assert plan.due() == []
    clock.now += 16  # gw-1 silent for > 3 intervals, gw-2 still live
    assert plan.due() == []
    clock.now += 45  # grace passed since v1 stopped being served
    assert plan.due() == ["iris--v1"]


def test_retired_models_are_not_retired_twice_but_a_rollback_revives_them() -> None:
    plan, _, state, _ = planner()
    state.apply(ready(1, 0))
    state.apply(ready(2, 1))
    (victim,) = plan.due()
    plan.mark_retired(victim)

    assert plan.due() == []
    state.apply(ready(1, 2))  # alias pointed back at v1, re-staged and served
    assert plan.due() == []  # v1 served, v2 the newest version: kept to roll forward again
    assert "iris--v1" not in plan.retired


def test_unreadable_status_records_are_ignored() -> None:
    _, gateways, _, _ = planner()
    gateways.apply(Record(b"garbage"))
    assert gateways.gateways == {}


class FakeFleet:
    """Unloads succeed, except for the models in ``broken`` (an unexpected error, not a Triton answer)."""

    def __init__(self, *broken: str) -> None:
        self.broken = set(broken)
        self.unloaded: list[str] = []

    async def unload_everywhere(self, model: str) -> None:
        if model in self.broken:
            raise RuntimeError(f"bug while unloading {model}")
        self.unloaded.append(model)


def retirer(plan: RetirementPlanner, fleet: FakeFleet, repository: Path) -> tuple[Retirer, WorkerMetrics]:
    metrics = WorkerMetrics()
    return Retirer(plan, fleet, repository, metrics), metrics  # type: ignore[arg-type]


async def test_an_unexpected_error_is_logged_and_counted_and_the_other_models_still_retire(tmp_path: Path) -> None:
    plan, _, state, _ = planner()
    for generation, version in enumerate((1, 2, 3)):
        state.apply(ready(version, generation))
    fleet = FakeFleet("iris--v1")
    sweep, metrics = retirer(plan, fleet, tmp_path)

    with capture_logs() as logs:
        retired = await sweep.run_once()

    assert retired == ["iris--v2"]
    assert fleet.unloaded == ["iris--v2"]
    assert metrics.retirement_errors._value.get() == 1
    assert metrics.retirements._value.get() == 1
    (failure,) = [line for line in logs if line["log_level"] == "error"]
    assert failure["triton_model"] == "iris--v1"
    assert failure["exc_info"] is True, "logged with the exception"
    assert "iris--v1" in plan.due(), "not marked retired: the next sweep tries again"


async def test_a_failing_sweep_never_stops_the_loop(tmp_path: Path) -> None:
    plan, _, _, _ = planner()

    def broken_plan() -> list[str]:
        raise KeyError("iris--v9")

    plan.due = broken_plan  # type: ignore[method-assign]
    sweep, metrics = retirer(plan, FakeFleet(), tmp_path)
    loop = asyncio.create_task(sweep.run_forever(interval_s=0.01))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while metrics.retirement_errors._value.get() < 3:
            assert not loop.done(), "the sweep loop died"
            assert asyncio.get_running_loop().time() < deadline, "three sweeps did not run within 10 s"
            await asyncio.sleep(0.01)  # poll
    finally:
        loop.cancel()
        with suppress(asyncio.CancelledError):
            await loop


async def test_a_nudge_sweeps_at_once_rather_than_at_the_next_interval(tmp_path: Path) -> None:
    """After each batch the consumer nudges the loop instead of sweeping itself, so the next request is not held up."""
    plan, _, state, _ = planner()
    fleet = FakeFleet()
    sweep, _ = retirer(plan, fleet, tmp_path)
    sweeps = 0
    due = plan.due

    def counted() -> list[str]:
        nonlocal sweeps
        sweeps += 1
        return due()

    plan.due = counted  # type: ignore[method-assign]
    loop = asyncio.create_task(sweep.run_forever(interval_s=3600))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while sweeps < 1:  # the first sweep runs at start
            assert asyncio.get_running_loop().time() < deadline, "the first sweep did not run within 10 s"
            await asyncio.sleep(0.01)  # poll
        for generation, version in enumerate((1, 2, 3)):
            state.apply(ready(version, generation))
        sweep.nudge()
        while not fleet.unloaded:  # an hour before the next periodic sweep
            assert asyncio.get_running_loop().time() < deadline, "the nudged sweep did not run within 10 s"
            await asyncio.sleep(0.01)  # poll
        assert sweeps == 2
        assert "iris--v1" in fleet.unloaded
    finally:
        loop.cancel()
        with suppress(asyncio.CancelledError):
            await loop
