"""Work on up to N models of a batch at once; commit each partition only up to its oldest unfinished record.

A batch of promotion requests is split into *lanes*: one per model (the record key, which is also
the partition key), each lane's records strictly in offset order, so one model's requests keep
their order, coalescing and fencing exactly as one after another. At most ``concurrency`` lanes run
at a time. With concurrency 1 the whole batch is one lane in the batch's order: today's behaviour.

Each lane confirms its own published outcomes (worker/service.py ``Outcomes``) and only then
counts its records finished. :class:`OffsetWatermarks` then gives, per partition, the offset to
commit: the oldest unfinished record of that partition (or one past its last record when every
one is finished). A model finishing before an older model of the same partition commits nothing
past the older one, so a crash redoes work, never skips it.

Rebalances (aiokafka revokes every partition of the member before it re-joins):
:meth:`ConcurrentBatches.on_partitions_revoked` marks the partitions revoked, so no lane starts
another record of them, waits for the records in flight to finish and be confirmed, commits their
watermarks and only then lets the re-join go on. The records it abandoned are uncommitted, so
their new owner (or this replica again) fetches them from the committed offset: none lost, none
handled twice. A batch fetched before a revocation and handed over after it keeps only the records
of partitions still assigned: the others are their new owner's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import Protocol, TypeAlias

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from runtime.logging import get_logger
from worker.service import Outcomes, PromotionService, QueuedRecord

log = get_logger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class Consumer(Protocol):
    """What of aiokafka's consumer the batches need: commit and seek offsets, know the assignment."""

    def commit(self, offsets: dict[TopicPartition, int]) -> Awaitable[None]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...


def partition_of(record: Record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


class OffsetWatermarks:
    """Per partition: offsets fetched and not yet finished, and the offset safe to commit."""

    def __init__(self) -> None:
        self._unfinished: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}  # one past the newest record fetched
        self._committed: dict[TopicPartition, int] = {}

    def fetched(self, records: Iterable[Record]) -> None:
        for record in records:
            tp = partition_of(record)
            self._unfinished.setdefault(tp, set()).add(record.offset)
            self._next[tp] = max(self._next.get(tp, 0), record.offset + 1)

    def finished(self, record: Record) -> None:
        self._unfinished.get(partition_of(record), set()).discard(record.offset)

    def watermark(self, tp: TopicPartition) -> int | None:
        """The offset to commit for ``tp``: its oldest unfinished record, else one past its newest."""
        if tp not in self._next:
            return None
        unfinished = self._unfinished[tp]
        return min(unfinished) if unfinished else self._next[tp]

    def to_commit(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The watermarks of ``tps`` that moved since they were last committed."""
        offsets = {tp: mark for tp in tps if (mark := self.watermark(tp)) is not None}
        return {tp: mark for tp, mark in offsets.items() if self._committed.get(tp) != mark}

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """``tps`` are no longer this member's: their next owner starts from the committed offset."""
        for tp in tps:
            self._unfinished.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)


def lanes_of(queued: Sequence[QueuedRecord], concurrency: int) -> list[list[QueuedRecord]]:
    """One lane per model (record key), in offset order; a single lane in the batch's order at concurrency 1."""
    if concurrency == 1:
        return [list(queued)] if queued else []
    lanes: dict[bytes | None, list[QueuedRecord]] = {}
    for item in queued:
        lanes.setdefault(item[0].key, []).append(item)
    return list(lanes.values())


class ConcurrentBatches:
    """Handles the worker's batches with up to ``concurrency`` models at once; the rebalance listener too."""

    def __init__(self, service: PromotionService, concurrency: int) -> None:
        self.service = service
        self.concurrency = concurrency
        self.watermarks = OffsetWatermarks()
        self._slots = asyncio.Semaphore(concurrency)
        self._lanes: list[asyncio.Task[None]] = []  # of the batch under way
        self._revoked: set[TopicPartition] = set()  # of the batch under way: start nothing more of these
        self._consumer: Consumer | None = None

    async def handle(self, records: Sequence[Record], consumer: Consumer) -> None:
        """Work the batch off; on failure, rewind each partition to its watermark (the rest is redelivered)."""
        self._consumer = consumer
        self._revoked = set()
        owned = consumer.assignment()  # a revocation between the fetch and now left these to their new owner
        records = [record for record in records if partition_of(record) in owned]
        self.watermarks.fetched(records)
        try:
            triaged = Outcomes()
            queued = await self.service.triage(records, triaged)
            await self.service.confirm(triaged)  # malformed records' letters: before any offset passes them
            self._lanes = [asyncio.create_task(self._run_lane(lane)) for lane in lanes_of(queued, self.concurrency)]
            await asyncio.gather(*self._lanes)
        except BaseException:
            for lane in self._lanes:
                lane.cancel()
            self._rewind(consumer)
            raise
        finally:
            self._lanes = []

    async def _run_lane(self, lane: list[QueuedRecord]) -> None:
        async with self._slots:
            outcomes = Outcomes()
            done: list[Record] = []
            for record, request in lane:
                if partition_of(record) in self._revoked:
                    continue  # abandoned: uncommitted, so the partition's next owner handles it
                if request is not None:
                    await self.service.handle_request(record, request, outcomes)
                done.append(record)
            await self.service.confirm(outcomes)
            for record in done:
                self.watermarks.finished(record)
            await self._commit({partition_of(record) for record in done} - self._revoked)

    async def _commit(self, tps: set[TopicPartition]) -> None:
        if self._consumer is None:
            return
        offsets = self.watermarks.to_commit(tps & self._consumer.assignment())
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as error:  # the group moved on: the new owner starts from the last commit
            log.warning("offset commit failed; those records will be handled again", error=str(error))
            return
        self.watermarks.committed(offsets)

    def _rewind(self, consumer: Consumer) -> None:
        for tp in consumer.assignment():
            mark = self.watermarks.watermark(tp)
            if mark is not None:
                consumer.seek(tp, mark)
        self.watermarks.forget(consumer.assignment())  # refetched from the watermark, registered again

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before the re-join: start nothing more of ``revoked``, finish what is in flight, commit, forget."""
        self._revoked |= revoked
        running = [lane for lane in self._lanes if not lane.done()]
        if running:
            log.info("partitions revoked: finishing the promotions in flight first", lanes=len(running))
            await asyncio.gather(*running, return_exceptions=True)  # a failing lane fails handle(), not the join
        await self._commit(set(revoked))
        self.watermarks.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


class RevocationListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance listener, handing revocations to :class:`ConcurrentBatches`."""

    def __init__(self, batches: ConcurrentBatches) -> None:
        self.batches = batches

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.batches.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.batches.on_partitions_assigned(assigned)
