"""Property tests: the parsers never raise anything but InvalidEventError, whatever the bytes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.catalog import InvalidEventError, parse_any_event
from schemas.envelope import CloudEvent
from tests.event_samples import all_events

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
SAMPLES = [json.loads(event.to_json_bytes()) for event in all_events()]


def _parse_outcome(raw: bytes | str) -> CloudEvent | InvalidEventError:
    try:
        return parse_any_event(raw)
    except InvalidEventError as error:
        return error


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes(raw: bytes) -> None:
    outcome = _parse_outcome(raw)
    assert isinstance(outcome, CloudEvent) or outcome.message


@settings(max_examples=300)
@given(json_values)
def test_arbitrary_json_documents(document: Any) -> None:
    outcome = _parse_outcome(json.dumps(document))
    assert isinstance(outcome, CloudEvent) or outcome.message


@settings(max_examples=500)
@given(
    st.sampled_from(SAMPLES),
    st.sampled_from(["data", "envelope"]),
    st.text(max_size=12),
    json_values,
)
def test_valid_events_with_one_field_replaced(sample: dict[str, Any], where: str, key: str, value: Any) -> None:
    document = json.loads(json.dumps(sample))
    target = document["data"] if where == "data" else document
    existing = sorted(target)
    target[existing[hash(key) % len(existing)] if key == "" else key] = value

    outcome = _parse_outcome(json.dumps(document))

    if isinstance(outcome, CloudEvent):
        assert outcome.type == document["type"]


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=100_000))
def test_deeply_nested_input_is_rejected_not_crashing(depth: int) -> None:
    raw = '{"type": "io.modelpromoter.model.ready.v1", "data": ' + "[" * depth + "]" * depth + "}"
    assert isinstance(_parse_outcome(raw), InvalidEventError)
