"""Dead-letter filters, replay guards and the serving-status view (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from promoter_cli.dead_letter_log import NEXT_STEPS, DeadLetter, LetterFilter, parse_moment, parse_offsets
from promoter_cli.dead_letter_replay import refusal, replay_headers
from promoter_cli.serving_status import ServingStatus
from schemas.gateway_status import GatewayHeartbeat, GatewayHeartbeatData, ServedRoute
from schemas.model_ready import ModelReady
from schemas.promotion_rejected import ReasonCode
from tests.event_samples import all_events

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def letter(
    offset: int, *, model: str = "iris", reason: str = "retries_exhausted", age_h: float = 1, replays: int = 0
) -> DeadLetter:
    failed = (NOW - timedelta(hours=age_h)).isoformat()
    headers = [
        ("trace", b"t"),
        ("x-dlq-reason-code", reason.encode()),
        ("x-dlq-last-failure-at", failed.encode()),
        ("x-dlq-source-topic", b"model.promotion.requested"),
        ("x-dlq-event-id", f"evt-{offset}".encode()),
        ("x-replay-count", str(replays).encode()),
    ]
    return DeadLetter.from_record(0, offset, model.encode(), b'{"data": {"version": 3, "alias": "champion"}}', headers)


def test_every_reason_code_has_a_next_step() -> None:
    assert {code.value for code in ReasonCode} <= set(NEXT_STEPS)


def test_durations_and_times() -> None:
    assert parse_moment("2h", now=NOW) == NOW - timedelta(hours=2)
    assert parse_moment("30m", now=NOW) == NOW - timedelta(minutes=30)
    assert parse_moment("2026-11-22T10:00:00") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_moment("yesterday")
    assert parse_offsets("100-200") == (100, 200)
    assert parse_offsets("7") == (7, 7)
    with pytest.raises(ValueError, match="range like 100-200"):
        parse_offsets("a-b")


def test_filters_combine() -> None:
    letters = [letter(1), letter(2, model="fraud"), letter(3, reason="parity_mismatch"), letter(4, age_h=5)]

    def chosen(selection: LetterFilter) -> list[int]:
        return [x.offset for x in letters if selection.matches(x)]

    assert chosen(LetterFilter(model="iris")) == [1, 3, 4]
    assert chosen(LetterFilter(model="iris", reason="retries_exhausted", since=NOW - timedelta(hours=2))) == [1]
    assert chosen(LetterFilter(until=NOW - timedelta(hours=2))) == [4]
    assert chosen(LetterFilter(event_id="evt-2")) == [2]
    assert chosen(LetterFilter(offsets=(2, 3))) == [2, 3]
    assert letters[0].target == "v3@champion"


def test_replay_is_refused_at_the_limit_and_counts_up() -> None:
    assert refusal(letter(1, replays=2), max_replays=3) is None
    assert "replayed 3 times already (limit 3)" in (refusal(letter(1, replays=3), max_replays=3) or "")
    headers = dict(replay_headers(letter(1, replays=2)))
    assert headers == {"trace": b"t", "x-replay-count": b"3"}


def _beat(gateway: str, version: int, seconds_ago: float) -> object:
    route = ServedRoute(
        model_name="iris-clf", alias="champion", version=version, triton_model_name=f"t{version}", generation=7
    )
    event = GatewayHeartbeat(
        source="/t",
        time=datetime.now(UTC) - timedelta(seconds=seconds_ago),
        data=GatewayHeartbeatData(gateway_id=gateway, ready=True, started_at=NOW, interval_s=5, routes=[route]),
    )

    class Record:
        value = event.to_json_bytes()

    return Record()


def test_status_counts_live_gateways_and_names_lagging_and_silent_ones() -> None:
    ready = next(e for e in all_events() if isinstance(e, ModelReady))
    state = ServingStatus()

    class Ready:
        value = ready.to_json_bytes()

    state.apply(Ready())
    for record in (_beat("gw-1", 3, 1), _beat("gw-2", 3, 2), _beat("gw-3", 2, 1), _beat("gw-4", 3, 60)):
        state.apply(record)

    (row,) = state.report()
    assert row.line() == "iris-clf@champion v3 — 2/3 gateways; lagging: gw-3 (v2); silent: gw-4"
