"""Topic creation at a service's start, against a fake admin client: create, check only, refusals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.admin import NewTopic
from aiokafka.errors import ClusterAuthorizationFailedError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from runtime.kafka_topics import TopicsError, prepare_topics
from runtime.settings import KafkaSettings, TopicSettings

SPECS = TopicSettings().specs()
NAMES = [spec.name for spec in SPECS]


@dataclass
class CreateTopicsResponse:
    topic_errors: list[tuple[str, int, str | None]]


@dataclass
class FakeAdmin:
    """A broker holding ``topics``; ``answers`` overrides its error code per topic on a create."""

    topics: dict[str, int] = field(default_factory=dict)
    answers: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)

    async def list_topics(self) -> list[str]:
        return list(self.topics)

    async def create_topics(self, new_topics: list[NewTopic]) -> Any:
        errors = []
        for topic in new_topics:
            self.requested.append(topic.name)
            code, message = self.answers.get(topic.name, (0, None))
            if code == 0:
                self.topics[topic.name] = topic.num_partitions
            errors.append((topic.name, code, message))
        return CreateTopicsResponse(errors)

    async def describe_topics(self, topics: list[str]) -> list[Any]:
        return [{"topic": t, "partitions": [{}] * self.topics[t]} for t in topics if t in self.topics]


async def _prepare(admin: FakeAdmin, *, create: bool) -> list[str]:
    return await prepare_topics(admin, SPECS, create=create, replication_factor=1, timeout_s=1.0)


async def test_creates_only_the_missing_topics_with_their_partitions() -> None:
    admin = FakeAdmin(topics={NAMES[0]: 6})
    assert await _prepare(admin, create=True) == NAMES[1:]
    assert admin.requested == NAMES[1:]
    assert admin.topics == {spec.name: spec.partitions for spec in SPECS}


async def test_a_topic_another_service_created_meanwhile_is_fine() -> None:
    admin = FakeAdmin(answers={NAMES[2]: (TopicAlreadyExistsError.errno, "Topic already exists.")})
    admin.topics[NAMES[2]] = SPECS[2].partitions  # the other service's topic

    async def list_before_the_race() -> list[str]:
        return []

    admin.list_topics = list_before_the_race  # type: ignore[method-assign]
    assert await _prepare(admin, create=True) == NAMES


async def test_an_authorization_failure_is_a_start_up_error_naming_the_topic_and_the_way_out() -> None:
    admin = FakeAdmin(
        topics={name: 1 for name in NAMES[1:]},
        answers={NAMES[0]: (TopicAuthorizationFailedError.errno, "Authorization failed.")},
    )
    with pytest.raises(TopicsError) as raised:
        await _prepare(admin, create=True)
    message = str(raised.value)
    assert f"{NAMES[0]}: TOPIC_AUTHORIZATION_FAILED (Authorization failed.)" in message
    assert "PROMOTER_KAFKA_CREATE_TOPICS=false" in message


async def test_a_refusal_without_a_broker_message_is_described() -> None:
    admin = FakeAdmin(answers={NAMES[3]: (ClusterAuthorizationFailedError.errno, None)})
    with pytest.raises(TopicsError, match=rf"{NAMES[3]}: CLUSTER_AUTHORIZATION_FAILED \(.+\)"):
        await _prepare(admin, create=True)


async def test_check_only_creates_nothing_and_names_every_missing_topic() -> None:
    admin = FakeAdmin(topics={NAMES[0]: 6, NAMES[1]: 1})
    with pytest.raises(TopicsError) as raised:
        await _prepare(admin, create=False)
    assert admin.requested == []
    message = str(raised.value)
    assert message.startswith(f"these topics do not exist on the broker: {', '.join(NAMES[2:])}. ")
    assert "PROMOTER_KAFKA_CREATE_TOPICS=false" in message


async def test_check_only_passes_when_every_topic_exists() -> None:
    admin = FakeAdmin(topics={name: 1 for name in NAMES})
    assert await _prepare(admin, create=False) == []


def test_creating_topics_is_on_by_default_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KafkaSettings().create_topics is True
    monkeypatch.setenv("PROMOTER_KAFKA_CREATE_TOPICS", "false")
    assert KafkaSettings().create_topics is False
