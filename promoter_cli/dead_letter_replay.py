"""Send dead letters back to the topic they came from: same key, same bytes (so the same event id).

Guarded against loops: a letter replayed ``max_replays`` times already is refused with the reason.
Each replay increments ``x-replay-count`` and leaves an audit record on the replays topic. The
worker recognises an event id it already answered, so replaying a letter twice promotes once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from promoter_cli.dead_letter_log import DeadLetter
from runtime.kafka_clients import started
from runtime.settings import KafkaSettings, TopicSettings
from schemas.dead_letter_replayed import DeadLetterReplayed, DeadLetterReplayedData
from worker.dead_letters import HEADER_PREFIX, REPLAY_COUNT_HEADER

CONFIRM_EVERY = 200


@dataclass
class ReplayReport:
    replayed: list[DeadLetter] = field(default_factory=list)
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)


def refusal(letter: DeadLetter, max_replays: int) -> str | None:
    """Why this letter must not be replayed, or None."""
    if letter.header("source-topic") is None:
        return "it has no x-dlq-source-topic header, so its source is unknown"
    if letter.replay_count >= max_replays:
        return (
            f"it was replayed {letter.replay_count} times already (limit {max_replays}): fix the cause, then "
            "request the promotion again with `promoter promote`"
        )
    return None


async def _send(
    producer: AIOKafkaProducer, letter: DeadLetter, topics: TopicSettings, replayed_by: str
) -> tuple[asyncio.Future[Any], asyncio.Future[Any]]:
    """Queue the letter to its source topic and its audit record; the futures resolve on the broker's ack."""
    target = letter.header("source-topic") or ""
    sent = await producer.send(target, value=letter.value, key=letter.key, headers=replay_headers(letter))
    audit = DeadLetterReplayed(
        source="/model-promoter/cli",
        subject=letter.model,
        data=DeadLetterReplayedData(
            event_id=letter.header("event-id"),
            model_name=letter.model,
            dead_letter_partition=letter.partition,
            dead_letter_offset=letter.offset,
            target_topic=target,
            replay_count=letter.replay_count + 1,
            replayed_by=replayed_by,
            reason_code=letter.reason_code,
        ),
    )
    audited = await producer.send(topics.dead_letter_replays, value=audit.to_json_bytes(), key=letter.key)
    return sent, audited


def replay_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The record's own headers, without our diagnostics, with the replay count incremented."""
    kept = [(k, v) for k, v in letter.headers if not k.startswith(HEADER_PREFIX) and k != REPLAY_COUNT_HEADER]
    return [*kept, (REPLAY_COUNT_HEADER, str(letter.replay_count + 1).encode())]


async def replay(
    letters: list[DeadLetter],
    *,
    kafka: KafkaSettings,
    topics: TopicSettings,
    replayed_by: str,
    max_replays: int,
    rate_per_s: float | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    report = ReplayReport()
    eligible: list[DeadLetter] = []
    for letter in letters:
        why = refusal(letter, max_replays)
        if why is None:
            eligible.append(letter)
        else:
            report.refused.append((letter, why))
    if dry_run:
        report.replayed = eligible
        return report
    async with started(AIOKafkaProducer(**kafka.producer_kwargs())) as producer:
        chunk = 1 if rate_per_s else CONFIRM_EVERY
        for start in range(0, len(eligible), chunk):
            batch = eligible[start : start + chunk]
            sent = [await _send(producer, letter, topics, replayed_by) for letter in batch]
            await asyncio.gather(*(f for pair in sent for f in pair))  # confirmed before it is reported
            report.replayed.extend(batch)
            if progress is not None:
                progress(len(report.replayed), len(eligible))
            if rate_per_s:
                await asyncio.sleep(1 / rate_per_s)  # --rate: pacing, so a backlog does not flood the workers
    return report
