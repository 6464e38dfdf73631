"""Several models at once: per-model order, commits up to the oldest unfinished record, rebalances (fakes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import TopicPartition

from schemas.model_ready import ModelReady, ModelReadyData
from schemas.prepared_version import ModelPreparedData
from tests.event_samples import promotion_requested
from tests.unit.worker.test_promotion_service import SAMPLE, TOPICS, FakeConsumer, FakePublisher, Rec, notify
from worker.concurrent_batches import CATCH_UP_TIMEOUT_S, ConcurrentBatches, OffsetWatermarks, lanes_of
from worker.metrics import WorkerMetrics
from worker.promotion import StageClock
from worker.service import Outcomes, PromotionService
from worker.serving_state import ServingState
from worker.settings import WorkerSettings

TP0 = TopicPartition(TOPICS.promotion_requested, 0)
DEADLINE_S = 5.0


class GatedPromoter:
    """Promotes any model; a promotion of a model in ``gates`` waits until its gate is opened, and the first
    ``together`` promotions each wait until all of them have started (so only promotions run at once pass)."""

    def __init__(self, gated: tuple[str, ...] = (), *, together: int = 1) -> None:
        self.together = together
        self.progress = asyncio.Condition()  # notified at every start, finish and commit
        self.gates = {model: asyncio.Event() for model in gated}
        self.started: list[tuple[str, int | None]] = []
        self.finished: list[tuple[str, int | None]] = []
        self.running = 0
        self.most_running = 0

    async def promote(self, request: Any, request_event_id: str, clock: StageClock) -> ModelReadyData:
        self.started.append((request.model_name, request.version))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        await notify(self.progress)
        try:
            with clock.stage("load"):
                if request.model_name in self.gates:
                    await self.gates[request.model_name].wait()
                async with asyncio.timeout(DEADLINE_S), self.progress:
                    await self.progress.wait_for(lambda: len(self.started) >= self.together)
        finally:
            self.running -= 1
        self.finished.append((request.model_name, request.version))
        await notify(self.progress)
        return SAMPLE.model_copy(
            update={
                "model_name": request.model_name,
                "alias": request.alias,
                "version": request.version,
                "triton_model_name": f"{request.model_name}--v{request.version}",
                "generation": len(self.started),
                "request_event_id": request_event_id,
            }
        )

    async def prepare(self, request: Any, request_event_id: str, clock: StageClock) -> ModelPreparedData:
        raise AssertionError("not used here")


def request(model: str, version: int, offset: int, alias: str = "champion", partition: int = 0) -> Rec:
    record = Rec(promotion_requested(model_name=model, alias=alias, version=version).to_json_bytes(), offset)
    record.key, record.partition = model.encode(), partition
    return record


def batches(promoter: GatedPromoter, concurrency: int) -> tuple[ConcurrentBatches, FakePublisher]:
    publisher = FakePublisher()
    settings = WorkerSettings(replica_id="w-0", concurrency=concurrency)
    service = PromotionService(settings, TOPICS, promoter, ServingState(), publisher, WorkerMetrics())
    return ConcurrentBatches(service, concurrency), publisher


def served(publisher: FakePublisher) -> list[tuple[str, int]]:
    records = [json.loads(m[2])["data"] for m in publisher.on(TOPICS.model_ready)]
    return [(r["model_name"], r["version"]) for r in records]


async def until(progress: asyncio.Condition, condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE_S), progress:
        await progress.wait_for(condition)


def test_watermark_is_the_oldest_unfinished_record_of_each_partition() -> None:
    marks = OffsetWatermarks()
    records = [request("a", 1, 10), request("b", 1, 11), request("c", 1, 12), request("d", 1, 3, partition=1)]
    marks.fetched(records)
    tp1 = TopicPartition(TOPICS.promotion_requested, 1)

    marks.finished(records[2])  # out of order: the newest of partition 0 first
    marks.finished(records[1])
    assert marks.to_commit({TP0, tp1}) == {TP0: 10, tp1: 3}
    marks.committed({TP0: 10, tp1: 3})
    assert marks.to_commit({TP0, tp1}) == {}  # nothing moved

    marks.finished(records[0])
    assert marks.to_commit({TP0}) == {TP0: 13}


async def test_models_run_at_once_and_each_models_requests_keep_their_order() -> None:
    promoter = GatedPromoter(together=3)  # a, b and c's first promotions must all be running at once
    handler, publisher = batches(promoter, concurrency=3)
    batch = [request(model, version, offset) for offset, (model, version) in enumerate([("a", 1), ("b", 1), ("c", 1)])]
    batch += [request(m, 2, 3 + i, alias="challenger") for i, m in enumerate("abc")]
    batch += [request(m, 3, 6 + i, alias="shadow") for i, m in enumerate("abc")]
    consumer = FakeConsumer()

    await handler.handle(batch, consumer)

    assert promoter.most_running == 3, "three models promoted at once"
    for model in "abc":
        assert [v for m, v in promoter.finished if m == model] == [1, 2, 3]
        assert [v for m, v in served(publisher) if m == model] == [1, 2, 3]
    assert consumer.commits[-1] == {TP0: 9}


async def test_concurrency_one_is_one_request_after_another_in_the_batch_order() -> None:
    promoter = GatedPromoter()
    handler, _ = batches(promoter, concurrency=1)
    batch = [request(m, v, offset) for offset, (m, v) in enumerate([("a", 1), ("b", 1), ("a", 2), ("c", 1)])]
    batch[2] = request("a", 2, 2, alias="challenger")
    consumer = FakeConsumer()

    await handler.handle(batch, consumer)

    assert promoter.most_running == 1
    assert promoter.started == [("a", 1), ("b", 1), ("a", 2), ("c", 1)]
    assert consumer.commits == [{TP0: 4}]  # once, after every outcome was confirmed


def test_lanes_are_per_model_in_offset_order() -> None:
    batch = [request(m, v, offset) for offset, (m, v) in enumerate([("a", 1), ("b", 1), ("a", 2)])]
    queued = [(record, None) for record in batch]
    assert [[r.offset for r, _ in lane] for lane in lanes_of(queued, 4)] == [[0, 2], [1]]
    assert [[r.offset for r, _ in lane] for lane in lanes_of(queued, 1)] == [[0, 1, 2]]


async def test_a_model_finishing_first_commits_nothing_past_an_older_unfinished_one() -> None:
    promoter = GatedPromoter(gated=("slow",))
    handler, _ = batches(promoter, concurrency=2)
    consumer = FakeConsumer(promoter.progress)
    work = asyncio.create_task(handler.handle([request("slow", 1, 0), request("fast", 1, 1)], consumer))

    await until(promoter.progress, lambda: ("fast", 1) in promoter.finished and bool(consumer.commits))
    assert consumer.commits == [{TP0: 0}], "the slow model's record is still unfinished"

    promoter.gates["slow"].set()
    await work
    assert consumer.commits == [{TP0: 0}, {TP0: 2}]


async def test_a_revocation_finishes_the_promotions_in_flight_commits_them_and_abandons_the_rest() -> None:
    promoter = GatedPromoter(gated=("a", "b"))
    handler, publisher = batches(promoter, concurrency=2)
    consumer = FakeConsumer()
    batch = [request(m, 1, offset) for offset, m in enumerate("abcd")]
    work = asyncio.create_task(handler.handle(batch, consumer))
    await until(promoter.progress, lambda: len(promoter.started) == 2)  # a and b in flight, c and d queued

    revoking = asyncio.create_task(handler.on_partitions_revoked({TP0}))
    promoter.gates["a"].set()
    await until(promoter.progress, lambda: ("a", 1) in promoter.finished)
    assert not revoking.done(), "the re-join waits for the promotions in flight"
    promoter.gates["b"].set()
    await revoking
    await work

    assert served(publisher) == [("a", 1), ("b", 1)], "in flight: finished and announced once"
    assert promoter.started == [("a", 1), ("b", 1)], "queued: left to the partition's next owner"
    assert consumer.commits == [{TP0: 2}], "committed up to the first abandoned record, before the re-join"


async def test_a_batch_of_a_partition_revoked_before_it_was_handled_is_left_to_the_new_owner() -> None:
    promoter = GatedPromoter()
    handler, publisher = batches(promoter, concurrency=3)
    consumer = FakeConsumer(partitions=2)
    fetched = [request("a", 1, 0, partition=0), request("b", 1, 0, partition=1)]
    consumer.assigned.discard(TP0)  # revoked (and handed to another member) after the fetch
    await handler.on_partitions_revoked({TP0})

    await handler.handle(fetched, consumer)

    assert promoter.started == [("b", 1)], "the revoked partition's record is the new owner's"
    assert served(publisher) == [("b", 1)]
    assert consumer.commits == [{TopicPartition(TOPICS.promotion_requested, 1): 1}]


async def test_a_failed_confirmation_commits_nothing_and_rewinds_to_the_watermark() -> None:
    promoter = GatedPromoter()
    handler, publisher = batches(promoter, concurrency=2)
    consumer = FakeConsumer()
    confirm = handler.service.confirm

    async def broker_gone(outcomes: Outcomes) -> None:
        if outcomes.confirmations:
            raise ConnectionError("broker gone")
        await confirm(outcomes)

    handler.service.confirm = broker_gone  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await handler.handle([request("a", 1, 0), request("b", 1, 1)], consumer)

    assert served(publisher) == [("a", 1), ("b", 1)], "published, never confirmed"
    assert consumer.commits == []
    assert consumer.seeks == [(TP0, 0)], "both are fetched again"


async def test_records_fetched_while_a_slot_is_free_join_the_batch_under_way() -> None:
    promoter = GatedPromoter(gated=("slow", "a"))
    handler, publisher = batches(promoter, concurrency=3)
    consumer = FakeConsumer(promoter.progress)
    work = asyncio.create_task(handler.handle([request("slow", 1, 0)], consumer))  # a batch of one record
    await until(promoter.progress, lambda: promoter.started == [("slow", 1)])

    consumer.arrive(request("a", 1, 1), request("b", 1, 2))
    await until(promoter.progress, lambda: ("b", 1) in promoter.finished)
    assert ("slow", 1) not in promoter.finished, "b was promoted while the first batch's promotion ran"
    consumer.arrive(request("a", 2, 3, alias="challenger"))  # joins a's lane: after a v1, never beside it
    await until(promoter.progress, lambda: consumer.fetches >= 3)  # the third fetch took it
    assert promoter.started == [("slow", 1), ("a", 1), ("b", 1)]

    promoter.gates["a"].set()
    await until(promoter.progress, lambda: ("a", 2) in promoter.finished)
    assert consumer.commits[-1] == {TP0: 0}, "nothing past the slow model's unfinished record"
    promoter.gates["slow"].set()
    await work

    assert [v for m, v in served(publisher) if m == "a"] == [1, 2]
    assert consumer.commits[-1] == {TP0: 4}


async def test_concurrency_one_takes_no_records_into_the_batch_under_way() -> None:
    promoter = GatedPromoter(gated=("a",))
    handler, _ = batches(promoter, concurrency=1)
    consumer = FakeConsumer(promoter.progress)
    work = asyncio.create_task(handler.handle([request("a", 1, 0)], consumer))
    await until(promoter.progress, lambda: promoter.started == [("a", 1)])
    consumer.arrive(request("b", 1, 1))
    promoter.gates["a"].set()
    await work

    assert consumer.fetches == 0, "b is the next batch's"
    assert promoter.started == [("a", 1)]
    assert consumer.commits == [{TP0: 1}]


async def test_a_revocation_ends_the_batch_under_way_and_later_records_are_the_next_batchs() -> None:
    promoter = GatedPromoter(gated=("a",))
    handler, publisher = batches(promoter, concurrency=2)
    consumer = FakeConsumer(promoter.progress)
    work = asyncio.create_task(handler.handle([request("a", 1, 0), request("b", 1, 1)], consumer))
    await until(promoter.progress, lambda: ("b", 1) in promoter.finished)

    revoking = asyncio.create_task(handler.on_partitions_revoked({TP0}))
    promoter.gates["a"].set()
    await revoking
    await handler.on_partitions_assigned({TP0})  # the same partition again, from its committed offset
    await work
    consumer.arrive(request("c", 1, 2))
    await handler.handle(list(consumer.buffered), consumer)  # the next batch

    assert served(publisher) == [("b", 1), ("a", 1), ("c", 1)], "each once"
    assert consumer.commits[-2:] == [{TP0: 2}, {TP0: 3}], "at the revocation, then after c"


async def test_after_an_assignment_nothing_is_handled_before_the_serving_state_log_is_read_to_its_end() -> None:
    promoter = GatedPromoter()
    reading, log_read = asyncio.Event(), asyncio.Event()
    reads: list[float] = []

    async def catch_up(timeout_s: float) -> None:
        reads.append(timeout_s)
        reading.set()
        await log_read.wait()

    unread, publisher = batches(promoter, concurrency=2)
    handler = ConcurrentBatches(unread.service, 2, catch_up=catch_up)
    consumer = FakeConsumer()
    await handler.handle([request("a", 1, 0)], consumer)
    assert reads == [], "no assignment since the worker's start-up replay: nothing to read first"

    await handler.on_partitions_assigned({TP0})  # taken over from another replica, say
    work = asyncio.create_task(handler.handle([request("b", 1, 1)], consumer))
    await asyncio.wait_for(reading.wait(), DEADLINE_S)
    assert promoter.started == [("a", 1)], "b waits for the log: its answer may be there already"
    log_read.set()
    await work
    await handler.handle([request("c", 1, 2)], consumer)

    assert promoter.started == [("a", 1), ("b", 1), ("c", 1)]
    assert served(publisher) == [("a", 1), ("b", 1), ("c", 1)]
    assert reads == [CATCH_UP_TIMEOUT_S], "read once per assignment, not once per batch"


async def test_an_answer_from_another_replica_arriving_during_the_promotion_is_not_decided_again() -> None:
    promoter = GatedPromoter(gated=("a",))
    handler, publisher = batches(promoter, concurrency=2)
    record = request("a", 1, 0)
    work = asyncio.create_task(handler.handle([record], FakeConsumer()))
    await until(promoter.progress, lambda: promoter.started == [("a", 1)])

    # The replica this partition was taken from (evicted, its commit lost) answered the same request meanwhile.
    theirs = SAMPLE.model_copy(
        update={
            "model_name": "a",
            "version": 1,
            "triton_model_name": "a--v1",
            "generation": 1,
            "request_event_id": json.loads(record.value)["id"],
        }
    )
    handler.service.apply_log_record(Rec(ModelReady(source="other", subject="a", data=theirs).to_json_bytes(), 0))
    promoter.gates["a"].set()
    await work

    assert publisher.on(TOPICS.model_ready) == [], "answered once, by the other replica: no second decision"
