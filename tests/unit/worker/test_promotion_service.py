"""Where every record ends: served, re-announced, coalesced, rejected + DLQ, or DLQ (in-memory fakes).

Batches go the app's way (worker/app.py): :class:`ConcurrentBatches` over the service, committing to a fake consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from typing import Any

import pytest
from aiokafka import TopicPartition

from runtime.settings import MLflowSettings, TopicSettings
from schemas.model_ready import ModelReadyData
from schemas.prepared_version import ModelPreparedData
from schemas.promotion_rejected import ReasonCode
from tests.event_samples import all_events, promotion_requested
from tests.unit.worker.test_registry_writeback import FakeRegistry
from worker.concurrent_batches import ConcurrentBatches
from worker.errors import PermanentFailure, TransientFailure
from worker.metrics import WorkerMetrics
from worker.promotion import StageClock
from worker.registry import Registry
from worker.registry_writeback import Decision, RegistryWriteback
from worker.service import PromotionService
from worker.serving_state import ServingState
from worker.settings import WorkerSettings

SAMPLE: ModelReadyData = next(e for e in all_events() if e.type == "io.modelpromoter.model.ready.v1").data
PREPARED: ModelPreparedData = next(e for e in all_events() if e.type == "io.modelpromoter.model.prepared.v1").data
TOPICS = TopicSettings()


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, dict[str, str]]] = []

    async def publish(
        self,
        message: bytes,
        topic: str,
        *,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
        no_confirm: bool = False,
    ) -> Any:
        self.sent.append((topic, key, message, headers or {}))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def on(self, topic: str) -> list[tuple[str, bytes | None, bytes, dict[str, str]]]:
        return [m for m in self.sent if m[0] == topic]


class FakePromoter:
    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.failures = failures or []
        self.calls: list[tuple[str, int | None]] = []

    async def promote(self, request: Any, request_event_id: str, clock: StageClock) -> ModelReadyData:
        self.calls.append((request.alias, request.version))
        with clock.stage("load"):
            if self.failures:
                raise self.failures.pop(0)
        return SAMPLE.model_copy(
            update={
                "alias": request.alias,
                "version": request.version or 1,
                "generation": len(self.calls),
                "request_event_id": request_event_id,
            }
        )

    async def prepare(self, request: Any, request_event_id: str, clock: StageClock) -> ModelPreparedData:
        self.calls.append(("(prepare)", request.version))
        with clock.stage("load"):
            if self.failures:
                raise self.failures.pop(0)
        return PREPARED.model_copy(
            update={
                "version": request.version,
                "triton_model_name": f"iris-clf--v{request.version}",
                "request_event_id": request_event_id,
            }
        )


class Rec:
    def __init__(self, value: bytes, offset: int, key: bytes | None = b"iris-clf") -> None:
        self.value, self.offset, self.key = value, offset, key
        self.topic, self.partition, self.headers = TOPICS.promotion_requested, 0, [("trace", b"t-1")]


async def notify(progress: asyncio.Condition) -> None:
    async with progress:
        progress.notify_all()


class FakeConsumer:
    """What ConcurrentBatches needs of aiokafka's consumer: the assignment, records that arrive while a batch is
    under way (``getmany``), and commits and seeks recorded."""

    def __init__(self, progress: asyncio.Condition | None = None, partitions: int = 1) -> None:
        self.progress = progress
        self.assigned = {TopicPartition(TOPICS.promotion_requested, p) for p in range(partitions)}
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.buffered: list[Rec] = []  # fetched meanwhile: what getmany hands out next
        self.arrived = asyncio.Event()
        self.fetches = 0

    def arrive(self, *records: Rec) -> None:
        self.buffered += records
        self.arrived.set()

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        self.fetches += 1
        if self.progress is not None:
            await notify(self.progress)
        if not self.buffered:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_ms / 1000):
                    await self.arrived.wait()
        taken, self.buffered = self.buffered[:max_records], self.buffered[max_records:]
        if not self.buffered:
            self.arrived.clear()
        fetched: dict[TopicPartition, list[Any]] = {}
        for record in taken:
            fetched.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return fetched

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))
        if self.progress is not None:
            await notify(self.progress)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)


class BatchLoop:
    """The worker app's path for each fetched batch: one ConcurrentBatches over the service, one consumer."""

    def __init__(self, service: PromotionService) -> None:
        self.service = service
        self.consumer = FakeConsumer()
        self.batches = ConcurrentBatches(service, service.settings.concurrency)

    async def handle(self, records: list[Rec]) -> None:
        await self.batches.handle(records, self.consumer)


def service(promoter: FakePromoter, **settings: Any) -> tuple[PromotionService, FakePublisher]:
    publisher = FakePublisher()
    worker = WorkerSettings(replica_id="w-0", backoff_initial_s=0.001, backoff_max_s=0.002, **settings)
    return PromotionService(worker, TOPICS, promoter, ServingState(), publisher, WorkerMetrics()), publisher


async def test_queued_requests_for_one_alias_coalesce_to_the_newest() -> None:
    promoter = FakePromoter()
    svc, publisher = service(promoter)
    worker = BatchLoop(svc)
    batch = [Rec(promotion_requested(version=v).to_json_bytes(), v) for v in (1, 2, 3)]
    batch.append(Rec(promotion_requested(alias="challenger", version=1).to_json_bytes(), 4))

    await worker.handle(batch)

    assert promoter.calls == [("champion", 3), ("challenger", 1)]
    assert [json.loads(m[2])["data"]["version"] for m in publisher.on(TOPICS.model_ready)] == [3, 1]


async def test_a_redelivered_request_whose_answer_is_on_the_log_publishes_nothing_new() -> None:
    promoter = FakePromoter()
    svc, publisher = service(promoter)
    worker = BatchLoop(svc)
    raw = promotion_requested(version=2).to_json_bytes()

    await worker.handle([Rec(raw, 0), Rec(raw, 1)])  # the second copy in the same batch
    await worker.handle([Rec(raw, 2)])  # redelivered after the first batch was confirmed

    assert len(promoter.calls) == 1
    assert len(publisher.on(TOPICS.model_ready)) == 1
    assert svc.metrics.promotions.labels("duplicate", "")._value.get() == 2


class UnconfirmedPublisher(FakePublisher):
    """The broker never acknowledges the next ``failures`` publications."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(self, message: bytes, topic: str, **options: Any) -> Any:
        await super().publish(message, topic, **options)
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures > 0:
            self.failures -= 1
            failed.set_exception(ConnectionError("broker gone before acknowledging"))
        else:
            failed.set_result(None)
        return failed


async def test_a_request_whose_answer_was_never_confirmed_is_re_announced_once_on_redelivery() -> None:
    promoter = FakePromoter()
    publisher = UnconfirmedPublisher(failures=1)
    svc = PromotionService(
        WorkerSettings(replica_id="w-0"), TOPICS, promoter, ServingState(), publisher, WorkerMetrics()
    )
    worker = BatchLoop(svc)
    raw = promotion_requested(version=2).to_json_bytes()

    with pytest.raises(ConnectionError):
        await worker.handle([Rec(raw, 0)])  # the worker nacks: the batch is redelivered
    await worker.handle([Rec(raw, 0)])
    await worker.handle([Rec(raw, 0)])  # and once more, after the re-announcement was confirmed

    assert len(promoter.calls) == 1, "no second copy or load"
    announced = [json.loads(m[2])["data"] for m in publisher.on(TOPICS.model_ready)]
    assert len(announced) == 2
    assert announced[0] == announced[1], "re-announced unchanged"
    partition = TopicPartition(TOPICS.promotion_requested, 0)
    assert worker.consumer.seeks == [(partition, 0)], "rewound to the record whose answer is unconfirmed"
    assert worker.consumer.commits == [{partition: 1}], "committed past it once, after the confirmation"


class ServedAlreadyPromoter(FakePromoter):
    """Resolves every request to what its alias serves now (the Promoter's already-served answer)."""

    def __init__(self, state: ServingState) -> None:
        super().__init__()
        self.state = state

    async def promote(self, request: Any, request_event_id: str, clock: StageClock) -> ModelReadyData:
        served = self.state.served(request.model_name, request.alias)
        if served is None:
            return await super().promote(request, request_event_id, clock)
        self.calls.append((request.alias, request.version))
        return served.model_copy(update={"request_event_id": request_event_id})


@pytest.mark.parametrize(("origin", "answers"), [("mlflow_webhook", 0), ("cli", 1), ("dag", 1)])
async def test_a_request_for_what_is_served_already_is_answered_only_if_somebody_may_wait(
    origin: str, answers: int
) -> None:
    state = ServingState()
    publisher = FakePublisher()
    svc = PromotionService(
        WorkerSettings(replica_id="w-0"), TOPICS, ServedAlreadyPromoter(state), state, publisher, WorkerMetrics()
    )
    worker = BatchLoop(svc)
    await worker.handle([Rec(promotion_requested(version=2).to_json_bytes(), 0)])
    first = json.loads(publisher.on(TOPICS.model_ready)[0][2])["data"]
    again = promotion_requested(origin=origin)  # e.g. the registry reconcile asking for the same drift

    await worker.handle([Rec(again.to_json_bytes(), 1)])
    await worker.handle([Rec(again.to_json_bytes(), 2)])  # and redelivered

    announced = [json.loads(m[2])["data"] for m in publisher.on(TOPICS.model_ready)]
    assert len(announced) == 1 + answers
    if answers:
        assert announced[1] == {**first, "request_event_id": again.id}, "the served record, same generation"
    assert state.served("iris-clf", "champion") == ModelReadyData.model_validate(first)
    assert svc.metrics.promotions.labels("already_served", "")._value.get() == 2 - answers
    assert svc.metrics.promotions.labels("served", "")._value.get() == 1


async def test_a_permanent_failure_is_rejected_and_dead_lettered_with_the_original_bytes() -> None:
    svc, publisher = service(FakePromoter([PermanentFailure(ReasonCode.MISSING_SIGNATURE, "no signature")]))
    worker = BatchLoop(svc)
    raw = promotion_requested(version=5).to_json_bytes()

    await worker.handle([Rec(raw, 7)])

    ((_, key, rejected, _),) = publisher.on(TOPICS.model_rejected)
    assert key == b"iris-clf"
    assert json.loads(rejected)["data"]["reason_code"] == "missing_signature"
    assert json.loads(rejected)["data"]["message"] == "stage load: no signature"
    ((_, dlq_key, letter, headers),) = publisher.on(TOPICS.promotion_dlq)
    assert (dlq_key, letter) == (b"iris-clf", raw)
    assert headers["x-dlq-reason-code"] == "missing_signature"
    assert headers["x-dlq-error-type"] == "permanent"
    assert headers["x-dlq-source-offset"] == "7"
    assert headers["trace"] == "t-1", "the record's own headers are kept"
    assert headers["x-replay-count"] == "0"


async def test_a_redelivered_rejection_adds_no_second_letter_but_a_replayed_letter_is_handled_again() -> None:
    promoter = FakePromoter([PermanentFailure(ReasonCode.MODEL_NOT_FOUND, "no such model")] * 2)
    svc, publisher = service(promoter)
    worker = BatchLoop(svc)
    raw = promotion_requested(version=5).to_json_bytes()

    await worker.handle([Rec(raw, 7), Rec(b"not json", 8)])
    await worker.handle([Rec(raw, 7), Rec(b"not json", 8)])  # offsets not committed: Kafka redelivers
    assert len(publisher.on(TOPICS.model_rejected)) == 1
    assert len(publisher.on(TOPICS.promotion_dlq)) == 2, "one letter per record, not per delivery"
    assert svc.metrics.promotions.labels("duplicate", "")._value.get() == 2

    await worker.handle([Rec(raw, 9)])  # `promoter dlq replay`: the same bytes at a new offset
    assert len(promoter.calls) == 2
    assert len(publisher.on(TOPICS.promotion_dlq)) == 3


async def test_a_rejection_the_broker_never_acknowledged_is_lettered_again_on_redelivery() -> None:
    promoter = FakePromoter([PermanentFailure(ReasonCode.MODEL_NOT_FOUND, "no such model")] * 2)
    publisher = UnconfirmedPublisher(failures=2)  # the rejection and its letter
    svc = PromotionService(
        WorkerSettings(replica_id="w-0"), TOPICS, promoter, ServingState(), publisher, WorkerMetrics()
    )
    worker = BatchLoop(svc)
    raw = promotion_requested(version=5).to_json_bytes()

    with pytest.raises(ConnectionError):
        await worker.handle([Rec(raw, 7)])
    await worker.handle([Rec(raw, 7)])
    await worker.handle([Rec(raw, 7)])  # acknowledged this time: no third letter

    assert len(publisher.on(TOPICS.promotion_dlq)) == 2
    assert len(promoter.calls) == 2


async def test_transient_failures_are_retried_then_dead_lettered() -> None:
    promoter = FakePromoter([TransientFailure("Triton 127.0.0.1:1 is unreachable")] * 3)
    svc, publisher = service(promoter, max_attempts=3)
    worker = BatchLoop(svc)

    await worker.handle([Rec(promotion_requested(version=1).to_json_bytes(), 0)])

    assert len(promoter.calls) == 3
    ((_, _, _, headers),) = publisher.on(TOPICS.promotion_dlq)
    assert headers["x-dlq-reason-code"] == "retries_exhausted"
    assert headers["x-dlq-attempts"] == "3"
    assert "gave up after 3 attempts at stage load: Triton 127.0.0.1:1 is unreachable" in headers["x-dlq-reason"]


async def test_a_transient_failure_that_recovers_is_served() -> None:
    promoter = FakePromoter([TransientFailure("MLflow 503")])
    svc, publisher = service(promoter, max_attempts=3)
    worker = BatchLoop(svc)

    await worker.handle([Rec(promotion_requested(version=1).to_json_bytes(), 0)])

    assert len(publisher.on(TOPICS.model_ready)) == 1
    assert publisher.on(TOPICS.promotion_dlq) == []


class BuggyMlflowClient:
    """An MlflowClient call that hits a bug in our code (or MLflow's) instead of answering."""

    def __init__(self) -> None:
        self.calls = 0

    def get_registered_model(self, name: str) -> Any:
        self.calls += 1
        return name + 1  # type: ignore[operator]


class ResolvingPromoter(FakePromoter):
    """Runs the real registry stage before promoting."""

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.registry = registry

    async def promote(self, request: Any, request_event_id: str, clock: StageClock) -> ModelReadyData:
        with clock.stage("resolve"):
            await self.registry.resolve(request)
        return await super().promote(request, request_event_id, clock)


@pytest.mark.usefixtures("mlflow_client_env")
async def test_a_bug_in_a_stage_is_rejected_at_once_as_internal_error_not_retried() -> None:
    client = BuggyMlflowClient()
    registry = Registry(MLflowSettings(tracking_uri="http://127.0.0.1:9"), client=client)  # type: ignore[arg-type]
    svc, publisher = service(ResolvingPromoter(registry), max_attempts=5)
    worker = BatchLoop(svc)

    await worker.handle([Rec(promotion_requested(version=1).to_json_bytes(), 0)])

    assert client.calls == 1, "a bug is not retried"
    assert publisher.on(TOPICS.model_ready) == []
    ((_, _, rejected, _),) = publisher.on(TOPICS.model_rejected)
    assert json.loads(rejected)["data"]["reason_code"] == "internal_error"
    ((_, _, _, headers),) = publisher.on(TOPICS.promotion_dlq)
    assert headers["x-dlq-reason-code"] == "internal_error"
    assert headers["x-dlq-attempts"] == "1"
    assert headers["x-dlq-reason"] == (
        'internal error at stage resolve: TypeError: can only concatenate str (not "int") to str'
    )


@pytest.mark.parametrize("raw", [b"{", b'{"type": "io.modelpromoter.promotion.requested.v1"}'])
async def test_malformed_records_go_to_the_dlq_and_the_batch_goes_on(raw: bytes) -> None:
    promoter = FakePromoter()
    svc, publisher = service(promoter)
    worker = BatchLoop(svc)

    await worker.handle([Rec(raw, 0, key=None), Rec(promotion_requested().to_json_bytes(), 1)])

    ((_, key, letter, headers),) = publisher.on(TOPICS.promotion_dlq)
    assert (key, letter) == (None, raw)
    assert headers["x-dlq-error-type"] == "malformed"
    assert "x-dlq-event-id" not in headers
    assert len(publisher.on(TOPICS.model_ready)) == 1


async def test_unserve_stops_a_served_alias_with_a_greater_generation() -> None:
    svc, publisher = service(FakePromoter())
    worker = BatchLoop(svc)
    await worker.handle([Rec(promotion_requested(version=1).to_json_bytes(), 0)])

    await worker.handle([Rec(promotion_requested(action="unserve").to_json_bytes(), 1)])

    ready, stopped = (json.loads(m[2]) for m in publisher.on(TOPICS.model_ready))
    assert stopped["type"] == "io.modelpromoter.serving.stopped.v1"
    assert stopped["data"]["generation"] > ready["data"]["generation"]
    assert svc.state.served("iris-clf", "champion") is None


async def test_unserving_an_alias_that_is_not_served_still_answers() -> None:
    svc, publisher = service(FakePromoter())
    worker = BatchLoop(svc)

    await worker.handle([Rec(promotion_requested(alias="ghost", action="unserve").to_json_bytes(), 0)])

    (stopped,) = (json.loads(m[2]) for m in publisher.on(TOPICS.model_ready))
    assert stopped["type"] == "io.modelpromoter.serving.stopped.v1"
    assert stopped["data"]["alias"] == "ghost"


class RecordingWriteback(RegistryWriteback):
    """Counts what the publisher had sent whenever decisions are handed over (none: the triage's own confirm)."""

    def __init__(self, publisher: FakePublisher) -> None:
        super().__init__(FakeRegistry(), WorkerMetrics())
        self.publisher = publisher
        self.sent_at_submit: list[int] = []

    def submit(self, decisions: Iterable[Decision]) -> None:
        decisions = list(decisions)
        if decisions:
            self.sent_at_submit.append(len(self.publisher.sent))
        super().submit(decisions)


async def test_decisions_are_handed_to_the_write_back_after_the_batch_is_published() -> None:
    promoter = FakePromoter([PermanentFailure(ReasonCode.MISSING_SIGNATURE, "no signature")])
    svc, publisher = service(promoter)
    worker = BatchLoop(svc)
    wb = RecordingWriteback(publisher)
    svc.writeback = wb

    await worker.handle([Rec(promotion_requested(version=2).to_json_bytes(), 0)])  # rejected
    await worker.handle([Rec(promotion_requested(version=1).to_json_bytes(), 1)])  # served
    await worker.handle([Rec(promotion_requested(action="unserve").to_json_bytes(), 2)])

    assert wb.sent_at_submit == [2, 3, 4]  # rejection + DLQ, then model.ready, then the stop: all sent first
    status = {key: tags.tags["promoter.status"] for key, tags in wb.pending.versions.items()}
    assert status == {("iris-clf", "2"): "rejected", ("iris-clf", "1"): "retired"}
    assert [(c.alias, c.version) for c in wb.pending.history["iris-clf"]] == [("champion", 1), ("champion", None)]
