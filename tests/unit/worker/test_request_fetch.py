"""The worker's fetch of promotion requests: FastStream's long-poll without its sleep after an empty fetch."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber.usecase import BatchSubscriber

from worker.app import build_app
from worker.request_fetch import fetch_without_idle_sleep


class FakeConsumer:
    """Answers each getmany with the next of ``answers`` and records how it was asked."""

    def __init__(self, answers: list[dict[TopicPartition, list[Any]]]) -> None:
        self.answers = answers
        self.asked: list[tuple[int, int | None]] = []

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        self.asked.append((timeout_ms, max_records))
        return self.answers.pop(0)


def record(partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("requests", partition, offset, 0, 0, b"m", b"{}", None, 1, 2, [])


def subscriber() -> BatchSubscriber:
    found = KafkaBroker().subscriber("requests", batch=True, group_id="g", batch_timeout_ms=500, max_records=7)
    assert isinstance(found, BatchSubscriber)
    return found


async def no_sleep(seconds: float) -> None:
    raise AssertionError(f"the fetch slept {seconds} s")


async def test_faststream_alone_sleeps_after_an_empty_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the module exists: a request arriving during this sleep waited for it."""
    monkeypatch.setattr(anyio, "sleep", no_sleep)
    with pytest.raises(AssertionError, match=r"slept 0\.5 s"):
        await subscriber().get_msg(FakeConsumer([{}]))


async def test_an_empty_long_poll_returns_at_once_and_records_come_flat_in_partition_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(anyio, "sleep", no_sleep)
    fetching = subscriber()
    fetch_without_idle_sleep(fetching)
    first, second, third = record(0, 4), record(0, 5), record(3, 1)
    consumer = FakeConsumer(
        [{}, {TopicPartition("requests", 0): [first, second], TopicPartition("requests", 3): [third]}]
    )

    assert await fetching.get_msg(consumer) == ()
    assert await fetching.get_msg(consumer) == (first, second, third)
    assert consumer.asked == [(500, 7), (500, 7)], "the same long-poll and batch size as FastStream's"


def test_the_worker_app_fetches_its_requests_without_the_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = build_app().broker
    assert broker is not None
    (requests,) = broker.subscribers
    assert requests.get_msg.__qualname__.startswith(fetch_without_idle_sleep.__name__)  # type: ignore[attr-defined]
