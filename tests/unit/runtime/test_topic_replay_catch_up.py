"""When a replay is caught up: at the end offsets seen at start, confirmed by one empty fetch of a short window,
never by waiting out the consumer's whole long poll; records arrive at a batch handler one fetched batch at a time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from runtime import topic_replay
from runtime.settings import KafkaSettings
from runtime.topic_replay import CONFIRM_WINDOW_MS, TopicReplayer

PARTITION = TopicPartition("log", 0)
LONG_POLL_MS = 60_000  # a replay that waited for a whole long poll would miss every deadline below


class FakeConsumer:
    """Hands out queued batches; an empty fetch takes its whole ``timeout_ms``, like a broker's long poll."""

    def __init__(self, batches: list[list[int]], end: int) -> None:
        self.batches = batches
        self.end = end
        self.position_now = 0
        self.timeouts: list[int] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, self.end)

    async def position(self, partition: TopicPartition) -> int:
        return self.position_now

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        self.timeouts.append(timeout_ms)
        if not self.batches:
            await asyncio.sleep(timeout_ms / 1000)  # the simulated long poll of an empty fetch
            return {}
        offsets = self.batches.pop(0)
        self.position_now = offsets[-1] + 1
        return {PARTITION: [SimpleNamespace(offset=offset, value=b"x") for offset in offsets]}


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> FakeConsumer:
    fake = FakeConsumer([[0, 1, 2], [3, 4]], end=5)

    async def assign(_consumer: Any, topics: list[str]) -> list[TopicPartition]:
        return [PARTITION]

    monkeypatch.setattr(topic_replay, "AIOKafkaConsumer", lambda **_: fake)
    monkeypatch.setattr(topic_replay, "assign_from_start", assign)
    return fake


async def test_caught_up_after_the_end_offsets_and_one_short_empty_fetch(consumer: FakeConsumer) -> None:
    batches: list[list[int]] = []
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=LONG_POLL_MS)
    replayer = TopicReplayer(kafka, ["log"], batch_handler=lambda records: batches.append([r.offset for r in records]))
    await replayer.start()
    try:
        await replayer.wait_caught_up(timeout_s=5)
        assert batches == [[0, 1, 2], [3, 4]]
        assert replayer.records_seen == 5
        assert consumer.timeouts[2] == CONFIRM_WINDOW_MS  # the fetch after the end: a short window only
    finally:
        await replayer.stop()


async def test_records_past_the_start_end_are_read_before_the_replay_counts_as_caught_up(
    consumer: FakeConsumer,
) -> None:
    consumer.end = 3  # a broker that under-reported the end (tansu after a multi-record batch)
    seen: list[int] = []
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=LONG_POLL_MS)
    replayer = TopicReplayer(kafka, ["log"], lambda record: seen.append(record.offset))
    await replayer.start()
    try:
        await replayer.wait_caught_up(timeout_s=5)
        assert seen == [0, 1, 2, 3, 4]
    finally:
        await replayer.stop()


async def test_an_empty_log_is_caught_up_at_once(consumer: FakeConsumer) -> None:
    consumer.batches, consumer.end = [], 0
    replayer = TopicReplayer(
        KafkaSettings(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=LONG_POLL_MS), ["log"], print
    )
    await replayer.start()
    try:
        await replayer.wait_caught_up(timeout_s=5)
        assert consumer.timeouts[0] == CONFIRM_WINDOW_MS
    finally:
        await replayer.stop()


async def test_catch_up_returns_once_the_records_on_the_log_at_the_call_are_handled(consumer: FakeConsumer) -> None:
    handled: list[int] = []
    handling, release = asyncio.Event(), asyncio.Event()

    async def handler(record: Any) -> None:
        if record.offset == 5:  # fetched, so the consumer's position is already past it: not yet handled
            handling.set()
            await release.wait()
        handled.append(record.offset)

    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=20)
    replayer = TopicReplayer(kafka, ["log"], handler, catches_up=True)
    await replayer.start()
    try:
        await replayer.wait_caught_up(timeout_s=5)
        consumer.batches.append([5, 6])  # another replica's answers, on the log since the replay caught up
        consumer.end = 7
        await asyncio.wait_for(handling.wait(), timeout=5)

        with pytest.raises(TimeoutError):  # fetched is not handled
            await replayer.catch_up(timeout_s=0.1)
        release.set()
        await replayer.catch_up(timeout_s=5)

        assert handled == [0, 1, 2, 3, 4, 5, 6]
    finally:
        await replayer.stop()


async def test_catch_up_gives_up_at_its_deadline(consumer: FakeConsumer) -> None:
    replayer = TopicReplayer(
        KafkaSettings(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=20), ["log"], print, catches_up=True
    )
    await replayer.start()
    try:
        await replayer.wait_caught_up(timeout_s=5)
        consumer.end = 9  # records the broker says it has, never fetched

        with pytest.raises(TimeoutError):
            await replayer.catch_up(timeout_s=0.2)
    finally:
        await replayer.stop()


async def test_catch_up_is_refused_without_its_connection(consumer: FakeConsumer) -> None:
    replayer = TopicReplayer(KafkaSettings(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=20), ["log"], print)
    await replayer.start()
    try:
        with pytest.raises(RuntimeError, match="catches_up=True"):
            await replayer.catch_up(timeout_s=1)
    finally:
        await replayer.stop()


def test_a_replayer_takes_one_kind_of_handler() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ValueError, match="either a handler or a batch_handler"):
        TopicReplayer(kafka, ["log"])
    with pytest.raises(ValueError, match="either a handler or a batch_handler"):
        TopicReplayer(kafka, ["log"], print, batch_handler=print)
