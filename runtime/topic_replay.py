"""Replay topics from their beginning, say when caught up, then keep following them.

Gateways and workers rebuild their state this way (no consumer group: every reader sees every
record). "Caught up" means every partition's position reached the end offset seen at start and then one
fetch came back empty within a short window (``CONFIRM_WINDOW_MS``): the second condition guards
against brokers (tansu) whose end offsets under-report after multi-record batches. The window is
short on purpose: waiting for the consumer's whole long poll (``fetch_max_wait_ms``, 500 ms) for
that empty fetch was the largest part of a gateway's replay of 2,000 records.

Once caught up, :meth:`TopicReplayer.catch_up` waits until the records on the topics *now* are handled
too: a worker given another replica's partitions first reads that replica's last answers. It asks for
the end offsets on a connection of its own: a broker answers one request of a connection at a time, so
on the fetching consumer's connection the question waited behind the long poll in flight (a worker's
first promotion after an assignment started up to ``fetch_max_wait_ms``, 500 ms, late).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from runtime.kafka_clients import assign_from_start
from runtime.logging import get_logger
from runtime.settings import KafkaSettings

log = get_logger(__name__)

RecordHandler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None] | None]
BatchHandler = Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[None] | None]

#: How long the fetch that confirms the end may wait for more records once every end offset is reached.
CONFIRM_WINDOW_MS = 20


class TopicReplayer:
    """Reads ``topics`` from offset 0 and calls ``handler`` for each record, in partition order (or
    ``batch_handler`` with each partition's fetched records at once, for readers that apply many cheaper
    together). ``catches_up``: :meth:`catch_up` will be called (a worker's replay), so :meth:`start` opens its
    connection too."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: list[str],
        handler: RecordHandler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        catches_up: bool = False,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("TopicReplayer takes either a handler or a batch_handler")
        self._kafka = kafka
        self._topics = topics
        self._handler = handler
        self._batch_handler = batch_handler
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()
        self.records_seen = 0
        self._partitions: list[TopicPartition] = []
        self._handled: dict[TopicPartition, int] = {}  # per partition: the position once its records are handled
        self._progress = asyncio.Event()  # set (and replaced) after every fetch handled
        self._catches_up = catches_up  # start() opens catch_up's own connection (a worker's replay)
        self._offsets_reader: AIOKafkaConsumer | None = None  # asks for end offsets only (catch_up), never fetches

    async def start(self) -> None:
        consumer = await self._started_consumer()
        self._consumer = consumer
        partitions = await assign_from_start(consumer, self._topics)
        missing = sorted(set(self._topics) - {tp.topic for tp in partitions})
        if missing:
            raise RuntimeError(f"topics {missing} do not exist: create them before starting")
        self._partitions = list(partitions)
        targets = await consumer.end_offsets(partitions)
        if self._catches_up:  # connected and the partitions' leaders known before the first assignment needs them
            self._offsets_reader = await self._started_consumer()
            await self._offsets_reader.end_offsets(self._partitions)
        self._task = asyncio.create_task(self._run(consumer, targets), name=f"replay {','.join(self._topics)}")

    async def _run(self, consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> None:
        reached = await _at_ends(consumer, targets)  # every position is at its end offset seen at start
        while True:
            confirming = reached and not self.caught_up.is_set()
            wait_ms = self._kafka.fetch_max_wait_ms
            batches = await consumer.getmany(timeout_ms=min(CONFIRM_WINDOW_MS, wait_ms) if confirming else wait_ms)
            for records in batches.values():
                await self._deliver(records)
            # Positions past what was handed out (and handled), compacted gaps and empty partitions too.
            self._handled = {tp: await consumer.position(tp) for tp in self._partitions}
            self._progress.set()
            self._progress = asyncio.Event()
            if self.caught_up.is_set():
                continue
            if confirming and not batches:
                log.info("replay caught up", topics=self._topics, records=self.records_seen)
                self.caught_up.set()
            elif not reached:
                reached = await _at_ends(consumer, targets)

    async def _deliver(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self.records_seen += len(records)
        if self._batch_handler is not None:
            result = self._batch_handler(records)
            if result is not None:
                await result
            return
        assert self._handler is not None  # noqa: S101 - one of the two, checked in __init__
        for record in records:
            outcome = self._handler(record)
            if outcome is not None:
                await outcome

    async def wait_caught_up(self, timeout_s: float) -> None:
        """Until the replay caught up; raises TimeoutError, or the replay's own error if it died."""
        waiter = asyncio.create_task(self.caught_up.wait())
        watched = [waiter] + ([self._task] if self._task else [])
        done, _ = await asyncio.wait(watched, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if self._task in done and self._task is not None:
                self._task.result()
            raise TimeoutError(f"replay of {self._topics} not caught up within {timeout_s:g} s")

    async def catch_up(self, timeout_s: float) -> None:
        """Until every record on the topics at the call is handled; raises TimeoutError, or the replay's error."""
        if self._task is None:
            raise RuntimeError("the replay is not started")
        if self._offsets_reader is None:
            raise RuntimeError("catch_up needs a replayer constructed with catches_up=True")
        async with asyncio.timeout(timeout_s):
            targets = await self._offsets_reader.end_offsets(self._partitions)
            while not all(self._handled.get(tp, 0) >= end for tp, end in targets.items()):
                progress = asyncio.create_task(self._progress.wait())
                await asyncio.wait([progress, self._task], return_when=asyncio.FIRST_COMPLETED)
                progress.cancel()
                if self._task.done():
                    self._task.result()  # the replay's own error (it never ends otherwise)
                    raise RuntimeError(f"the replay of {self._topics} ended")

    async def _started_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(**{**self._kafka.consumer_kwargs(), "group_id": None})
        try:
            await consumer.start()
        except BaseException:  # e.g. no broker: close what start() opened
            await consumer.stop()
            raise
        return consumer

    @property
    def failed(self) -> BaseException | None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for consumer in (self._consumer, self._offsets_reader):
            if consumer is not None:
                await consumer.stop()


async def _at_ends(consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> bool:
    return all([await consumer.position(tp) >= end for tp, end in targets.items()])
