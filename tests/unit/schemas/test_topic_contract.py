"""Which events travel on which topic (``TopicSpec.event_types``): the readers accept exactly these."""

from __future__ import annotations

from collections import Counter

from schemas.catalog import EVENT_CLASSES
from schemas.topics import ALL_TOPICS


def test_every_event_type_travels_on_exactly_one_topic() -> None:
    carried = Counter(cls for topic in ALL_TOPICS for cls in topic.event_types)
    assert set(carried) == set(EVENT_CLASSES)
    assert [cls.event_type for cls, topics in carried.items() if topics != 1] == []
