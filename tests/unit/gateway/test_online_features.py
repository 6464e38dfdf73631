"""Feast online features at /predict: merge and fallback rules against a scripted feature server (httpx's mock
transport speaking Feast's /get-online-features JSON), /predict through the router with a fake Triton, and the
gateway importing nothing of Feast."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from gateway.endpoint_rotation import Backoff
from gateway.inference import InferenceService
from gateway.metrics import GatewayMetrics
from gateway.online_features import FeatureMetrics, MissingFeatures, OnlineFeatures
from gateway.predict_api import build_predict_router
from gateway.routing_table import RoutingState
from gateway.settings import FeatureSource, GatewaySettings
from gateway.upstream import TritonUpstream
from runtime.settings import TritonSettings
from tests.paths import REPO
from tests.unit.gateway.test_routing import ready
from tests.unit.gateway.test_upstream_failover import FakeTriton, serve  # noqa: F401 (serve: a fixture)

COLUMNS = ["a", "b"]
SOURCE = FeatureSource(entity_key="id", features={"a": "view:fa", "b": "view:fb"})
#: The online store: entity id -> feature -> value.
STORE = {1: {"fa": 10.0, "fb": 20.0}, 2: {"fa": 30.0, "fb": 40.0}}


class FakeFeast:
    """Answers like Feast 0.67's feature server: the join key first, then one column per feature; an unknown
    entity gets nulls (with status PRESENT, as the real server answers)."""

    def __init__(self, *, fault: str | None = None) -> None:
        self.fault = fault
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.fault == "unreachable":
            raise httpx.ConnectError("connection refused", request=request)
        if self.fault == "slow":
            await self.release.wait()
        if self.fault == "error":
            return httpx.Response(500, text="Internal Server Error")
        ids = body["entities"]["id"]
        names = [ref.split(":")[1] for ref in body["features"]] if "features" in body else ["fb", "fa"]
        results = [{"values": ids, "statuses": ["PRESENT"] * len(ids)}]
        results += [{"values": [STORE.get(i, {}).get(n) for i in ids]} for n in names]
        return httpx.Response(200, json={"metadata": {"feature_names": ["id", *names]}, "results": results})


Online = Callable[..., OnlineFeatures]


@pytest.fixture
async def online() -> AsyncIterator[Online]:
    made: list[OnlineFeatures] = []

    def make(feast: FakeFeast, source: FeatureSource = SOURCE, timeout_s: float = 1.0) -> OnlineFeatures:
        client = httpx.AsyncClient(transport=httpx.MockTransport(feast.handle))
        features = OnlineFeatures("http://feast", {"m": source}, timeout_s, FeatureMetrics(CollectorRegistry()), client)
        made.append(features)
        return features

    yield make
    for features in made:
        await features.close()


def sample(features: OnlineFeatures, name: str, **labels: str) -> float:
    return float(features.metrics.registry.get_sample_value(name, {"model": "m", **labels}) or 0.0)


async def test_entity_ids_alone_are_completed_in_one_lookup(online: Online) -> None:
    feast = FakeFeast()
    features = online(feast)
    body = [{"id": 1}, {"id": 2}, {"id": 1}]
    assert await features.complete("m", SOURCE, COLUMNS, body) == [
        {"a": 10.0, "b": 20.0},
        {"a": 30.0, "b": 40.0},
        {"a": 10.0, "b": 20.0},
    ]
    assert feast.requests == [{"entities": {"id": [1, 2]}, "features": ["view:fa", "view:fb"]}]
    assert sample(features, "gateway_feature_lookups_total") == 1
    assert sample(features, "gateway_feature_misses_total") == 0


async def test_payload_values_win_and_only_missing_features_are_asked_for(online: Online) -> None:
    feast = FakeFeast()
    features = online(feast)
    assert await features.complete("m", SOURCE, COLUMNS, {"id": 1, "b": -1.0}) == {"b": -1.0, "a": 10.0}
    assert feast.requests == [{"entities": {"id": [1]}, "features": ["view:fa"]}]


@pytest.mark.parametrize(
    "body",
    [
        {"id": 1, "a": 1.0, "b": 2.0},  # complete: the entity id is dropped, nothing looked up
        {"a": 1.0},  # no entity id: left to the usual validation
        [{"a": 1.0, "b": 2.0}, "not a record"],
    ],
)
async def test_requests_that_need_no_lookup_never_reach_the_store(online: Online, body: Any) -> None:
    feast = FakeFeast(fault="unreachable")
    features = online(feast)
    completed = await features.complete("m", SOURCE, COLUMNS, body)
    assert feast.requests == []
    expected = {k: v for k, v in body.items() if k != "id"} if isinstance(body, dict) else body
    assert completed == expected


async def test_a_feature_service_is_asked_for_by_name(online: Online) -> None:
    feast = FakeFeast()
    source = FeatureSource(entity_key="id", features={"a": "view:fa", "b": "view:fb"}, feature_service="svc")
    features = online(feast, source)
    assert await features.complete("m", source, COLUMNS, {"id": 2}) == {"a": 30.0, "b": 40.0}
    assert feast.requests == [{"entities": {"id": [2]}, "feature_service": "svc"}]


@pytest.mark.parametrize(
    ("fault", "reason", "words"),
    [
        ("unreachable", "unreachable", "the feature store is unreachable (ConnectError)"),
        ("slow", "timeout", "the feature store did not answer within 0.05 s"),
        ("error", "error", "the feature store failed: HTTP 500"),
    ],
)
async def test_a_failing_store_falls_back_to_the_payload(online: Online, fault: str, reason: str, words: str) -> None:
    feast = FakeFeast(fault=fault)
    features = online(feast, timeout_s=0.05)
    # Incomplete: a 422 naming every missing feature and why they were not looked up.
    with pytest.raises(MissingFeatures) as raised:
        await features.complete("m", SOURCE, COLUMNS, [{"a": 1.0, "b": 2.0}, {"id": 1, "b": 2.0}])
    assert raised.value.field == "records[1].a"
    assert raised.value.message.startswith("records[1]: missing features 'a' (")
    assert words in raised.value.message
    assert sample(features, "gateway_feature_fallbacks_total", reason=reason) == 1
    feast.release.set()


async def test_an_unknown_entity_is_a_miss_and_names_the_entity(online: Online) -> None:
    features = online(FakeFeast())
    with pytest.raises(MissingFeatures) as raised:
        await features.complete("m", SOURCE, COLUMNS, {"id": 999, "a": 1.0})
    assert (
        raised.value.message == "record: missing features 'b' (no online features for id=999; send them in the payload)"
    )
    assert sample(features, "gateway_feature_misses_total") == 1
    assert sample(features, "gateway_feature_fallbacks_total", reason="error") == 0


async def test_a_column_outside_the_configuration_is_named(online: Online) -> None:
    source = FeatureSource(entity_key="id", features={"a": "view:fa"})
    feast = FakeFeast()
    features = online(feast, source)
    with pytest.raises(MissingFeatures, match=r"missing features 'b' \(not in this model's feature configuration"):
        await features.complete("m", source, COLUMNS, {"id": 1, "a": 1.0})
    assert feast.requests == []


@pytest.mark.parametrize("entity", [True, 1.5, None, [1]])
async def test_an_entity_id_that_is_not_one_is_named(online: Online, entity: Any) -> None:
    with pytest.raises(MissingFeatures, match=r"^records\[0\]\.id: must be an entity id"):
        await online(FakeFeast()).complete("m", SOURCE, COLUMNS, [{"id": entity}])


def test_settings_read_the_models_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_GATEWAY_FEAST_SERVER_URL", "http://feast:6566")
    monkeypatch.setenv("PROMOTER_GATEWAY_FEAST_MODELS", json.dumps({"m": SOURCE.model_dump()}))
    assert GatewaySettings().feast_models == {"m": SOURCE}
    monkeypatch.delenv("PROMOTER_GATEWAY_FEAST_SERVER_URL")
    with pytest.raises(ValidationError, match="needs PROMOTER_GATEWAY_FEAST_SERVER_URL"):
        GatewaySettings()
    with pytest.raises(ValidationError, match=r"features\['a'\]: expected a Feast reference"):
        FeatureSource(entity_key="id", features={"a": "no_view"})


@pytest.fixture
async def predict(serve: Callable[[FakeTriton], Awaitable[str]]) -> AsyncIterator[Callable[..., Any]]:  # noqa: F811
    """A /predict app on a fake Triton, with or without online features."""
    closing: list[Any] = []

    async def make(features: OnlineFeatures | None) -> httpx.AsyncClient:
        state = RoutingState()
        state.apply(ready(1, generation=0))
        metrics = GatewayMetrics()
        upstream = TritonUpstream(
            TritonSettings(endpoints=await serve(FakeTriton()), request_timeout_s=5),
            connect_timeout_s=1.0,
            backoff=Backoff(0.01, 0.02),
            metrics=metrics,
        )
        await upstream.start()
        service = InferenceService(GatewaySettings(), state, upstream, metrics)
        app = FastAPI()
        app.include_router(build_predict_router(service, features))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        closing.extend([client.aclose, service.close, upstream.close])
        return client

    yield make
    for close in closing:
        await close()


async def test_predict_serves_entity_ids_and_never_a_5xx_for_the_store(predict: Any, online: Online) -> None:
    client = await predict(online(FakeFeast()))
    answer = await client.post("/predict/m", json=[{"id": 1}, {"id": 2, "a": 0.5}])
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [30.0, 40.5]  # the fake Triton sums each row

    down = await predict(online(FakeFeast(fault="unreachable")))
    served = await down.post("/predict/m", json={"id": 1, "a": 1.0, "b": 2.0})
    assert served.status_code == 200, served.text
    refused = await down.post("/predict/m", json={"id": 1, "a": 1.0})
    assert refused.status_code == 422
    assert "missing features 'b' (the feature store is unreachable" in refused.text


async def test_predict_without_feast_configured_is_unchanged(predict: Any) -> None:
    client = await predict(None)
    assert (await client.post("/predict/m", json={"a": 1.0, "b": 2.0})).json()["predictions"] == [3.0]
    unknown = await client.post("/predict/m", json={"id": 1, "a": 1.0, "b": 2.0})
    assert unknown.status_code == 422
    assert "unknown feature 'id'" in unknown.text


def test_the_gateway_runs_without_feast_installed() -> None:
    """Feast is not a dependency of the gateway: with ``import feast`` made to fail, the gateway's app and the
    online-features module import, and nothing of Feast gets loaded."""
    code = (
        "import sys; sys.modules['feast'] = None\n"
        "import gateway.app, gateway.online_features, gateway.predict_api\n"
        "assert not [m for m in sys.modules if m.startswith('feast.')]\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
