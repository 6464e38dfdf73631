"""A replayer whose broker cannot be reached fails to start and leaves no open consumer behind."""

from __future__ import annotations

import gc
import socket
import warnings

from aiokafka.errors import KafkaConnectionError

from runtime.settings import KafkaSettings
from runtime.topic_replay import TopicReplayer


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start_failure() -> str:
    replayer = TopicReplayer(KafkaSettings(bootstrap_servers=f"127.0.0.1:{_closed_port()}"), ["t"], lambda _: None)
    try:
        await replayer.start()
    except KafkaConnectionError as error:
        return type(error).__name__  # nothing of the failed start is kept alive past this frame
    return "started"


async def test_a_replayer_that_cannot_start_closes_its_consumer() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert await _start_failure() == "KafkaConnectionError"
        gc.collect()
    assert not [w for w in caught if "Unclosed AIOKafkaConsumer" in str(w.message)]
