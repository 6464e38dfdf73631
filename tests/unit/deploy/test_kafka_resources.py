"""The Strimzi topics and users are generated from schemas/topics.py, committed as generated, and least-privilege."""

from __future__ import annotations

from typing import Any

import yaml
from faststream.kafka.publisher.usecase import LogicPublisher
from faststream.kafka.subscriber.usecase import LogicSubscriber

from deploy import kafka_resources
from runtime.settings import TopicSettings
from schemas import topics
from worker.app import build_app
from worker.settings import WorkerSettings

#: What no service may do to a topic: the topic operator owns them.
ADMIN_OPERATIONS = {"Create", "Delete", "Alter", "AlterConfigs", "All", "ClusterAction"}


def _documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_the_committed_manifests_are_what_the_generator_writes() -> None:
    for path, text in kafka_resources.rendered().items():
        assert path.read_text() == text, f"{path.name} is stale: run `python -m deploy.kafka_resources --write`"
    assert kafka_resources.main([]) == 0


def test_every_topic_is_declared_with_its_contract() -> None:
    declared = {d["metadata"]["name"]: d["spec"] for d in _documents(kafka_resources.render_topics())}
    assert list(declared) == [spec.name for spec in topics.ALL_TOPICS]
    assert set(declared) == {spec.name for spec in TopicSettings().specs()}, "the services' default topic names"
    for spec in topics.ALL_TOPICS:
        config = declared[spec.name]["config"]
        assert declared[spec.name]["partitions"] == spec.partitions
        assert config["cleanup.policy"] == ("compact" if spec.compacted else "delete")
        assert config["retention.ms"] == str(spec.retention_ms)
        assert int(config["min.insync.replicas"]) < declared[spec.name]["replicas"], "one broker may be down"


def test_users_may_only_read_and_write_their_own_topics_and_group() -> None:
    users = {d["metadata"]["name"]: d["spec"] for d in _documents(kafka_resources.render_users())}
    assert set(users) == {"promoter-worker", "promoter-gateway", "promoter-ingress", "promoter-oncall"}
    topic_names = {spec.name for spec in topics.ALL_TOPICS}
    grants: dict[str, dict[tuple[str, str], set[str]]] = {}
    for user, spec in users.items():
        assert spec["authentication"] == {"type": "scram-sha-512"}
        for acl in spec["authorization"]["acls"]:
            resource = acl["resource"]
            assert resource["patternType"] == "literal", "no prefix or wildcard grants"
            assert not ADMIN_OPERATIONS & set(acl["operations"]), f"{user} may administer {resource['name']}"
            if resource["type"] == "topic":
                assert resource["name"] in topic_names
            grants.setdefault(user, {})[(resource["type"], resource["name"])] = set(acl["operations"])
    assert grants["promoter-ingress"] == {("topic", topics.PROMOTION_REQUESTED.name): {"Describe", "Write"}}
    assert grants["promoter-gateway"] == {
        ("topic", topics.MODEL_READY.name): {"Describe", "Read"},
        ("topic", topics.ROUTING_UPDATED.name): {"Describe", "Read"},
        ("topic", topics.GATEWAY_STATUS.name): {"Describe", "Write"},
    }
    worker = grants["promoter-worker"]
    assert worker[("group", WorkerSettings().group_id)] == {"Read"}
    assert worker[("topic", topics.PROMOTION_REQUESTED.name)] == {"Describe", "Read", "Write"}, "reconcile corrections"
    assert worker[("topic", topics.GATEWAY_STATUS.name)] == {"Describe", "Read", "Write"}, "its fleet status"
    assert worker[("topic", topics.ROUTING_UPDATED.name)] == {"Describe"}, "only listed at start-up"
    assert [k for k in grants["promoter-oncall"] if k[0] == "group"] == [], "the promoter command reads without a group"


def test_the_worker_may_use_every_topic_its_app_declares() -> None:
    broker = build_app().broker
    assert broker is not None
    (worker,) = [s for s in kafka_resources.SERVICES if s.user == "promoter-worker"]
    grants = {acl["resource"]["name"]: set(acl["operations"]) for acl in worker.acls()}
    published = {p.topic for p in broker.publishers if isinstance(p, LogicPublisher)}
    consumed = {t.name for s in broker.subscribers if isinstance(s, LogicSubscriber) for t in s.topics}
    assert len(published) == len(broker.publishers), "every publisher is a Kafka topic's"
    assert published == {spec.name for spec in worker.writes}, "declared (AsyncAPI) and granted writes agree"
    assert all("Write" in grants[topic] for topic in published), grants
    assert all("Read" in grants[topic] for topic in consumed), grants
