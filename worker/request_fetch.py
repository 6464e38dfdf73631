"""The worker's fetch of promotion requests: FastStream's batch long-poll, without its sleep after an empty one.

FastStream's batch subscriber (0.7) asks the consumer for records for up to ``batch_timeout_ms`` and,
when that long-poll found none, sleeps another ``batch_timeout_ms`` before asking again. A request
arriving during that sleep waited for it: an idle worker spends about half its time there, so a lone
promotion started up to 0.5 s late (``PROMOTER_KAFKA_FETCH_MAX_WAIT_MS``, 0.125 s on average), on top
of everything else. :func:`fetch_without_idle_sleep` gives the subscriber the same long-poll minus the
sleep. The long-poll bounds the loop by itself (aiokafka waits up to the timeout for records, and while
the group reassigns partitions), so an idle worker wakes once per fetch wait, never spins.
"""

from __future__ import annotations

from itertools import chain
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord


class BatchFetching(Protocol):
    """What of FastStream's ``BatchSubscriber`` this module uses."""

    batch_timeout_ms: int
    max_records: int | None


def fetch_without_idle_sleep(subscriber: BatchFetching) -> None:
    """Replace ``subscriber``'s fetch by a long-poll of ``batch_timeout_ms`` that does not sleep when it finds none."""

    async def get_msg(consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord[bytes, bytes], ...]:
        batches = await consumer.getmany(timeout_ms=subscriber.batch_timeout_ms, max_records=subscriber.max_records)
        return tuple(chain.from_iterable(batches.values()))

    subscriber.get_msg = get_msg  # type: ignore[attr-defined]  # FastStream's consume loop calls it per fetch
