"""Read the dead-letter topic: every letter with its diagnostic headers, filterable for on-call work.

A letter is the original record (key, bytes, headers) plus the ``x-dlq-*`` headers the worker
wrote (see README, "Failures"). Reading stops once every partition is drained: its position
reached the end offset seen at start and a fetch came back empty.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer

from runtime.kafka_clients import assign_from_start, started
from runtime.settings import KafkaSettings
from runtime.topic_reading import MissingTopicError
from worker.dead_letters import HEADER_PREFIX, REPLAY_COUNT_HEADER

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
FETCH_MAX_RECORDS = 5000

#: What an on-call engineer should try first, per reason code.
NEXT_STEPS: dict[str, str] = {
    "invalid_event": "Fix the producer (the reason names the field); replaying the same bytes fails again.",
    "model_not_found": "Check the model name in MLflow; register the model, then `promoter promote` it.",
    "version_not_found": "No such version in MLflow: request an existing one with `promoter promote --version`.",
    "alias_not_found": "Set the alias in MLflow (set_registered_model_alias); the webhook promotes it.",
    "registry_refused": "MLflow refused the worker (the reason has its answer): fix its credentials, then replay.",
    "version_not_ready": "The MLflow version failed to register: register it again.",
    "unsupported_flavor": "Log the model with a flavor the worker serves (the reason lists them, with their backend).",
    "missing_signature": "Log the model again with a signature or an input_example, register, promote.",
    "unsupported_signature": "Use required numeric/boolean columns, or a tensor signature with a batch dimension.",
    "artifact_too_large": "Shrink the model or raise PROMOTER_WORKER_MAX_ARTIFACT_BYTES.",
    "unsafe_artifact_path": "The artifacts hold links or special files: log the model again from a clean directory.",
    "policy_tag_missing": "Set the required version tag in MLflow, then replay this letter.",
    "metric_below_threshold": "The run's metrics miss the policy: train a better model, or change the thresholds.",
    "digest_conflict": "A Triton model dir holds other bytes: unload it and remove the dir, then replay.",
    "triton_load_failed": "Read the Triton log for the stub's error; fix the model or its dependencies, then replay.",
    "triton_load_timeout": "Triton did not finish loading: check its log and resources, then replay.",
    "parity_mismatch": "Serving disagrees with training: fix the model's predict code, register a new version.",
    "retries_exhausted": "MLflow or Triton was unreachable: once `promoter status` and the probes are green, replay.",
    "replay_limit_reached": "Replayed too often: fix the cause, then re-request with `promoter promote`.",
    "internal_error": "A bug in the worker: attach the letter (`promoter dlq show`) to an issue; replay after the fix.",
}


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """``2h``/``30m``/``1d``/``45s`` ago, or an ISO 8601 time (UTC if no zone); ValueError otherwise."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration like 2h/30m/1d nor an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    diagnostics: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, partition: int, offset: int, key: bytes | None, value: bytes, headers: Any) -> DeadLetter:
        pairs = tuple((str(name), bytes(raw)) for name, raw in (headers or ()))
        diagnostics = {
            name: raw.decode(errors="replace")
            for name, raw in pairs
            if name.startswith(HEADER_PREFIX) or name == REPLAY_COUNT_HEADER
        }
        return cls(partition, offset, key, value, pairs, diagnostics)

    def header(self, name: str) -> str | None:
        return self.diagnostics.get(HEADER_PREFIX + name)

    @property
    def model(self) -> str | None:
        return self.key.decode(errors="replace") if self.key else None

    @property
    def reason_code(self) -> str:
        return self.header("reason-code") or "unknown"

    @property
    def failed_at(self) -> datetime | None:
        raw = self.header("last-failure-at")
        try:
            return datetime.fromisoformat(raw) if raw else None
        except ValueError:
            return None

    @property
    def replay_count(self) -> int:
        raw = self.diagnostics.get(REPLAY_COUNT_HEADER, "0")
        return int(raw) if raw.isdigit() else 0

    @property
    def event(self) -> dict[str, Any] | None:
        try:
            document = json.loads(self.value)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    @property
    def target(self) -> str:
        """``v3`` or ``@champion``: what the request asked for."""
        data = (self.event or {}).get("data")
        if not isinstance(data, dict):
            return "?"
        if data.get("version") is not None:
            return f"v{data['version']}@{data.get('alias', 'champion')}"
        return f"@{data.get('alias', 'champion')}"

    def summary(self) -> dict[str, Any]:
        """The row of ``dlq list`` (also its ``--json`` form)."""
        return {
            "time": self.header("last-failure-at"),
            "model": self.model,
            "target": self.target,
            "reason_code": self.reason_code,
            "attempts": int(self.header("attempts") or 0),
            "source": f"{self.header('source-topic')}/{self.header('source-partition')}/{self.header('source-offset')}",
            "event_id": self.header("event-id"),
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "replays": self.replay_count,
        }

    def explained(self) -> dict[str, Any]:
        """What ``dlq show`` prints (also its ``--json`` form): the event, the diagnostics, the next step."""
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "model": self.model,
            "event": self.event if self.event is not None else self.value.decode(errors="replace"),
            "diagnostics": dict(sorted(self.diagnostics.items())),
            "error": self.header("reason") or "(no reason recorded)",
            "next_step": NEXT_STEPS.get(self.reason_code, "read the error above"),
        }


@dataclass(frozen=True)
class LetterFilter:
    model: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_id: str | None = None
    offsets: tuple[int, int] | None = None  # inclusive range of dead-letter offsets

    @classmethod
    def parse(
        cls,
        *,
        model: str | None = None,
        reason: str | None = None,
        since: str | None = None,
        until: str | None = None,
        event_id: str | None = None,
        offsets: str | None = None,
    ) -> LetterFilter:
        """The filter ``promoter dlq list`` and the console take as text; ValueError naming what is wrong.

        Empty strings mean "no filter" (what an empty form field gives).
        """
        return cls(
            model=model or None,
            reason=reason or None,
            since=parse_moment(since) if since else None,
            until=parse_moment(until) if until else None,
            event_id=event_id or None,
            offsets=parse_offsets(offsets) if offsets else None,
        )

    def matches(self, letter: DeadLetter) -> bool:
        checks = (
            self.model is None or letter.model == self.model,
            self.reason is None or letter.reason_code == self.reason,
            self.event_id is None or letter.header("event-id") == self.event_id,
            self.offsets is None or self.offsets[0] <= letter.offset <= self.offsets[1],
        )
        if not all(checks):
            return False
        if self.since is None and self.until is None:
            return True
        failed = letter.failed_at
        if failed is None:
            return False
        return (self.since is None or failed >= self.since) and (self.until is None or failed <= self.until)


def parse_offsets(text: str) -> tuple[int, int]:
    """``120`` or ``100-200`` (inclusive)."""
    low, sep, high = text.partition("-")
    if not low.strip().isdigit() or (sep and not high.strip().isdigit()):
        raise ValueError(f"{text!r} must be an offset or a range like 100-200")
    return int(low), int(high) if sep else int(low)


async def read_dead_letters(kafka: KafkaSettings, topic: str) -> list[DeadLetter]:
    """Every letter on ``topic``, in partition then offset order."""
    letters: list[DeadLetter] = []
    options = {**kafka.consumer_kwargs(), "group_id": None, "max_partition_fetch_bytes": 16 * 1024 * 1024}
    async with started(AIOKafkaConsumer(**options)) as consumer:
        partitions = await assign_from_start(consumer, [topic])
        if not partitions:
            raise MissingTopicError(f"topic {topic!r} does not exist (check PROMOTER_TOPIC_PROMOTION_DLQ)")
        ends = await consumer.end_offsets(partitions)
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=FETCH_MAX_RECORDS)
            for tp, records in batches.items():
                letters.extend(
                    DeadLetter.from_record(tp.partition, r.offset, r.key, r.value or b"", r.headers) for r in records
                )
            if not batches and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                break
    letters.sort(key=lambda letter: (letter.partition, letter.offset))
    return letters
