"""Replay topics from their beginning, say when caught up, then keep following them.

Gateways and workers rebuild their state this way (no consumer group: every reader sees every
record). "Caught up" means every partition's position reached the end offset seen at start and
one fetch came back empty: the second condition guards against brokers (tansu) whose end offsets
under-report after multi-record batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from runtime.kafka_clients import assign_from_start
from runtime.logging import get_logger
from runtime.settings import KafkaSettings

log = get_logger(__name__)

RecordHandler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None] | None]


class TopicReplayer:
    """Reads ``topics`` from offset 0 and calls ``handler`` for each record, in partition order."""

    def __init__(self, kafka: KafkaSettings, topics: list[str], handler: RecordHandler) -> None:
        self._kafka = kafka
        self._topics = topics
        self._handler = handler
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()
        self.records_seen = 0

    async def start(self) -> None:
        kwargs: dict[str, Any] = {**self._kafka.consumer_kwargs(), "group_id": None}
        consumer = AIOKafkaConsumer(**kwargs)
        try:
            await consumer.start()
        except BaseException:  # e.g. no broker: close what start() opened
            await consumer.stop()
            raise
        self._consumer = consumer
        partitions = await assign_from_start(consumer, self._topics)
        missing = sorted(set(self._topics) - {tp.topic for tp in partitions})
        if missing:
            raise RuntimeError(f"topics {missing} do not exist: create them before starting")
        targets = await consumer.end_offsets(partitions)
        self._task = asyncio.create_task(self._run(consumer, targets), name=f"replay {','.join(self._topics)}")

    async def _run(self, consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=self._kafka.fetch_max_wait_ms)
            for records in batches.values():
                for record in records:
                    self.records_seen += 1
                    result = self._handler(record)
                    if result is not None:
                        await result
            if not self.caught_up.is_set() and not batches:
                positions = {tp: await consumer.position(tp) for tp in targets}
                if all(positions[tp] >= end for tp, end in targets.items()):
                    log.info("replay caught up", topics=self._topics, records=self.records_seen)
                    self.caught_up.set()

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
        if self._consumer is not None:
            await self._consumer.stop()
