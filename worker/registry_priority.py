"""Promotions first: the registry write-back waits while a promotion of this process is under way.

A promotion reads MLflow on its critical path (resolve, artifact listing and files), and its Triton
load and proof need the CPU of the machine. The write-back of the previous decision (a version's
``promoter.*`` tags and the alias history: about a dozen MLflow calls per promotion) used to run
right then: on the local stack's one MLflow worker it made the next promotion's registry calls queue
behind it (a download 0.22 s alone, 0.61 s beside the write-back), and its CPU slowed the load. Now
each write-back call first waits until no promotion is under way, or at most ``max_wait_s``: under a
steady stream of promotions it still makes progress (one call per ``max_wait_s`` at least), and
serving never waits for it either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

#: The longest one write-back call waits for the promotions under way.
MAX_WAIT_S = 2.0


class PromotionsFirst:
    def __init__(self, max_wait_s: float = MAX_WAIT_S) -> None:
        self.max_wait_s = max_wait_s
        self._under_way = 0
        self._none_under_way = asyncio.Event()
        self._none_under_way.set()

    @contextmanager
    def promoting(self) -> Iterator[None]:
        """Mark a promotion under way while the block runs."""
        self._under_way += 1
        self._none_under_way.clear()
        try:
            yield
        finally:
            self._under_way -= 1
            if self._under_way == 0:
                self._none_under_way.set()

    @property
    def under_way(self) -> int:
        return self._under_way

    async def wait_turn(self) -> None:
        """Until no promotion is under way, or ``max_wait_s`` passed; at once (not even yielding) when none is."""
        if self._none_under_way.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_under_way.wait(), self.max_wait_s)
