"""Work on up to N models of a batch at once; commit each partition only up to its oldest unfinished record.

A batch of promotion requests is split into *lanes*: one per model (the record key, which is also
the partition key), each lane's records strictly in offset order, so one model's requests keep
their order, coalescing and fencing exactly as one after another. At most ``concurrency`` lanes run
at a time. With concurrency 1 the whole batch is one lane in the batch's order: today's behaviour.

No barrier between batches: while a slot is free with no lane waiting for it, the handler also
waits for records arriving meanwhile (the consumer's ``getmany``) and works them into the batch
under way: a model whose lane still takes records gets them appended to that lane (its order
kept), another model gets a new lane. Before, the slots idled at the end of every batch while the
next one waited in the consumer's buffer (50 models requested at once: the first batch held one
record, so three slots idled through that whole promotion, the shared runtime's load included).

Each lane confirms its own published outcomes (worker/service.py ``Outcomes``) and only then
counts its records finished. :class:`OffsetWatermarks` then gives, per partition, the offset to
commit: the oldest unfinished record of that partition (or one past its last record when every
one is finished). A model finishing before an older model of the same partition commits nothing
past the older one, so a crash redoes work, never skips it.

Rebalances (aiokafka revokes every partition of the member before it re-joins):
:meth:`ConcurrentBatches.on_partitions_revoked` marks the partitions revoked, so no lane starts
another record of them, waits for every lane to finish (records in flight confirmed, the others
skipped), commits their watermarks and only then lets the re-join go on. The records it abandoned
are uncommitted, so their new owner (or this replica again) fetches them from the committed
offset: none lost, none handled twice. A batch fetched before a revocation and handed over after
it keeps only the records of partitions still assigned: the others are their new owner's. Records
taken into the batch under way after the re-join belong to the new assignment (aiokafka hands out
none across a reassignment), so a partition assigned again is no longer treated as revoked.

After an assignment, nothing is handled before the serving-state log is read to its end (``catch_up``):
a partition taken over from another replica may hold requests that replica answered without committing
them (it was evicted from the group, say), and a request is known answered only from the log. Read too
late, the answer arrived in the middle of the second promotion, which then announced a second decision
(a newer generation of the same version) for the same request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol, TypeAlias

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from runtime.logging import get_logger
from worker.service import Outcomes, PromotionService, QueuedRecord

log = get_logger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]

Fetch: TypeAlias = "asyncio.Task[dict[TopicPartition, list[Record]]]"

#: How long one fetch of records for a free slot waits (then, lanes still running, another is made).
TOP_UP_WAIT_MS = 500

#: How long handling waits, after an assignment, for the serving-state log to be read to its end.
CATCH_UP_TIMEOUT_S = 30.0


class Consumer(Protocol):
    """What of aiokafka's consumer the batches need: commit and seek offsets, know the assignment."""

    def commit(self, offsets: dict[TopicPartition, int]) -> Awaitable[None]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Awaitable[dict[TopicPartition, list[Record]]]: ...


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

    def tracks(self, tp: TopicPartition) -> bool:
        """True while ``tp`` has records fetched by this member and not forgotten (revoked)."""
        return tp in self._next

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

    def __init__(
        self,
        service: PromotionService,
        concurrency: int,
        *,
        max_records: int = 100,
        catch_up: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.service = service
        self.concurrency = concurrency
        self.max_records = max_records  # taken into the batch under way at a time
        self.watermarks = OffsetWatermarks()
        self._slots = asyncio.Semaphore(concurrency)
        self._lanes: list[asyncio.Task[None]] = []  # of the batch under way
        self._open: dict[bytes | None, list[QueuedRecord]] = {}  # model key -> its lane's records, while it takes more
        self._revoked: set[TopicPartition] = set()  # of the batch under way: start nothing more of these
        self._consumer: Consumer | None = None
        self._catch_up = catch_up  # reads the serving-state log to its end within a timeout
        self._assigned_since_catch_up = False

    async def handle(self, records: Sequence[Record], consumer: Consumer) -> None:
        """Work the batch off (and what was fetched meanwhile); on failure, rewind each partition to its watermark."""
        self._consumer = consumer
        self._revoked = set()
        owned = consumer.assignment()  # a revocation between the fetch and now left these to their new owner
        try:
            await self._take([record for record in records if partition_of(record) in owned])
            while running := [lane for lane in self._lanes if not lane.done()]:
                fetch = self._fetch_if_room(consumer, len(running))
                try:
                    await asyncio.wait([*running, *fetch], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in fetch:
                        waiting.cancel()  # no-op once done; a stopped fetch took no records
                for lane in self._lanes:
                    if lane.done():
                        lane.result()  # a failed lane fails the batch
                self._lanes = [lane for lane in self._lanes if not lane.done()]
                for fetching in fetch:
                    await self._take_fetched(fetching, consumer)
        except BaseException:
            for lane in self._lanes:
                lane.cancel()
            self._rewind(consumer)
            raise
        finally:
            self._lanes = []
            self._open = {}

    def _fetch_if_room(self, consumer: Consumer, running: int) -> list[Fetch]:
        """While a slot is free and no lane waits for it: a fetch of the records arriving meanwhile."""
        if self.concurrency == 1 or running >= self.concurrency:
            return []
        fetch = consumer.getmany(timeout_ms=TOP_UP_WAIT_MS, max_records=self.max_records)
        return [asyncio.ensure_future(fetch)]

    async def _take_fetched(self, fetch: Fetch, consumer: Consumer) -> None:
        """Take the records of ``fetch`` (done or stopped) into the batch under way.

        aiokafka drains its buffer without awaiting anything once records are there, so a fetch
        stopped while it waited has taken none: none is lost.
        """
        await asyncio.wait([fetch])  # a stopped fetch: until it has wound down
        if fetch.cancelled():
            return
        owned = consumer.assignment()
        records = [record for tp, batch in fetch.result().items() if tp in owned for record in batch]
        if records:
            log.debug("records taken into the batch under way", records=len(records))
            await self._take(records)

    async def _take(self, records: list[Record]) -> None:
        """Register, triage and dispatch ``records``: onto the open lane of their model, or a new lane."""
        self.watermarks.fetched(records)
        await self._read_log_after_assignment()
        triaged = Outcomes()
        queued = await self.service.triage(records, triaged)
        await self.service.confirm(triaged)  # malformed records' letters: before any offset passes them
        # A partition revoked meanwhile was forgotten: its records are fetched again by its next owner.
        queued = [item for item in queued if self.watermarks.tracks(partition_of(item[0]))]
        for lane in lanes_of(queued, self.concurrency):
            key = lane[0][0].key
            if self.concurrency > 1 and key in self._open:
                self._open[key].extend(lane)  # after the model's earlier records, before its lane ends
                continue
            if self.concurrency > 1:
                self._open[key] = lane
            self._lanes.append(asyncio.create_task(self._run_lane(key, lane)))

    async def _run_lane(self, key: bytes | None, lane: list[QueuedRecord]) -> None:
        async with self._slots:
            outcomes = Outcomes()
            done: list[Record] = []
            index = 0
            while index < len(lane):  # records taken into the batch meanwhile are appended to ``lane``
                record, request = lane[index]
                index += 1
                if partition_of(record) in self._revoked:
                    continue  # abandoned: uncommitted, so the partition's next owner handles it
                if request is not None:
                    await self.service.handle_request(record, request, outcomes)
                done.append(record)
            if self._open.get(key) is lane:  # no await since the loop ended: nothing was appended unseen
                del self._open[key]
            await self.service.confirm(outcomes)
            for record in done:
                self.watermarks.finished(record)
            await self._commit({partition_of(record) for record in done} - self._revoked)

    async def _read_log_after_assignment(self) -> None:
        """Once after each assignment, before a record is handled: the serving-state log read to its end."""
        if self._catch_up is None or not self._assigned_since_catch_up:
            return
        self._assigned_since_catch_up = False  # an assignment during the wait asks for another
        try:
            await self._catch_up(CATCH_UP_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "serving-state log not read to its end after an assignment; handling the requests anyway",
                timeout_s=CATCH_UP_TIMEOUT_S,
            )

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
        while running:  # lanes dispatched meanwhile (records taken just before the revocation) too
            await asyncio.gather(*running, return_exceptions=True)  # a failing lane fails handle(), not the join
            running = [lane for lane in self._lanes if not lane.done()]
        await self._commit(set(revoked))
        self.watermarks.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Every lane finished at the revocation: records of these partitions fetched from now on are this
        # member's again (aiokafka hands out none fetched before the reassignment).
        self._revoked -= assigned
        self._assigned_since_catch_up = True
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


class RevocationListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance listener, handing revocations to :class:`ConcurrentBatches`."""

    def __init__(self, batches: ConcurrentBatches) -> None:
        self.batches = batches

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.batches.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.batches.on_partitions_assigned(assigned)
