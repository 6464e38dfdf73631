"""The ingress on the 31 real MLflow deliveries (fake Kafka): verify, map, dedupe, answer."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import SecretStr

from ingress.deliveries import event_id_for
from ingress.receiver import WebhookReceiver
from ingress.settings import IngressSettings
from runtime.metrics import new_registry
from schemas.mlflow_webhook import compute_signature
from schemas.prepared_version import PrepareRequested
from schemas.promotion_requested import PromotionRequested
from tests.paths import WEBHOOK_DELIVERIES

FIXTURE = WEBHOOK_DELIVERIES
SECRET = "whsec-test-123"


def _deliveries() -> list[tuple[dict[str, str], bytes]]:
    if not FIXTURE.exists():
        pytest.fail(f"fixture missing: {FIXTURE}")
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    return [(row["headers"], base64.b64decode(row["body_b64"])) for row in rows]


class FakeKafka:
    def __init__(self, failures: int = 0) -> None:
        self.events: list[PromotionRequested] = []
        self.preparations: list[PrepareRequested] = []
        self.failures = failures

    async def publish(self, event: PromotionRequested | PrepareRequested) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker down")
        if isinstance(event, PrepareRequested):
            self.preparations.append(event)
        else:
            self.events.append(event)


def receiver(kafka: FakeKafka, now: float, **settings: Any) -> WebhookReceiver:
    config = IngressSettings(webhook_secrets=[SecretStr(s) for s in settings.pop("secrets", [SECRET])], **settings)
    return WebhookReceiver(config, kafka.publish, new_registry(process_metrics=False), clock=lambda: now)


def _signed(
    payload: dict[str, Any], delivery_id: str, timestamp: int, secret: str = SECRET
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    return {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": str(timestamp),
        "X-MLflow-Signature": compute_signature(secret, delivery_id, str(timestamp), body),
    }, body


async def test_every_captured_delivery_is_answered_by_the_policy() -> None:
    kafka = FakeKafka()
    deliveries = _deliveries()
    now = float(deliveries[0][0]["X-MLflow-Timestamp"])
    ingress = receiver(kafka, now, max_timestamp_skew_s=3600)

    answers = [await ingress.receive(headers, body) for headers, body in deliveries]

    statuses = [a.status for a in answers]
    assert statuses.count(401) == 1, "the one unsigned capture"
    assert statuses.count(202) == len(kafka.events)
    kinds = {
        (json.loads(b)["entity"], json.loads(b)["action"])
        for (_, b), a in zip(deliveries, answers, strict=True)
        if a.status == 202
    }
    assert kinds == {("model_version_alias", "created"), ("model_version_alias", "deleted")}
    assert all(a.status in (200, 202, 401) for a in answers)
    first = kafka.events[0]
    assert first.data.origin == "mlflow_webhook"
    assert first.id == event_id_for(first.data.requester.removeprefix("mlflow-webhook:"))
    deleted = [e for e in kafka.events if e.data.action == "unserve"]
    assert deleted
    assert all(e.data.version is None for e in kafka.events), "aliases are re-read by the worker, never trusted"


async def test_tampered_body_wrong_secret_and_stale_timestamp_get_401() -> None:
    headers, body = _signed(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "t",
            "data": {"name": "m", "alias": "champion", "version": "1"},
        },
        "d-1",
        1_000,
    )
    kafka = FakeKafka()

    tampered = await receiver(kafka, 1_000).receive(headers, body.replace(b"champion", b"challenger"))
    wrong = await receiver(kafka, 1_000, secrets=["another"]).receive(headers, body)
    stale = await receiver(kafka, 1_000 + 301).receive(headers, body)
    missing = await receiver(kafka, 1_000).receive(
        {k: v for k, v in headers.items() if k != "X-MLflow-Signature"}, body
    )

    assert [a.status for a in (tampered, wrong, stale, missing)] == [401] * 4
    assert "does not match the body" in tampered.body["error"]
    assert "301 s from now; allowed skew is 300 s" in stale.body["error"]
    assert "missing header X-MLflow-Signature" in missing.body["error"]
    assert kafka.events == []


async def test_rotation_accepts_either_secret() -> None:
    kafka = FakeKafka()
    payload = {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "t",
        "data": {"name": "m", "alias": "a", "version": "1"},
    }
    ingress = receiver(kafka, 50, secrets=["new-secret", "old-secret"])

    old = await ingress.receive(*_signed(payload, "d-old", 50, secret="old-secret"))
    new = await ingress.receive(*_signed(payload, "d-new", 50, secret="new-secret"))

    assert (old.status, new.status) == (202, 202)


async def test_a_retried_delivery_publishes_once() -> None:
    kafka = FakeKafka()
    delivery = _signed(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "t",
            "data": {"name": "m", "alias": "a", "version": "2"},
        },
        "d-2",
        9,
    )
    ingress = receiver(kafka, 9)

    first, again = await ingress.receive(*delivery), await ingress.receive(*delivery)

    assert (first.status, again.status) == (202, 200)
    assert again.body == {"status": "duplicate", "event_id": first.body["event_id"]}
    assert len(kafka.events) == 1


async def test_kafka_down_answers_503_and_the_retry_goes_through() -> None:
    kafka = FakeKafka(failures=1)
    delivery = _signed(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "t",
            "data": {"name": "m", "alias": "a", "version": "2"},
        },
        "d-3",
        9,
    )
    ingress = receiver(kafka, 9)

    down, retried = await ingress.receive(*delivery), await ingress.receive(*delivery)

    assert down.status == 503
    assert "MLflow will retry" in down.body["error"]
    assert retried.status == 202
    assert len(kafka.events) == 1


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (
            {
                "entity": "model_version_alias",
                "action": "created",
                "timestamp": "t",
                "data": {"name": "m", "alias": "latest"},
            },
            422,
            "data.alias",
        ),
        (
            {"entity": "model_version_alias", "action": "created", "timestamp": "t", "data": {"alias": "a"}},
            422,
            "data.model_name",
        ),
        ({"action": "created", "timestamp": "t", "data": {}}, 422, "entity: Field required"),
        (
            {"entity": "registered_model", "action": "created", "timestamp": "t", "data": {"name": "m"}},
            200,
            "does not change what is served",
        ),
    ],
)
async def test_signed_but_unusable_events_name_the_field(payload: dict[str, Any], status: int, words: str) -> None:
    kafka = FakeKafka()
    answer = await receiver(kafka, 5).receive(*_signed(payload, "d-4", 5))

    assert answer.status == status
    assert words in json.dumps(answer.body)
    assert kafka.events == []


async def test_version_created_and_approval_tag_promote_only_when_configured() -> None:
    kafka = FakeKafka()
    created = {"entity": "model_version", "action": "created", "timestamp": "t", "data": {"name": "m", "version": "4"}}
    tagged = {
        "entity": "model_version_tag",
        "action": "set",
        "timestamp": "t",
        "data": {"name": "m", "version": "4", "key": "validation_status", "value": "approved"},
    }

    ignored = await receiver(kafka, 5).receive(*_signed(created, "d-5", 5))
    auto = await receiver(kafka, 5, promote_on_version_created="staging").receive(*_signed(created, "d-6", 5))
    approved = await receiver(
        kafka, 5, promote_on_tag="validation_status=approved", promote_on_tag_alias="prod"
    ).receive(*_signed(tagged, "d-7", 5))

    assert ignored.status == 200
    assert (auto.status, approved.status) == (202, 202)
    assert [(e.data.alias, e.data.version) for e in kafka.events] == [("staging", 4), ("prod", 4)]


@pytest.mark.parametrize(("models", "prepared"), [("*", True), ("other,m", True), ("other", False)])
async def test_version_created_is_prepared_for_the_configured_models(models: str, prepared: bool) -> None:
    kafka = FakeKafka()
    created = {"entity": "model_version", "action": "created", "timestamp": "t", "data": {"name": "m", "version": "4"}}
    settings = IngressSettings.model_validate({"prepare_on_version_created": models})

    answer = await receiver(kafka, 5, prepare_on_version_created=settings.prepare_on_version_created).receive(
        *_signed(created, "d-8", 5)
    )

    assert kafka.events == [], "a preparation never serves an alias"
    if prepared:
        assert answer.status == 202
        (event,) = kafka.preparations
        assert (event.type, event.data.model_name, event.data.version) == (
            "io.modelpromoter.prepare.requested.v1",
            "m",
            4,
        )
        assert event.data.origin == "mlflow_webhook"
    else:
        assert answer.status == 200
        assert "PROMOTER_INGRESS_PREPARE_ON_VERSION_CREATED" in answer.body["reason"]
        assert kafka.preparations == []


async def test_promote_on_version_created_wins_over_prepare() -> None:
    kafka = FakeKafka()
    created = {"entity": "model_version", "action": "created", "timestamp": "t", "data": {"name": "m", "version": "4"}}

    await receiver(kafka, 5, promote_on_version_created="staging", prepare_on_version_created=["*"]).receive(
        *_signed(created, "d-9", 5)
    )

    assert [(e.data.alias, e.data.version) for e in kafka.events] == [("staging", 4)]
    assert kafka.preparations == []


def test_the_ingress_refuses_to_run_without_a_secret() -> None:
    with pytest.raises(ValueError, match="PROMOTER_INGRESS_WEBHOOK_SECRETS is required"):
        WebhookReceiver(IngressSettings(), FakeKafka().publish, new_registry(process_metrics=False))


async def test_the_workers_own_promoter_tags_never_promote_whatever_the_tag_policy_says() -> None:
    kafka = FakeKafka()
    written_back = {
        "entity": "model_version_tag",
        "action": "set",
        "timestamp": "t",
        "data": {"name": "m", "version": "4", "key": "promoter.status", "value": "serving"},
    }
    policy = {"promote_on_tag": "promoter.status=serving", "promote_on_tag_alias": "prod"}

    answer = await receiver(kafka, 5, **policy).receive(*_signed(written_back, "d-8", 5))

    assert answer.status == 200
    assert answer.body["status"] == "ignored"
    assert "written back by the promoter worker" in answer.body["reason"]
    assert kafka.events == []
