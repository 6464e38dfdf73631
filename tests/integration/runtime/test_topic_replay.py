"""``TopicReplayer.catch_up`` on a real broker: its end offsets come from a connection of its own.

A broker answers the requests of one connection in order. Asked on the fetching consumer's connection, the
end offsets waited behind the long poll in flight: a worker's first promotion after an assignment started up to
``fetch_max_wait_ms`` (500 ms) late. Here the long poll is 20 s, so a question queued behind it misses every
deadline below.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from aiokafka import ConsumerRecord

from deploy.stack.local_stack import LocalStack
from runtime.kafka_topics import ensure_topics
from runtime.topic_replay import TopicReplayer
from schemas.topics import MODEL_READY
from tests.worker_harness import produce

pytestmark = pytest.mark.integration

LONG_POLL_MS = 20_000
CATCH_UP_DEADLINE_S = 5.0  # a quarter of the long poll: only an answer that does not wait for it makes it
CAUGHT_UP_TIMEOUT_S = 30.0


async def test_catch_up_is_answered_while_the_replay_waits_in_a_long_poll(local_stack: LocalStack) -> None:
    bootstrap = local_stack.kafka_bootstrap_servers
    topic = f"it.replay.{uuid.uuid4().hex[:10]}"
    await ensure_topics(local_stack.kafka_settings(), [replace(MODEL_READY, name=topic)])  # as the worker replays
    await produce(bootstrap, topic, [(b"a", b"before start")])
    seen: list[bytes | None] = []

    def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        seen.append(record.value)

    kafka = local_stack.kafka_settings().model_copy(update={"fetch_max_wait_ms": LONG_POLL_MS})
    replayer = TopicReplayer(kafka, [topic], handle, catches_up=True)
    await replayer.start()
    try:
        await replayer.wait_caught_up(CAUGHT_UP_TIMEOUT_S)
        assert seen == [b"before start"]
        # Nothing new on the log: the replay's consumer is (or is about to be) parked in a 20 s fetch. Three
        # in a row, so at least one is asked while that fetch is in flight.
        for _ in range(3):
            await replayer.catch_up(CATCH_UP_DEADLINE_S)
        await produce(bootstrap, topic, [(b"b", b"an answer")])
        await replayer.catch_up(CATCH_UP_DEADLINE_S)
        assert seen == [b"before start", b"an answer"], "catch_up returned before the record on the log was handled"
    finally:
        await replayer.stop()
