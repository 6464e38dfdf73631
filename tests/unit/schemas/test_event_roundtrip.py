from __future__ import annotations

import json

import pytest

from schemas.catalog import EVENT_CLASSES, EVENTS_BY_TYPE, parse_any_event, parse_event
from schemas.envelope import CloudEvent
from tests.event_samples import all_events


@pytest.mark.parametrize("event", all_events(), ids=lambda e: e.type)
def test_every_event_round_trips_through_json(event: CloudEvent) -> None:
    raw = event.to_json_bytes()

    assert parse_event(raw, type(event)) == event
    assert parse_any_event(raw) == event
    document = json.loads(raw)
    assert document["specversion"] == "1.0"
    assert document["type"] == event.type
    assert document["time"].endswith("Z") or document["time"].endswith("+00:00")


def test_samples_cover_every_event_type() -> None:
    assert {type(event) for event in all_events()} == set(EVENT_CLASSES)
    assert len(EVENTS_BY_TYPE) == len(EVENT_CLASSES)
    assert all(cls.event_type.endswith(".v1") for cls in EVENT_CLASSES)


def test_unknown_fields_are_ignored_on_read() -> None:
    event = all_events()[2]
    document = json.loads(event.to_json_bytes())
    document["future_attribute"] = {"nested": True}
    document["data"]["added_in_a_later_release"] = [1, 2, 3]

    assert parse_event(json.dumps(document), type(event)) == event


def test_event_ids_are_unique_and_subject_is_the_model() -> None:
    first, second = all_events()[:2]

    assert first.id != second.id
    assert first.subject == "iris-clf"
