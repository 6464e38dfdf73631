"""Read state topics to their end before acting on them (the current routing policy, the serving state)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka.errors import KafkaError

from runtime.settings import KafkaSettings
from runtime.topic_replay import RecordHandler, TopicReplayer


class MissingTopicError(LookupError):
    """A topic the command reads does not exist (wrong ``PROMOTER_TOPIC_*`` name, or no worker ran yet)."""


@asynccontextmanager
async def caught_up(
    kafka: KafkaSettings, topics: list[str], handler: RecordHandler, timeout_s: float
) -> AsyncIterator[TopicReplayer]:
    """``handler`` has seen every record of ``topics`` up to their end; inside the block it sees the new ones.

    MissingTopicError when a topic does not exist, TimeoutError when the end is not reached in ``timeout_s``.
    """
    replayer = TopicReplayer(kafka, topics, handler)
    try:
        try:
            await replayer.start()
        except KafkaError:
            raise
        except RuntimeError as error:  # start() refuses topics that do not exist with a plain RuntimeError
            raise MissingTopicError(f"{error} (check the PROMOTER_TOPIC_* names; a worker creates them)") from None
        await replayer.wait_caught_up(timeout_s)
        yield replayer
    finally:
        await replayer.stop()
