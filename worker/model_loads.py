"""At most one load of a Triton model at a time, whether a promotion or a fleet repair asks for it.

One lock per Triton model, shared by the promotion pipeline and the fleet repairer of this
process. The promotion also marks the model *in flight* while it loads and proves it, so the
repairer counts it among what every endpoint should hold. Locks of models nobody holds or
waits for are dropped, so the table stays as small as the work under way.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager


class ModelLoads:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()  # holders and waiters per lock
        self._in_flight: Counter[str] = Counter()

    @asynccontextmanager
    async def exclusive(self, triton_model: str) -> AsyncIterator[None]:
        """Hold the load lock of ``triton_model`` (waits while a promotion or repair holds it)."""
        lock = self._locks.setdefault(triton_model, asyncio.Lock())
        self._users[triton_model] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[triton_model] -= 1
            if self._users[triton_model] <= 0:
                del self._users[triton_model]
                self._locks.pop(triton_model, None)

    @contextmanager
    def promoting(self, triton_model: str) -> Iterator[None]:
        """Mark ``triton_model`` as being promoted (loaded and proven) while the block runs."""
        self._in_flight[triton_model] += 1
        try:
            yield
        finally:
            self._in_flight[triton_model] -= 1
            if self._in_flight[triton_model] <= 0:
                del self._in_flight[triton_model]

    def in_flight(self) -> set[str]:
        """Triton models a promotion of this process is loading or proving right now."""
        return set(self._in_flight)

    def busy(self, triton_model: str) -> bool:
        """True while someone holds or waits for the load lock of ``triton_model``."""
        return triton_model in self._users

    def users(self, triton_model: str) -> int:
        """How many hold or wait for the load lock of ``triton_model``."""
        return self._users[triton_model]
