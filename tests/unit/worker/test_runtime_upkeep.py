"""The shared runtime's upkeep: preloaded on every endpoint without failing the worker; old runtimes removed safely."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from schemas.promotion_rejected import ReasonCode
from worker.errors import PermanentFailure, TransientFailure
from worker.model_loads import ModelLoads
from worker.runtime_upkeep import preload_runtime, remove_unused_runtimes, unused_old_runtimes
from worker.shared_runtime import RUNTIME_MODEL, RUNTIME_PREFIX
from worker.staging import VERSION_DIR, recorded_digest
from worker.triton_backend.serving_spec import MARKER_FILE, SERVING_SPEC_FILE, ServingSpec

OLD_USED = f"{RUNTIME_PREFIX}0123456789ab"
OLD_UNUSED = f"{RUNTIME_PREFIX}ba9876543210"
OLD_STAGING = f"{RUNTIME_PREFIX}feedfeedfeed"


class Endpoint:
    """A Triton endpoint: what is loaded, what was asked; ``failure`` raised by every load and unload."""

    def __init__(self, url: str, loaded: set[str] | None = None, failure: Exception | None = None) -> None:
        self.url = url
        self.loaded = set(loaded or ())
        self.failure = failure
        self.loads: list[str] = []
        self.unloads: list[str] = []

    async def is_ready(self, model: str) -> bool:
        if isinstance(self.failure, TransientFailure):
            raise self.failure
        return model in self.loaded

    async def load(self, model: str) -> None:
        self.loads.append(model)
        if self.failure is not None:
            raise self.failure
        self.loaded.add(model)

    async def unload(self, model: str) -> None:
        self.unloads.append(model)
        if self.failure is not None:
            raise self.failure
        self.loaded.discard(model)


class Fleet:
    def __init__(self, *endpoints: Endpoint) -> None:
        self.endpoints = list(endpoints)

    async def unload_everywhere(self, model: str) -> None:
        for endpoint in self.endpoints:
            await endpoint.unload(model)


def _runtime_dir(repository: Path, name: str) -> Path:
    (repository / name / VERSION_DIR).mkdir(parents=True)
    (repository / name / MARKER_FILE).write_text(json.dumps({"runtime": True, "artifact_sha256": "d" * 64}))
    return repository / name


def _version_dir(repository: Path, name: str, runtime: str) -> None:
    spec = ServingSpec(
        loader="sklearn", input="input", output="output", model_file="model.skops", runtime_model=runtime
    )
    (repository / name / VERSION_DIR).mkdir(parents=True)
    (repository / name / VERSION_DIR / SERVING_SPEC_FILE).write_text(spec.to_json())


async def _preload(repository: Path, *endpoints: Endpoint, loads: ModelLoads | None = None) -> None:
    await preload_runtime(
        list(endpoints),  # type: ignore[arg-type]
        repository,
        loads or ModelLoads(),
        None,
        max_attempts=3,
        backoff_initial_s=0.001,
        backoff_max_s=0.001,
    )


async def test_preload_stages_the_runtime_and_loads_it_where_it_is_missing(tmp_path: Path) -> None:
    empty, holding = Endpoint("empty"), Endpoint("holding", loaded={RUNTIME_MODEL})
    await _preload(tmp_path, empty, holding)
    assert recorded_digest(tmp_path / RUNTIME_MODEL) is not None, "staged into the repository"
    assert empty.loads == [RUNTIME_MODEL]
    assert holding.loads == [], "already READY there: not loaded again"


@pytest.mark.parametrize(
    ("failure", "attempts", "said"),
    [
        (TransientFailure("Triton down is unreachable: connection refused"), 3, "gave up preloading"),
        (PermanentFailure(ReasonCode.TRITON_LOAD_FAILED, "refused to load: no python backend"), 1, "does not load"),
    ],
)
async def test_a_failing_triton_does_not_stop_the_preload_elsewhere_nor_raise(
    tmp_path: Path, failure: Exception, attempts: int, said: str
) -> None:
    broken, healthy = Endpoint("down", failure=failure), Endpoint("healthy")
    with capture_logs() as logs:
        await _preload(tmp_path, broken, healthy)
    assert healthy.loaded == {RUNTIME_MODEL}
    expected_loads = attempts if isinstance(failure, PermanentFailure) else 0  # down: its readiness check fails first
    assert len(broken.loads) == expected_loads
    (line,) = [line for line in logs if said in line["event"]]
    assert line["endpoint"] == "down"


async def test_preload_holds_the_runtimes_load_lock(tmp_path: Path) -> None:
    """A promotion's load_runtime_first waits on the same lock, so the runtime is never loaded twice at once."""
    loads = ModelLoads()
    seen: list[bool] = []

    class Watching(Endpoint):
        async def load(self, model: str) -> None:
            seen.append(loads.busy(model))
            await super().load(model)

    await _preload(tmp_path, Watching("triton"), loads=loads)
    assert seen == [True]
    assert not loads.busy(RUNTIME_MODEL), "released afterwards"


def _repository_with_old_runtimes(repository: Path) -> None:
    for runtime in (RUNTIME_MODEL, OLD_USED, OLD_UNUSED, OLD_STAGING):
        _runtime_dir(repository, runtime)
    _version_dir(repository, "iris--0a1b2c3d--v1", OLD_USED)  # a version of an older release, still staged
    _version_dir(repository, "iris--0a1b2c3d--v2", RUNTIME_MODEL)
    _version_dir(repository, ".staging-0123456789ab.iris--0a1b2c3d--v3-x1y2", OLD_STAGING)  # being staged now
    (repository / ".promoter-leases").mkdir()


def test_only_old_runtimes_no_model_directory_names_are_unused(tmp_path: Path) -> None:
    _repository_with_old_runtimes(tmp_path)
    assert unused_old_runtimes(tmp_path) == [OLD_UNUSED]
    assert unused_old_runtimes(tmp_path / "missing") == []


async def test_an_unused_old_runtime_is_unloaded_everywhere_then_removed(tmp_path: Path) -> None:
    _repository_with_old_runtimes(tmp_path)
    loaded = {RUNTIME_MODEL, OLD_USED, OLD_UNUSED}
    first, second = Endpoint("first", loaded=loaded), Endpoint("second", loaded=loaded)
    fleet: Any = Fleet(first, second)
    assert await remove_unused_runtimes(fleet, tmp_path, ModelLoads(), None) == [OLD_UNUSED]
    assert not (tmp_path / OLD_UNUSED).exists()
    for kept in (RUNTIME_MODEL, OLD_USED, OLD_STAGING):
        assert (tmp_path / kept).is_dir(), f"{kept} is kept"
    assert first.unloads == second.unloads == [OLD_UNUSED]
    assert first.loaded == second.loaded == {RUNTIME_MODEL, OLD_USED}


async def test_an_old_runtime_whose_unload_fails_is_kept_for_the_next_sweep(tmp_path: Path) -> None:
    _repository_with_old_runtimes(tmp_path)
    fleet: Any = Fleet(Endpoint("down", failure=TransientFailure("Triton down failed unload of it")))
    assert await remove_unused_runtimes(fleet, tmp_path, ModelLoads(), None) == []
    assert (tmp_path / OLD_UNUSED).is_dir()
