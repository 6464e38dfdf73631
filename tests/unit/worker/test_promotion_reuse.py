"""A version whose Triton model is already staged is re-announced as the requested model, alias and version,
whatever the last record naming that Triton model said (in-memory registry and fleet)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.settings import TritonSettings
from schemas.model_ready import ModelReadyData
from schemas.promotion_requested import PromotionRequestedData
from tests.event_samples import all_events
from worker.promotion import Promoter, StageClock
from worker.registry import ResolvedVersion
from worker.serving_state import ServingState
from worker.settings import WorkerSettings
from worker.triton_backend.serving_spec import MARKER_FILE
from worker.triton_naming import triton_model_name

SAMPLE: ModelReadyData = next(e for e in all_events() if e.type == "io.modelpromoter.model.ready.v1").data


class FakeRegistry:
    def __init__(self, resolved: ResolvedVersion) -> None:
        self.resolved = resolved

    async def resolve(self, request: Any, *, on_version: Any = None) -> ResolvedVersion:
        return self.resolved


class FakeFleet:
    endpoints: tuple[()] = ()  # the staged models here need no shared runtime

    def __init__(self) -> None:
        self.loaded: list[str] = []

    async def ready_everywhere(self, name: str) -> bool:
        return name in self.loaded

    async def load_everywhere(self, name: str) -> None:
        self.loaded.append(name)


async def test_reuse_announces_the_requested_model_even_if_another_record_named_its_triton_model(
    tmp_path: Path,
) -> None:
    name = triton_model_name("iris", 2)
    (tmp_path / name).mkdir()
    (tmp_path / name / MARKER_FILE).write_text(json.dumps({"artifact_sha256": SAMPLE.artifact_sha256}))
    state = ServingState()
    # a hand-made record for another registered model, naming the same Triton model, with a higher generation
    state.apply(SAMPLE.model_copy(update={"model_name": "other", "triton_model_name": name, "generation": 40}))
    resolved = ResolvedVersion("iris", "champion", 2, "run-2", "models:/iris/2")
    fleet = FakeFleet()
    promoter = Promoter(
        WorkerSettings(replica_id="w-0"),
        TritonSettings(model_repository=tmp_path),
        FakeRegistry(resolved),  # type: ignore[arg-type]
        fleet,  # type: ignore[arg-type]
        state,
    )
    request = PromotionRequestedData(model_name="iris", alias="champion", origin="cli", requester="on-call")
    ready = await promoter.promote(request, "req-1", StageClock())
    assert (ready.model_name, ready.alias, ready.version, ready.triton_model_name) == ("iris", "champion", 2, name)
    assert ready.generation == 0  # the first decision for "iris", not one after "other"'s
    assert ready.request_event_id == "req-1"
    assert fleet.loaded == [name]
    assert state.apply(ready)  # not mistaken for a stale duplicate
