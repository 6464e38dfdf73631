"""The History page's spans: the log's ordering rule, restatements, stops and rejections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiokafka import ConsumerRecord

from console.serving_history import ServingHistory
from schemas.envelope import CloudEvent
from schemas.model_ready import ModelReady, ServingStopped, ServingStoppedData
from schemas.promotion_rejected import PromotionRejected, PromotionRejectedData
from tests.event_samples import all_events

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _record(event: CloudEvent) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("model.ready", 0, 0, 0, 0, None, event.to_json_bytes(), None, 0, 0, [])


def _ready(version: int, generation: int, minutes: int, alias: str = "champion") -> ModelReady:
    (sample,) = [e for e in all_events() if isinstance(e, ModelReady)]
    data = sample.data.model_copy(
        update={"version": version, "generation": generation, "alias": alias, "triton_model_name": f"m--v{version}"}
    )
    return ModelReady(source="/t", subject="iris-clf", time=T0 + timedelta(minutes=minutes), data=data)


def _history(*events: CloudEvent) -> ServingHistory:
    history = ServingHistory()
    for event in events:
        history.apply(_record(event))
    return history


def test_a_new_version_closes_the_previous_span_at_its_time() -> None:
    history = _history(_ready(1, 1, 0), _ready(2, 2, 30))
    spans = history.spans("iris-clf")
    assert [(s.version, s.start, s.end) for s in spans] == [
        (1, T0, T0 + timedelta(minutes=30)),
        (2, T0 + timedelta(minutes=30), None),
    ]


def test_a_stale_record_and_a_restatement_change_nothing() -> None:
    history = _history(_ready(1, 1, 0), _ready(2, 3, 30), _ready(9, 2, 40), _ready(2, 4, 50))
    assert [(s.version, s.end) for s in history.spans("iris-clf")] == [(1, T0 + timedelta(minutes=30)), (2, None)]


def test_a_stopped_alias_ends_its_span_and_aliases_are_independent() -> None:
    stop = ServingStopped(
        source="/t",
        subject="iris-clf",
        time=T0 + timedelta(minutes=20),
        data=ServingStoppedData(model_name="iris-clf", alias="challenger", generation=3),
    )
    history = _history(_ready(1, 1, 0), _ready(2, 2, 10, alias="challenger"), stop)
    assert [(s.alias, s.version, s.end) for s in history.spans("iris-clf")] == [
        ("champion", 1, None),
        ("challenger", 2, T0 + timedelta(minutes=20)),
    ]


def test_rejections_are_kept_per_model_with_their_reason() -> None:
    rejected = PromotionRejected(
        source="/t",
        subject="other",
        time=T0,
        data=PromotionRejectedData(model_name="other", version=5, reason_code="parity_mismatch", message="differs"),
    )
    history = _history(_ready(1, 1, 0), rejected)
    assert history.models() == ["iris-clf", "other"]
    (rejection,) = history.rejections_of("other")
    assert (rejection.alias, rejection.version, rejection.reason_code) == (None, 5, "parity_mismatch")
    assert history.rejections_of("iris-clf") == []
