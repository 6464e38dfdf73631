"""The console's pages, driven by Streamlit's AppTest against the real local stack.

Serving, History and Dead letters read hand-written events on topics of their own (no process of this
module's own). Try a model needs a served model: it is tested in tests/integration/gateway/test_serving.py,
on that module's worker and gateways.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from deploy.stack.kafka_broker import local_client_settings
from deploy.stack.local_stack import LocalStack
from runtime.kafka_topics import ensure_topics
from runtime.settings import KafkaSettings, TopicSettings
from schemas.fleet_status import EndpointStatus, WorkerFleetStatus, WorkerFleetStatusData
from schemas.gateway_status import GatewayHeartbeat, GatewayHeartbeatData, ServedRoute
from schemas.model_ready import ColumnSpec, ModelReady, ModelReadyData, SignatureSummary, TensorSpec
from schemas.promotion_rejected import PromotionRejected, PromotionRejectedData
from schemas.routing_updated import RoutingUpdated, RoutingUpdatedData
from tests.console_harness import auto_reruns, charts, console_page, texts
from tests.gateway_harness import IRIS_FEATURES
from tests.worker_harness import produce, snapshot, unique_topics

pytestmark = pytest.mark.integration

SOURCE = "/tests/console"


@dataclass
class Topics:
    env: dict[str, str]
    bootstrap: str

    def name(self, key: str) -> str:
        return self.env[f"PROMOTER_TOPIC_{key.upper()}"]


@pytest.fixture(scope="module")
def topics(local_stack: LocalStack) -> Topics:
    """Every topic, fresh, created as the services would create them."""
    names = unique_topics()
    settings = TopicSettings.model_validate({k.removeprefix("PROMOTER_TOPIC_").lower(): v for k, v in names.items()})
    bootstrap = local_stack.kafka_bootstrap_servers
    asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), settings.specs()))
    return Topics({**local_stack.client_env(), **names}, bootstrap)


def use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The console's environment (AppTest runs the page in this process)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def signature() -> SignatureSummary:
    return SignatureSummary(
        inputs=[TensorSpec(name="input", datatype="FP64", shape=[4])],
        outputs=[TensorSpec(name="output", datatype="INT64", shape=[1])],
        columns=[ColumnSpec(name=name, type="double") for name in IRIS_FEATURES],
    )


def ready(model: str, alias: str, version: int, generation: int, at: datetime) -> bytes:
    data = ModelReadyData(
        model_name=model,
        alias=alias,
        version=version,
        triton_model_name=f"{model}--v{version}",
        artifact_sha256="a" * 64,
        flavor="sklearn",
        signature=signature(),
        generation=generation,
    )
    return ModelReady(source=SOURCE, subject=model, time=at, data=data).to_json_bytes()


def heartbeat(gateway: str, routes: list[tuple[str, str, int]], at: datetime, interval_s: float = 5.0) -> bytes:
    served = [
        ServedRoute(model_name=m, alias=a, version=v, triton_model_name=f"{m}--v{v}", generation=1)
        for m, a, v in routes
    ]
    data = GatewayHeartbeatData(gateway_id=gateway, ready=True, started_at=at, interval_s=interval_s, routes=served)
    return GatewayHeartbeat(source=SOURCE, time=at, data=data).to_json_bytes()


def gateway_states(frame: Any) -> dict[str, tuple[str, str]]:
    return dict(zip(frame["gateway"], zip(frame["routes"], frame["state"], strict=True), strict=True))


def test_serving_shows_each_gateway_the_policy_as_a_chart_and_the_endpoints(
    topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, now = f"con-serve-{uuid.uuid4().hex[:6]}", datetime.now(UTC)
    policy = RoutingUpdatedData(
        model_name=model, weights={"champion": 90, "challenger": 10}, shadow_alias="candidate",
        shadow_sample_percent=5.0, generation=1,
    )  # fmt: skip
    fleet = WorkerFleetStatusData(
        replica_id="worker-a",
        interval_s=15.0,
        expected_models=2,
        endpoints=[
            EndpointStatus(endpoint="127.0.0.1:18000", state="in_sync", since=now),
            EndpointStatus(endpoint="127.0.0.1:18002", state="down", since=now, error="connection refused"),
        ],
    )
    key = model.encode()
    asyncio.run(produce(topics.bootstrap, topics.name("model_ready"), [
        (key, ready(model, "champion", 3, 1, now)), (key, ready(model, "challenger", 4, 2, now)),
    ]))  # fmt: skip
    asyncio.run(produce(topics.bootstrap, topics.name("gateway_status"), [
        # Live for minutes (a loaded broker took 30 s to take these records), silent for a day.
        (b"gw-on", heartbeat("gw-on", [(model, "champion", 3), (model, "challenger", 4)], now, interval_s=300)),
        (b"gw-lag", heartbeat("gw-lag", [(model, "champion", 2)], now, interval_s=300)),
        (b"gw-gone", heartbeat("gw-gone", [(model, "champion", 3)], now - timedelta(days=1))),
        (b"worker/worker-a", WorkerFleetStatus(source=SOURCE, time=now, data=fleet).to_json_bytes()),
    ]))  # fmt: skip
    routing = RoutingUpdated(source=SOURCE, subject=model, data=policy).to_json_bytes()
    asyncio.run(produce(topics.bootstrap, topics.name("routing_updated"), [(key, routing)]))
    use(monkeypatch, topics.env)

    at = console_page("serving").run()

    assert not at.exception, at.exception
    shown = texts(at)
    assert "**@champion** should serve **v3** — 1/2 live gateways" in shown
    assert "**@challenger** should serve **v4** — 1/2 live gateways" in shown
    challenger, champion = (gateway_states(frame.value) for frame in at.dataframe)  # aliases in name order
    assert champion == {"gw-on": ("v3", "✅ on version"), "gw-lag": ("v2", "⚠️ lagging"), "gw-gone": ("?", "🔇 silent")}
    assert challenger["gw-lag"] == ("not routed", "⚠️ lagging")
    ((title, rows),) = charts(at)
    assert title == f"{model}: traffic policy"
    assert sorted((r["row"], r["alias"], r["percent"]) for r in rows) == [
        ("requests", "challenger", 10.0), ("requests", "champion", 90.0), ("shadow copies", "candidate", 5.0),
    ]  # fmt: skip
    assert "Triton 127.0.0.1:18002** :red[down]" in shown
    assert "connection refused" in shown


def test_history_draws_spans_and_rejections_and_ignores_stale_records(
    topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, t0 = f"con-hist-{uuid.uuid4().hex[:6]}", datetime.now(UTC) - timedelta(hours=2)
    key = model.encode()
    asyncio.run(produce(topics.bootstrap, topics.name("model_ready"), [
        (key, ready(model, "champion", 1, 1, t0)),
        (key, ready(model, "champion", 2, 3, t0 + timedelta(minutes=30))),
        (key, ready(model, "champion", 9, 2, t0 + timedelta(minutes=40))),  # stale: generation 2 < 3
    ]))  # fmt: skip
    rejected = PromotionRejectedData(
        model_name=model, alias="champion", version=3, reason_code="parity_mismatch", message="v3 disagrees with v3"
    )
    rejection = PromotionRejected(source=SOURCE, subject=model, time=t0 + timedelta(hours=1), data=rejected)
    asyncio.run(produce(topics.bootstrap, topics.name("model_rejected"), [(key, rejection.to_json_bytes())]))
    use(monkeypatch, topics.env)

    at = console_page("history").run()
    at.selectbox[0].set_value(model).run()

    assert not at.exception, at.exception
    served, rejections = at.dataframe[0].value, at.dataframe[1].value
    assert list(zip(served["version"], served["state"], strict=True)) == [("v1", "replaced"), ("v2", "served now")]
    assert served["end"][0] == (t0 + timedelta(minutes=30)).isoformat()
    assert list(zip(rejections["version"], rejections["reason_code"], strict=True)) == [("v3", "parity_mismatch")]
    ((title, rows),) = charts(at)
    assert title == f"{model}: served versions and rejections"
    assert sorted(str(r.get("version")) for r in rows) == ["v1", "v2", "v3"]  # two spans, one rejection mark


async def _letters(topics: Topics, letters: list[tuple[str, str, str]]) -> None:
    """Dead letters as the worker writes them (model, reason code, event id), from the requests topic."""
    producer = AIOKafkaProducer(**local_client_settings(topics.bootstrap).producer_kwargs())
    await producer.start()
    try:
        for model, reason, event_id in letters:
            headers = {
                "x-dlq-reason-code": reason,
                "x-dlq-reason": f"{reason} for {model}",
                "x-dlq-last-failure-at": datetime.now(UTC).isoformat(),
                "x-dlq-source-topic": topics.name("promotion_requested"),
                "x-dlq-event-id": event_id,
                "x-dlq-attempts": "5",
            }
            value = json.dumps({"id": event_id, "data": {"model_name": model, "alias": "champion"}}).encode()
            await producer.send_and_wait(
                topics.name("promotion_dlq"),
                value,
                key=model.encode(),
                headers=[(k, v.encode()) for k, v in headers.items()],
            )
    finally:
        await producer.stop()


def test_dead_letters_filter_explain_and_replay_only_when_allowed(
    topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, other = f"con-dlq-{uuid.uuid4().hex[:6]}", f"con-dlq-{uuid.uuid4().hex[:6]}"
    event_id = str(uuid.uuid4())
    asyncio.run(_letters(topics, [(model, "retries_exhausted", event_id), (other, "parity_mismatch", "x-1")]))
    use(monkeypatch, {**topics.env, "PROMOTER_CONSOLE_ALLOW_REPLAY": "false"})

    locked = console_page("dead-letters").run()
    locked.text_input(key="dlq.model").set_value(model).run()
    locked.text_input(key="dlq.since").set_value("two hours").run()  # "Failed since": not a duration
    refused_filter = texts(locked)
    locked.text_input(key="dlq.since").set_value("1h").run()

    assert not locked.exception, locked.exception
    assert "'two hours' is neither a duration like 2h/30m/1d nor an ISO 8601 time" in refused_filter
    letters = locked.dataframe[0].value
    assert list(letters["event_id"]) == [event_id]
    where = f"{letters['dlq_partition'][0]}:{letters['dlq_offset'][0]}"
    shown = texts(locked)
    assert "Next step: MLflow or Triton was unreachable" in shown
    assert "retries_exhausted for" in shown
    assert not [b for b in locked.button if b.label.startswith("Replay")], "no Replay without --allow-replay"

    monkeypatch.setenv("PROMOTER_CONSOLE_ALLOW_REPLAY", "true")
    at = console_page("dead-letters").run()
    at.text_input(key="dlq.event_id").set_value(event_id).run()
    requests_before = len(asyncio.run(snapshot(topics.bootstrap, topics.name("promotion_requested"))))
    (replay_button,) = [b for b in at.button if b.label == "Replay this letter"]
    replay_button.click().run()
    requests_unconfirmed = len(asyncio.run(snapshot(topics.bootstrap, topics.name("promotion_requested"))))
    assert "Fix its cause first" in texts(at)
    (confirm,) = [b for b in at.button if b.label == "Yes, replay it"]
    confirm.click().run()

    assert not at.exception, at.exception
    assert requests_unconfirmed == requests_before, "nothing is replayed before the confirmation"
    assert f"Replayed {where} {model} @champion (retries_exhausted)" in texts(at)
    replayed = asyncio.run(snapshot(topics.bootstrap, topics.name("promotion_requested")))
    assert len(replayed) == requests_before + 1
    assert json.loads(replayed[-1].value)["id"] == event_id
    assert dict(replayed[-1].headers)["x-replay-count"] == b"1"
    (audit,) = [
        json.loads(r.value)
        for r in asyncio.run(snapshot(topics.bootstrap, topics.name("dead_letter_replays")))
        if json.loads(r.value)["data"]["event_id"] == event_id
    ]
    assert audit["type"] == "io.modelpromoter.dead_letter.replayed.v1"
    assert audit["data"]["replay_count"] == 1
    assert audit["data"]["target_topic"] == topics.name("promotion_requested")


@pytest.mark.parametrize("page", ["serving", "dead-letters"])
def test_a_page_refreshes_itself_only_when_asked_at_the_interval_chosen(
    page: str, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, {**topics.env, "PROMOTER_CONSOLE_REFRESH_INTERVAL_S": "15"})
    reruns = auto_reruns(monkeypatch)

    at = console_page(page).run()
    assert not at.exception, at.exception
    assert reruns[-1] == [], "no automatic refresh unless asked"
    assert at.number_input(key=f"{page}.refresh_s").disabled

    at.toggle(key=f"{page}.auto_refresh").set_value(True).run()
    assert reruns[-1] == [15.0], "the interval PROMOTER_CONSOLE_REFRESH_INTERVAL_S starts with"
    at.number_input(key=f"{page}.refresh_s").set_value(5.0).run()
    assert reruns[-1] == [5.0]
    assert "read at" in texts(at).lower(), "the page says when it read the topics"

    at.toggle(key=f"{page}.auto_refresh").set_value(False).run()
    assert not at.exception, at.exception
    assert reruns[-1] == []
