"""Prepared versions: held until their TTL, bounded per model, never pushing out rollback versions, and an
alias moved to one announces it without a load (in-memory fakes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runtime.settings import TritonSettings
from schemas.model_ready import ModelReadyData
from schemas.prepared_version import ModelPreparedData, PrepareRequested, PrepareRequestedData
from schemas.promotion_rejected import ReasonCode
from schemas.promotion_requested import PromotionRequestedData
from tests.event_samples import all_events
from tests.unit.worker.test_promotion_reuse import FakeFleet, FakeRegistry
from tests.unit.worker.test_promotion_service import TOPICS, BatchLoop, FakePromoter, Rec, service
from worker.errors import PermanentFailure
from worker.fleet_repair import models_to_hold
from worker.gateway_view import GatewayView
from worker.promotion import Promoter, StageClock
from worker.registry import ResolvedVersion
from worker.retirement import RetirementPlanner
from worker.serving_state import ServingState
from worker.settings import WorkerSettings
from worker.triton_backend.serving_spec import MARKER_FILE
from worker.triton_naming import triton_model_name

READY: ModelReadyData = next(e for e in all_events() if e.type == "io.modelpromoter.model.ready.v1").data
PREPARED: ModelPreparedData = next(e for e in all_events() if e.type == "io.modelpromoter.model.prepared.v1").data
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def prepared(version: int, *, ttl_s: float = 600, model: str = "iris") -> ModelPreparedData:
    return PREPARED.model_copy(
        update={
            "model_name": model,
            "version": version,
            "triton_model_name": triton_model_name(model, version),
            "expires_at": NOW + timedelta(seconds=ttl_s),
        }
    )


def ready(version: int, generation: int, alias: str = "champion") -> ModelReadyData:
    return READY.model_copy(
        update={
            "model_name": "iris",
            "alias": alias,
            "version": version,
            "triton_model_name": triton_model_name("iris", version),
            "generation": generation,
        }
    )


def test_a_prepared_version_is_held_until_it_expires() -> None:
    state = ServingState()
    state.prepare(prepared(3, ttl_s=600))

    assert triton_model_name("iris", 3) in models_to_hold(state, keep_loaded_versions=1, in_flight=set(), now=NOW)
    later = NOW + timedelta(seconds=601)
    assert triton_model_name("iris", 3) not in models_to_hold(state, keep_loaded_versions=1, in_flight=set(), now=later)


def test_preparations_per_model_are_bounded_the_oldest_is_pushed_out() -> None:
    state = ServingState(max_prepared_per_model=2)
    assert state.prepare(prepared(1)) == []
    assert state.prepare(prepared(2)) == []
    assert state.prepare(prepared(1, model="other")) == [], "another model's preparations do not count"

    pushed_out = state.prepare(prepared(3))

    assert pushed_out == [triton_model_name("iris", 1)]
    assert state.prepared_to_hold(NOW) == {
        triton_model_name("iris", 2),
        triton_model_name("iris", 3),
        triton_model_name("other", 1),
    }


def test_a_prepared_version_never_pushes_a_rollback_version_out() -> None:
    state = ServingState()
    state.apply(ready(1, 0))
    state.apply(ready(2, 1))  # v1 is now the rollback version
    state.prepare(prepared(3))

    held = models_to_hold(state, keep_loaded_versions=2, in_flight=set(), now=NOW)

    assert held == {triton_model_name("iris", v) for v in (1, 2, 3)}


def test_an_alias_taking_a_prepared_version_ends_its_wait_and_its_expiry() -> None:
    state = ServingState()
    state.prepare(prepared(3, ttl_s=1))
    state.apply(ready(3, 0))

    assert state.awaiting_alias == {}
    after_expiry = NOW + timedelta(hours=1)
    assert triton_model_name("iris", 3) in models_to_hold(
        state, keep_loaded_versions=1, in_flight=set(), now=after_expiry
    )


def test_an_expired_preparation_is_retired_at_once_an_unexpired_one_is_not() -> None:
    state = ServingState()
    wall = [NOW]
    plan = RetirementPlanner(state, GatewayView(), keep_loaded_versions=1, grace_s=300, wall_clock=lambda: wall[0])
    state.apply(ready(1, 0))
    state.prepare(prepared(2, ttl_s=60))

    assert plan.due() == []
    wall[0] = NOW + timedelta(seconds=61)
    assert plan.due() == [triton_model_name("iris", 2)], "no gateway routes it: no grace period"
    assert plan.never_served(triton_model_name("iris", 2))
    assert not plan.never_served(triton_model_name("iris", 1))


def _staged(repository: Path, record: ModelPreparedData) -> None:
    (repository / record.triton_model_name).mkdir()
    (repository / record.triton_model_name / MARKER_FILE).write_text(
        json.dumps({"artifact_sha256": record.artifact_sha256})
    )


class CountingRegistry(FakeRegistry):
    async def download(self, *_: Any) -> Path:
        raise AssertionError("a prepared version is never downloaded again")


async def test_an_alias_moved_to_a_prepared_version_announces_it_without_a_load(tmp_path: Path) -> None:
    record = prepared(3)
    _staged(tmp_path, record)
    state = ServingState()
    state.prepare(record)
    fleet = FakeFleet()
    fleet.loaded.append(record.triton_model_name)  # prepared: READY on every endpoint
    registry = CountingRegistry(ResolvedVersion("iris", "champion", 3, "run-3", "models:/iris/3", registry_version=3))
    promoter = Promoter(
        WorkerSettings(replica_id="w-0"),
        TritonSettings(model_repository=tmp_path),
        registry,  # type: ignore[arg-type]
        fleet,  # type: ignore[arg-type]
        state,
    )
    clock = StageClock()

    served = await promoter.promote(
        PromotionRequestedData(model_name="iris", alias="champion", origin="mlflow_webhook", requester="w"),
        "req-9",
        clock,
    )

    assert (served.alias, served.version, served.triton_model_name) == ("champion", 3, record.triton_model_name)
    assert served.signature == record.signature
    assert served.artifact_sha256 == record.artifact_sha256
    assert fleet.loaded == [record.triton_model_name], "no second load"
    assert "load" not in served.stage_seconds
    assert set(served.stage_seconds) == {"resolve", "policy"}


async def test_prepare_returns_a_record_that_expires_after_the_ttl(tmp_path: Path) -> None:
    record = prepared(4)
    _staged(tmp_path, record)
    state = ServingState()
    state.prepare(record)  # staged before (e.g. prepared, then unloaded by a restarted Triton)
    fleet = FakeFleet()
    registry = FakeRegistry(ResolvedVersion("iris", "champion", 4, "run-4", "models:/iris/4"))
    promoter = Promoter(
        WorkerSettings(replica_id="w-0", prepared_ttl_s=120),
        TritonSettings(model_repository=tmp_path),
        registry,  # type: ignore[arg-type]
        fleet,  # type: ignore[arg-type]
        state,
    )
    before = datetime.now(UTC)

    answer = await promoter.prepare(
        PrepareRequestedData(model_name="iris", version=4, origin="cli", requester="alice"), "req-4", StageClock()
    )

    assert isinstance(answer, ModelPreparedData)
    assert (answer.version, answer.triton_model_name, answer.request_event_id) == (4, record.triton_model_name, "req-4")
    assert fleet.loaded == [record.triton_model_name], "loaded where it was not READY"
    assert before + timedelta(seconds=120) <= answer.expires_at <= datetime.now(UTC) + timedelta(seconds=120)


def _prepare_request(version: int, event_id: str) -> bytes:
    data = PrepareRequestedData(model_name="iris-clf", version=version, origin="cli", requester="alice")
    return PrepareRequested(id=event_id, source="/t", subject="iris-clf", data=data).to_json_bytes()


async def test_a_prepare_request_announces_model_prepared_once_and_routes_nothing() -> None:
    promoter = FakePromoter()
    svc, publisher = service(promoter)
    worker = BatchLoop(svc)
    raw = _prepare_request(4, "prep-1")

    await worker.handle([Rec(raw, 0), Rec(raw, 1)])  # and a duplicate

    announced = [json.loads(m[2]) for m in publisher.on(TOPICS.model_ready)]
    assert [e["type"] for e in announced] == ["io.modelpromoter.model.prepared.v1"]
    assert announced[0]["data"]["request_event_id"] == "prep-1"
    assert "alias" not in announced[0]["data"]
    assert "generation" not in announced[0]["data"]
    assert svc.state.routes == {}
    assert set(svc.state.awaiting_alias) == {"iris-clf--v4"}
    assert svc.metrics.promotions.labels("prepared", "")._value.get() == 1


async def test_a_failed_preparation_is_rejected_without_an_alias() -> None:
    failure = PermanentFailure(ReasonCode.MISSING_SIGNATURE, "no signature")
    svc, publisher = service(FakePromoter(failures=[failure]))
    worker = BatchLoop(svc)

    await worker.handle([Rec(_prepare_request(5, "prep-2"), 0)])

    (rejected,) = [json.loads(m[2])["data"] for m in publisher.on(TOPICS.model_rejected)]
    assert (rejected["version"], rejected["reason_code"], rejected.get("alias")) == (5, "missing_signature", None)
    assert publisher.on(TOPICS.model_ready) == []
    assert len(publisher.on(TOPICS.promotion_dlq)) == 1
