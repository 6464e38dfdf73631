"""On-call commands against the real broker, worker and Triton: find, explain and replay dead letters."""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from deploy.stack.kafka_broker import local_client_settings
from deploy.stack.local_stack import LocalStack
from deploy.stack.process import poll_until
from promoter_cli.main import app
from runtime.kafka_topics import ensure_topics
from runtime.settings import KafkaSettings
from schemas.gateway_status import GatewayHeartbeat, GatewayHeartbeatData, ServedRoute
from schemas.model_ready import ModelReady
from schemas.routing_updated import RoutingUpdated
from schemas.topics import GATEWAY_STATUS, MODEL_READY, PROMOTION_DLQ, ROUTING_UPDATED
from tests.event_samples import all_events
from tests.gateway_harness import running_gateways
from tests.integration.worker.test_failures import frozen
from tests.worker_harness import (
    events_about,
    produce,
    read_until,
    register_iris,
    request_bytes,
    running_worker,
    snapshot,
    unique_topics,
)

pytestmark = pytest.mark.integration

READY = "io.modelpromoter.model.ready.v1"
Letter = tuple[str, str, float, str]  # model, reason, age in hours, event id


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def json_lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def _produce_letters(bootstrap: str, topic: str, letters: list[Letter]) -> None:
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [replace(PROMOTION_DLQ, name=topic)])
    now = datetime.now(UTC)
    producer = AIOKafkaProducer(**{**local_client_settings(bootstrap).producer_kwargs(), "linger_ms": 5})
    await producer.start()
    try:
        for model, reason, age_h, event_id in letters:
            headers = {
                "x-dlq-reason-code": reason,
                "x-dlq-last-failure-at": (now - timedelta(hours=age_h)).isoformat(),
                "x-dlq-source-topic": "model.promotion.requested",
                "x-dlq-event-id": event_id,
                "x-dlq-attempts": "1",
            }
            value = b'{"data": {"alias": "champion"}}'
            await producer.send(topic, value, key=model.encode(), headers=[(k, v.encode()) for k, v in headers.items()])
        await producer.flush()
    finally:
        await producer.stop()


def test_filters_select_exactly_the_matching_letters_among_500(local_stack: LocalStack) -> None:
    topics = unique_topics()
    rng = random.Random(5)
    reasons = ["retries_exhausted", "parity_mismatch", "invalid_event"]
    letters = [(f"m-{rng.randrange(5)}", rng.choice(reasons), rng.uniform(0, 6), f"evt-{i}") for i in range(500)]
    asyncio.run(_produce_letters(local_stack.kafka_bootstrap_servers, topics["PROMOTER_TOPIC_PROMOTION_DLQ"], letters))
    env = {**local_stack.client_env(), **topics}

    code, output = cli(env, "dlq", "list", "--json", "--model", "m-3", "--reason", "parity_mismatch", "--since", "2h")
    _, single = cli(env, "dlq", "list", "--json", "--event-id", "evt-42")
    _, everything = cli(env, "dlq", "list", "--json")

    assert code == 0, output
    expected = {e for m, r, age, e in letters if m == "m-3" and r == "parity_mismatch" and age <= 2}
    assert expected, "the sample must contain matching letters"
    assert {row["event_id"] for row in json_lines(output)} == expected
    assert [row["event_id"] for row in json_lines(single)] == ["evt-42"]
    assert len(json_lines(everything)) == 500


def test_a_dead_letter_is_found_explained_and_replayed_once(local_stack: LocalStack, tmp_path: Path) -> None:
    name = f"oncall-{uuid.uuid4().hex[:6]}"
    uri, bootstrap = local_stack.mlflow_tracking_uri, local_stack.kafka_bootstrap_servers
    v1, v2 = register_iris(uri, name), register_iris(uri, name, regularisation=0.05)
    settings = {"PROMOTER_WORKER_MAX_ATTEMPTS": "2", "PROMOTER_TRITON_REQUEST_TIMEOUT_S": "1"}

    with ExitStack() as services:
        worker = services.enter_context(running_worker(local_stack, tmp_path, **settings))
        env = {**local_stack.client_env(), **worker.topics}
        gateways = services.enter_context(running_gateways(local_stack, tmp_path / "gateways", env, ["gw-a", "gw-b"]))
        requested, dlq_topic = worker.topic("promotion_requested"), worker.topic("promotion_dlq")
        asyncio.run(produce(bootstrap, requested, [(name.encode(), request_bytes(name, version=v1))]))
        asyncio.run(events_about(bootstrap, worker.topic("model_ready"), name, event_type=READY))
        event_id = str(uuid.uuid4())
        with frozen(local_stack):  # Triton down during the promotion of v2
            asyncio.run(
                produce(bootstrap, requested, [(name.encode(), request_bytes(name, version=v2, event_id=event_id))])
            )
            asyncio.run(_until_letter(bootstrap, dlq_topic, name))

        code, listed = cli(env, "dlq", "list", "--json", "--model", name)
        _, shown = cli(env, "dlq", "show", event_id)
        requests_before = len(asyncio.run(snapshot(bootstrap, requested)))
        dry_code, dry = cli(env, "dlq", "replay", "--model", name, "--dry-run")
        requests_after_dry_run = len(asyncio.run(snapshot(bootstrap, requested)))
        replay_code, replayed = cli(env, "dlq", "replay", "--model", name, "--yes")
        served = asyncio.run(events_about(bootstrap, worker.topic("model_ready"), name, count=2, event_type=READY))
        gateways_on_v2 = poll_until(lambda: all(g.served(name) == v2 for g in gateways), 30)
        served_before_second = worker.metric("promoter_promotions_total", outcome="served")
        second_code, _ = cli(env, "dlq", "replay", "--model", name, "--yes")
        after = request_bytes(name, alias="challenger", version=v2)  # answered after the second replay was handled
        asyncio.run(produce(bootstrap, requested, [(name.encode(), after)]))
        announced = asyncio.run(events_about(bootstrap, worker.topic("model_ready"), name, count=3, event_type=READY))
        served_after_second = worker.metric("promoter_promotions_total", outcome="served")
        audits = asyncio.run(snapshot(bootstrap, worker.topic("dead_letter_replays")))

    assert code == 0
    (row,) = json_lines(listed)
    assert (row["reason_code"], row["event_id"], row["target"]) == ("retries_exhausted", event_id, f"v{v2}@champion")
    assert "did not answer" in shown
    assert "next step:" in shown
    assert "replay" in shown
    assert dry_code == 0
    assert "would replay 1" in dry
    assert requests_after_dry_run == requests_before, "--dry-run publishes nothing"
    assert replay_code == 0, replayed
    assert [e["data"]["version"] for e in served] == [v1, v2]
    assert gateways_on_v2, "after the replay both gateways serve v2"
    assert second_code == 0
    assert [e["data"]["alias"] for e in announced] == ["champion", "champion", "challenger"], (
        "the second replay is answered by the first replay's model.ready: nothing new is announced"
    )
    assert served_after_second == served_before_second + 1, "only the challenger was served"
    assert len(audits) == 2
    audit = json.loads(audits[0].value)
    assert audit["data"]["event_id"] == event_id
    assert audit["data"]["replay_count"] == 1


async def _until_letter(bootstrap: str, topic: str, model: str) -> None:
    await read_until(bootstrap, topic, lambda r: any(rec.key == model.encode() for rec in r), timeout_s=60)


def test_a_letter_at_the_replay_limit_is_refused(local_stack: LocalStack) -> None:
    topics = unique_topics()
    bootstrap, dlq = local_stack.kafka_bootstrap_servers, topics["PROMOTER_TOPIC_PROMOTION_DLQ"]
    asyncio.run(_produce_letters(bootstrap, dlq, [("looping", "retries_exhausted", 0.1, "evt-loop")]))
    env = {**local_stack.client_env(), **topics}

    code, output = cli(env, "dlq", "replay", "--event-id", "evt-loop", "--yes", "--max-replays", "0")

    assert code == 1
    assert "refused" in output
    assert "replayed 0 times already (limit 0)" in output
    assert asyncio.run(snapshot(bootstrap, topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"])) == []


def test_status_reports_a_gateway_that_stopped_acking(local_stack: LocalStack) -> None:
    topics = unique_topics()
    bootstrap = local_stack.kafka_bootstrap_servers
    ready = next(e for e in all_events() if isinstance(e, ModelReady))
    route = ServedRoute(model_name="iris-clf", alias="champion", version=3, triton_model_name="t3", generation=7)

    def beat(gateway: str, seconds_ago: float, interval_s: float) -> bytes:
        data = GatewayHeartbeatData(
            gateway_id=gateway, ready=True, started_at=datetime.now(UTC), interval_s=interval_s, routes=[route]
        )
        when = datetime.now(UTC) - timedelta(seconds=seconds_ago)
        return GatewayHeartbeat(source="/tests", time=when, data=data).to_json_bytes()

    async def publish() -> None:
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        ready_topic, status_topic = topics["PROMOTER_TOPIC_MODEL_READY"], topics["PROMOTER_TOPIC_GATEWAY_STATUS"]
        await ensure_topics(kafka, [replace(MODEL_READY, name=ready_topic), replace(GATEWAY_STATUS, name=status_topic)])
        await produce(bootstrap, ready_topic, [(b"iris-clf", ready.to_json_bytes())])
        await produce(bootstrap, status_topic, [(b"gw-1", beat("gw-1", 1, 300)), (b"gw-2", beat("gw-2", 86400, 5))])

    asyncio.run(publish())
    env = {**local_stack.client_env(), **topics}
    code, output = cli(env, "status")
    json_code, as_json = cli(env, "status", "--json")

    assert code == 0, output
    clock, line = output.splitlines()  # what it prints for people, and not one log line
    assert re.fullmatch(r"\d\d:\d\d:\d\d", clock)
    assert line == "iris-clf@champion v3 — 1/1 gateways; silent: gw-2"
    assert json_code == 0, as_json
    (document,) = json_lines(as_json)
    assert document["aliases"] == [
        {
            "model": "iris-clf",
            "alias": "champion",
            "version": 3,
            "on_version": ["gw-1"],
            "lagging": {},
            "silent": ["gw-2"],
        }
    ]


def test_route_sets_and_clears_a_shadow_keeping_the_weights(local_stack: LocalStack) -> None:
    topics = unique_topics()
    bootstrap, routing_topic = local_stack.kafka_bootstrap_servers, topics["PROMOTER_TOPIC_ROUTING_UPDATED"]
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    asyncio.run(ensure_topics(kafka, [replace(ROUTING_UPDATED, name=routing_topic)]))
    env = {**local_stack.client_env(), **topics}

    steps = [
        cli(env, "route", "iris-clf", "--weights", "champion=90,challenger=10"),
        cli(env, "route", "iris-clf", "--shadow", "candidate", "--shadow-percent", "5"),
        cli(env, "route", "iris-clf", "--weights", "champion=50,challenger=50"),
        cli(env, "route", "iris-clf", "--no-shadow"),
    ]
    published = [
        RoutingUpdated.model_validate_json(r.value).data for r in asyncio.run(snapshot(bootstrap, routing_topic))
    ]

    assert [code for code, _ in steps] == [0, 0, 0, 0], steps
    assert [(p.weights, p.shadow_alias, p.shadow_sample_percent) for p in published] == [
        ({"champion": 90, "challenger": 10}, None, 0.0),
        ({"champion": 90, "challenger": 10}, "candidate", 5.0),
        ({"champion": 50, "challenger": 50}, "candidate", 5.0),
        ({"champion": 50, "challenger": 50}, None, 0.0),
    ]
    generations = [p.generation for p in published]
    assert generations == sorted(set(generations)), "every policy supersedes the one it was built from"
