"""Exponential backoff with full jitter for transient promotion failures.

Kept over a library (measured for issue 11): tenacity's ``wait_random_exponential`` is the same
formula, but mapping its attempt numbers, ``RetryError`` and ``before_sleep`` onto what the DLQ
headers need took as many lines as this module; stamina adds its jitter to a fixed backoff (not
full jitter) and registers its own global metrics.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from worker.errors import TransientFailure

T = TypeVar("T")


def backoff_delay(attempt: int, *, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1-based): uniform in [0, min(max, initial * 2^(attempt-1))]."""
    ceiling = min(max_s, initial_s * (2 ** (attempt - 1)))
    return (rng or random).uniform(0, ceiling)


class RetriesExhaustedError(Exception):
    def __init__(self, last: TransientFailure, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempts: {last.message}")
        self.last = last
        self.attempts = attempts


async def retry_transient(
    operation: Callable[[int], Awaitable[T]],
    *,
    max_attempts: int,
    initial_s: float,
    max_s: float,
    on_retry: Callable[[int, TransientFailure, float], None] | None = None,
) -> tuple[T, int]:
    """Run ``operation(attempt)`` until it succeeds or raises something other than TransientFailure.

    Returns the result and the number of attempts; raises :class:`RetriesExhaustedError` after
    ``max_attempts`` transient failures.
    """
    attempt = 1
    while True:
        try:
            return await operation(attempt), attempt
        except TransientFailure as failure:
            if attempt >= max_attempts:
                raise RetriesExhaustedError(failure, attempt) from failure
            delay = backoff_delay(attempt, initial_s=initial_s, max_s=max_s)
            if on_retry is not None:
                on_retry(attempt, failure, delay)
            await asyncio.sleep(delay)  # backoff between attempts, not a wait for a condition
            attempt += 1
