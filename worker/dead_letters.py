"""Dead letters: the original record, byte for byte, plus headers an on-call engineer can act on.

Headers (all ``x-dlq-*`` strings): reason (message), reason-code, error-type (``permanent``,
``transient`` or ``malformed``), attempts, source topic/partition/offset, first and last failure
time (ISO 8601 UTC), event id when the bytes parsed, the worker replica, and the replay count
carried over from a replayed letter. The record's own headers are kept as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ErrorType = Literal["permanent", "transient", "malformed"]

HEADER_PREFIX = "x-dlq-"
REPLAY_COUNT_HEADER = "x-replay-count"
MAX_REASON_CHARS = 2000


@dataclass(frozen=True, slots=True)
class SourceRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]]


def dead_letter_headers(
    source: SourceRecord,
    *,
    reason_code: str,
    reason: str,
    error_type: ErrorType,
    attempts: int,
    first_failure: datetime,
    last_failure: datetime,
    event_id: str | None,
    replica_id: str,
) -> dict[str, str]:
    """The headers of the dead letter for ``source`` (original headers first, ours override)."""
    original = {name: value.decode(errors="replace") for name, value in source.headers}
    ours = {
        "reason": reason[:MAX_REASON_CHARS],
        "reason-code": reason_code,
        "error-type": error_type,
        "attempts": str(attempts),
        "source-topic": source.topic,
        "source-partition": str(source.partition),
        "source-offset": str(source.offset),
        "first-failure-at": first_failure.isoformat(),
        "last-failure-at": last_failure.isoformat(),
        "replica": replica_id,
    }
    if event_id is not None:
        ours["event-id"] = event_id
    headers = {**original, **{HEADER_PREFIX + name: value for name, value in ours.items()}}
    headers.setdefault(REPLAY_COUNT_HEADER, "0")
    return headers
