"""Use aiokafka clients as context managers that always stop them, also when ``start()`` failed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar


class _Client(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


ClientT = TypeVar("ClientT", bound=_Client)


@asynccontextmanager
async def started(client: ClientT) -> AsyncIterator[ClientT]:
    """``async with started(AIOKafkaProducer(...)) as producer:``; stopped on every way out."""
    try:
        await client.start()
        yield client
    finally:
        await client.stop()
