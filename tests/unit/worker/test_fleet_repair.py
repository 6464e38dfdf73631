"""What each Triton endpoint should hold, what it lacks, and how the repairer brings it back (in-memory fleet)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.model_ready import ModelReadyData, SignatureSummary
from schemas.promotion_rejected import ReasonCode
from tests.event_samples import all_events
from tests.worker_harness import wait_for
from worker.errors import PermanentFailure, TransientFailure
from worker.fleet_repair import FleetRepairer, missing_models, models_to_hold
from worker.metrics import WorkerMetrics
from worker.model_loads import ModelLoads
from worker.parity import ParityCase
from worker.serving_state import ServingState
from worker.settings import WorkerSettings
from worker.triton_backend.serving_spec import MARKER_FILE

SAMPLE: ModelReadyData = next(e for e in all_events() if e.type == "io.modelpromoter.model.ready.v1").data
ANSWER = np.array([1, 0])


def ready(version: int, generation: int, alias: str = "champion") -> ModelReadyData:
    data: ModelReadyData = SAMPLE.model_copy(
        update={"version": version, "alias": alias, "generation": generation, "triton_model_name": f"iris--v{version}"}
    )
    return data


class FakeEndpoint:
    """A Triton with a repository index; ``up=False`` refuses every call like a dead server."""

    def __init__(self, url: str, loaded: set[str] | None = None) -> None:
        self.url = url
        self.loaded = set(loaded or ())
        self.up = True
        self.loads: list[str] = []
        self.load_error: Exception | None = None
        self.index_error: Exception | None = None  # e.g. Triton refusing the worker's admin token
        self.answer = ANSWER
        self.load_started = asyncio.Event()
        self.release_load: asyncio.Event | None = None

    def _check_up(self) -> None:
        if not self.up:
            raise TransientFailure(f"Triton {self.url} is unreachable (repository index): connection refused")

    async def loaded_models(self) -> dict[str, str]:
        self._check_up()
        if self.index_error is not None:
            raise self.index_error
        return dict.fromkeys(self.loaded, "READY")

    async def is_ready(self, model: str) -> bool:
        self._check_up()
        return model in self.loaded

    async def load(self, model: str) -> None:
        self._check_up()
        self.load_started.set()
        if self.release_load is not None:
            await self.release_load.wait()
        if self.load_error is not None:
            raise self.load_error
        self.loads.append(model)
        self.loaded.add(model)

    async def unload(self, model: str) -> None:
        self.loaded.discard(model)

    async def infer(self, model: str, *_: Any) -> np.ndarray[Any, Any]:
        return self.answer


class FakeFleet:
    def __init__(self, *endpoints: FakeEndpoint) -> None:
        self.endpoints = list(endpoints)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def case(_: Path, __: SignatureSummary) -> ParityCase:
    return ParityCase(tensor=np.zeros((2, 2)), mlflow_input=None, expected=ANSWER, synthetic=False)


def staged(repository: Path, *models: str) -> None:
    for model in models:
        (repository / model).mkdir(parents=True)
        (repository / model / MARKER_FILE).write_text(json.dumps({"artifact_sha256": SAMPLE.artifact_sha256}))


def routed_v3(repository: Path) -> ServingState:
    """A serving state routing iris v3, whose Triton model is staged in ``repository``."""
    state = ServingState()
    state.apply(ready(3, 0))
    staged(repository, "iris--v3")
    return state


def repairer(
    tmp_path: Path, fleet: FakeFleet, state: ServingState, loads: ModelLoads | None = None, keep: int = 1
) -> tuple[FleetRepairer, WorkerMetrics, list[int], Clock]:
    metrics, changes, clock = WorkerMetrics(), [0], Clock()

    def changed() -> None:
        changes[0] += 1

    fixer = FleetRepairer(
        fleet,  # type: ignore[arg-type]
        state,
        loads or ModelLoads(),
        tmp_path,
        WorkerSettings(replica_id="w-0", keep_loaded_versions=keep, fleet_check_interval_s=1.0),
        metrics,
        on_change=changed,
        clock=clock,
        prepare=case,
    )
    return fixer, metrics, changes, clock


async def settled(fixer: FleetRepairer) -> None:
    """Let the repairs started by the last check finish."""
    await asyncio.gather(*list(fixer._repairs.values()))


def state_gauge(metrics: WorkerMetrics, endpoint: str, state: str) -> float | None:
    return metrics.registry.get_sample_value("promoter_fleet_endpoint_state", {"endpoint": endpoint, "state": state})


def repairs(metrics: WorkerMetrics, endpoint: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "promoter_fleet_repairs_total", {"endpoint": endpoint, "outcome": outcome}
    )
    return value or 0.0


def state_of(fixer: FleetRepairer, endpoint: str) -> str:
    return fixer.views[endpoint].state


def test_every_endpoint_holds_the_routed_the_kept_and_the_in_flight_versions() -> None:
    state = ServingState()
    for record in (ready(1, 0), ready(2, 1), ready(3, 2), ready(1, 3, alias="challenger")):
        state.apply(record)
    held = models_to_hold(state, keep_loaded_versions=1, in_flight={"iris--v9"})
    # v3 routed (champion) and newest, v1 routed (challenger), v9 being promoted; v2 is neither
    assert held == {"iris--v3", "iris--v1", "iris--v9"}
    assert models_to_hold(state, keep_loaded_versions=2, in_flight=set()) == {"iris--v3", "iris--v2", "iris--v1"}


def test_a_model_is_missing_unless_ready_or_loading() -> None:
    index = {"a": "READY", "b": "LOADING", "c": "UNAVAILABLE"}
    assert missing_models({"a", "b", "c", "d"}, index) == {"c", "d"}


async def test_an_endpoint_restarted_empty_gets_its_models_back_and_is_in_sync_again(tmp_path: Path) -> None:
    state = routed_v3(tmp_path)
    healthy, restarted = FakeEndpoint("t0:8000", {"iris--v3"}), FakeEndpoint("t1:8000")
    fixer, metrics, changes, _ = repairer(tmp_path, FakeFleet(healthy, restarted), state)

    await fixer.check_once()
    assert state_of(fixer, "t0:8000") == "in_sync"
    assert state_of(fixer, "t1:8000") == "repairing"
    assert fixer.views["t1:8000"].missing == {"iris--v3"}
    assert state_gauge(metrics, "t1:8000", "repairing") == 1
    await settled(fixer)
    assert restarted.loads == ["iris--v3"]
    assert healthy.loads == []
    assert repairs(metrics, "t1:8000", "repaired") == 1

    await fixer.check_once()
    assert state_of(fixer, "t1:8000") == "in_sync"
    assert state_gauge(metrics, "t1:8000", "in_sync") == 1
    assert state_gauge(metrics, "t1:8000", "repairing") == 0
    assert changes[0] >= 2  # told the reporter when it went repairing and when it was in sync again


async def test_a_down_endpoint_is_marked_down_then_repaired_when_it_answers(tmp_path: Path) -> None:
    state = routed_v3(tmp_path)
    endpoint = FakeEndpoint("t1:8000", {"iris--v3"})
    fixer, metrics, _, _ = repairer(tmp_path, FakeFleet(endpoint), state)

    endpoint.up, endpoint.loaded = False, set()
    await fixer.check_once()
    view = fixer.views["t1:8000"]
    assert view.state == "down"
    assert view.error is not None
    assert "unreachable" in view.error
    assert state_gauge(metrics, "t1:8000", "down") == 1

    endpoint.up = True  # restarted with nothing loaded
    await fixer.check_once()
    await settled(fixer)
    assert endpoint.loads == ["iris--v3"]
    await fixer.check_once()
    assert state_of(fixer, "t1:8000") == "in_sync"
    assert fixer.views["t1:8000"].error is None


async def test_an_endpoint_refusing_the_admin_token_is_down_with_the_reason_and_nothing_is_loaded(
    tmp_path: Path,
) -> None:
    state = routed_v3(tmp_path)
    endpoint = FakeEndpoint("t1:8000")
    refusal = (
        "Triton t1:8000 refused a model-repository call (repository index): that API is restricted and this "
        "worker sent no admin header. PROMOTER_TRITON_ADMIN_TOKEN must match ..."
    )
    endpoint.index_error = PermanentFailure(ReasonCode.TRITON_LOAD_FAILED, refusal)
    fixer, metrics, changes, _ = repairer(tmp_path, FakeFleet(endpoint), state)

    for _ in range(3):
        await fixer.check_once()
        await settled(fixer)
    view = fixer.views["t1:8000"]
    assert view.state == "down"
    assert view.error == refusal
    assert state_gauge(metrics, "t1:8000", "down") == 1
    assert endpoint.loads == []  # no load attempted against a Triton that refuses them
    assert repairs(metrics, "t1:8000", "failed") == 0
    assert changes[0] == 1  # reported once, not on every check

    endpoint.index_error = None  # the token fixed: the endpoint is repaired like one that came back
    await fixer.check_once()
    await settled(fixer)
    assert endpoint.loads == ["iris--v3"]


async def test_a_repair_waits_for_a_promotion_loading_the_same_model_and_does_not_load_it_again(
    tmp_path: Path,
) -> None:
    state = routed_v3(tmp_path)
    endpoint = FakeEndpoint("t1:8000")
    loads = ModelLoads()
    fixer, _, _, _ = repairer(tmp_path, FakeFleet(endpoint), state, loads)

    async with loads.exclusive("iris--v3"):  # a promotion loading it right now
        await fixer.check_once()
        await wait_for(lambda: loads.users("iris--v3") == 2, timeout_s=5, what="the repair waits for the lock")
        assert endpoint.loads == []
        assert loads.busy("iris--v3")
        endpoint.loaded.add("iris--v3")  # the promotion's load
    await settled(fixer)
    assert endpoint.loads == []  # seen READY under the lock: no second load
    assert not loads.busy("iris--v3")


async def test_a_model_being_promoted_is_held_and_one_no_longer_wanted_is_not_loaded(tmp_path: Path) -> None:
    state = ServingState()
    staged(tmp_path, "iris--v4")
    endpoint = FakeEndpoint("t1:8000")
    loads = ModelLoads()
    fixer, _, _, _ = repairer(tmp_path, FakeFleet(endpoint), state, loads)

    with loads.promoting("iris--v4"):
        async with loads.exclusive("iris--v4"):
            await fixer.check_once()
            assert fixer.views["t1:8000"].missing == {"iris--v4"}
            await wait_for(lambda: loads.users("iris--v4") == 2, timeout_s=5, what="the repair waits for the lock")
    # the promotion failed and gave up the model before the repair got the lock
    await settled(fixer)
    assert endpoint.loads == []


async def test_a_failed_repair_is_retried_with_backoff_and_counted(tmp_path: Path) -> None:
    state = routed_v3(tmp_path)
    endpoint = FakeEndpoint("t1:8000")
    endpoint.load_error = TransientFailure("Triton t1:8000 failed to load iris--v3: out of memory")
    fixer, metrics, _, clock = repairer(tmp_path, FakeFleet(endpoint), state)

    await fixer.check_once()
    await settled(fixer)
    assert repairs(metrics, "t1:8000", "failed") == 1
    assert fixer.views["t1:8000"].error == "Triton t1:8000 failed to load iris--v3: out of memory"

    await fixer.check_once()  # within the backoff: no second attempt
    await settled(fixer)
    assert repairs(metrics, "t1:8000", "failed") == 1

    clock.now += 2.5  # past the first backoff (2 s)
    endpoint.load_error = None
    await fixer.check_once()
    await settled(fixer)
    assert endpoint.loads == ["iris--v3"]
    assert repairs(metrics, "t1:8000", "repaired") == 1


async def test_a_reloaded_model_that_fails_its_parity_proof_is_unloaded_again(tmp_path: Path) -> None:
    state = routed_v3(tmp_path)
    endpoint = FakeEndpoint("t1:8000")
    endpoint.answer = np.array([2, 2])
    fixer, metrics, _, _ = repairer(tmp_path, FakeFleet(endpoint), state)

    await fixer.check_once()
    await settled(fixer)
    assert endpoint.loads == ["iris--v3"]
    assert "iris--v3" not in endpoint.loaded  # never serves answers that differ from MLflow's
    assert repairs(metrics, "t1:8000", "failed") == 1
    error = fixer.views["t1:8000"].error
    assert error is not None
    assert "t1:8000" in error


async def test_a_model_whose_directory_is_gone_is_not_loaded(tmp_path: Path) -> None:
    state = ServingState()
    state.apply(ready(3, 0))
    endpoint = FakeEndpoint("t1:8000")
    fixer, metrics, _, _ = repairer(tmp_path, FakeFleet(endpoint), state)

    await fixer.check_once()
    await settled(fixer)
    assert endpoint.loads == []
    assert repairs(metrics, "t1:8000", "failed") == 1
    assert fixer.views["t1:8000"].error == f"iris--v3 is not staged in {tmp_path}; it cannot be reloaded"


async def test_a_load_triton_refuses_is_counted_and_the_endpoint_stays_repairing(tmp_path: Path) -> None:
    state = routed_v3(tmp_path)
    endpoint = FakeEndpoint("t1:8000")
    endpoint.load_error = PermanentFailure(
        ReasonCode.TRITON_LOAD_FAILED, "Triton t1:8000 refused to load iris--v3: [400] load failed"
    )
    fixer, metrics, _, _ = repairer(tmp_path, FakeFleet(endpoint), state)

    await fixer.check_once()
    await settled(fixer)
    await fixer.check_once()
    assert state_of(fixer, "t1:8000") == "repairing"
    assert fixer.views["t1:8000"].error == "Triton t1:8000 refused to load iris--v3: [400] load failed"
    assert repairs(metrics, "t1:8000", "failed") == 1


@pytest.mark.parametrize("users", [1, 3])
async def test_load_locks_serialise_and_are_dropped_when_free(users: int) -> None:
    loads = ModelLoads()
    inside: list[int] = []
    done: list[int] = []
    most = [0]

    async def use(n: int) -> None:
        async with loads.exclusive("m"):
            inside.append(n)
            most[0] = max(most[0], len(inside))
            await wait_for(lambda: loads.users("m") == users - len(done), timeout_s=5, what="the others queue up")
            inside.remove(n)
            done.append(n)

    await asyncio.gather(*(use(n) for n in range(users)))
    assert most[0] == 1
    assert not loads.busy("m")
    with loads.promoting("m"), loads.promoting("m"):
        assert loads.in_flight() == {"m"}
    assert loads.in_flight() == set()


async def test_an_endpoint_is_repairing_until_the_reloaded_model_is_proven(tmp_path: Path) -> None:
    state = routed_v3(tmp_path)
    endpoint = FakeEndpoint("t1:8000")
    endpoint.release_load = asyncio.Event()
    fixer, _, _, _ = repairer(tmp_path, FakeFleet(endpoint), state)

    await fixer.check_once()
    await asyncio.wait_for(endpoint.load_started.wait(), 5)
    endpoint.loaded.add("iris--v3")  # READY in Triton's index, not yet proven by the repair
    await fixer.check_once()
    assert state_of(fixer, "t1:8000") == "repairing"
    assert fixer.views["t1:8000"].missing == {"iris--v3"}
    endpoint.release_load.set()
    await settled(fixer)
    await fixer.check_once()
    assert state_of(fixer, "t1:8000") == "in_sync"


async def test_an_unexpected_error_is_counted_and_backed_off_not_retried_every_check(tmp_path: Path) -> None:
    state = routed_v3(tmp_path)
    endpoint = FakeEndpoint("t1:8000")
    endpoint.load_error = KeyError("models")
    fixer, metrics, _, _ = repairer(tmp_path, FakeFleet(endpoint), state)

    await fixer.check_once()
    await settled(fixer)
    await fixer.check_once()
    await settled(fixer)
    assert repairs(metrics, "t1:8000", "failed") == 1
    assert fixer.views["t1:8000"].error == "internal error: KeyError: 'models'"
