"""Gateway replicas on the real stack: hot swaps from model.ready, replay, ordering, zero-failure swaps,
A/B and shadow routing, the real tritonclient, input validation, and schemathesis against the OpenAPI;
and the console's Try-a-model page against these gateways."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from deploy.stack.triton_server import triton_spec_on_free_ports
from gateway.routing_policy import client_bucket, weighted_alias
from tests.console_harness import console_page
from tests.gateway_harness import (
    IRIS_FEATURES,
    GatewayHandle,
    iris_records,
    promote,
    ready_bytes,
    routing_bytes,
    running_gateways,
)
from tests.worker_harness import (
    WorkerHandle,
    events,
    iris_frame,
    produce,
    read_until,
    register_iris,
    running_worker,
    sklearn_predictions,
    wait_for,
)

pytestmark = pytest.mark.integration

REGISTERED = 3
#: The champion's promotions, as indexes into the registered versions: five decisions, the last two
#: flip back and forth between versions that stay loaded (the worker keeps the newest two).
SEQUENCE = (0, 1, 2, 1, 2)


@dataclass
class World:
    stack: LocalStack
    worker: WorkerHandle
    gateways: list[GatewayHandle]
    model: str
    run_dir: Path
    registered: list[int]
    promotions: list[dict[str, Any]] = field(default_factory=list)  # the model.ready events, in order

    @property
    def latest(self) -> int:
        return int(self.promotions[-1]["data"]["version"])

    def event_for(self, version: int) -> dict[str, Any]:
        return next(e for e in reversed(self.promotions) if e["data"]["version"] == version)

    @property
    def upcoming(self) -> int:
        return self.registered[SEQUENCE[len(self.promotions)]]

    async def promote_next(self) -> int:
        version = self.upcoming
        self.promotions.append(await promote(self.stack, self.worker, self.model, version))
        return version

    async def promoted_at_least(self, count: int) -> None:
        while len(self.promotions) < count:
            await self.promote_next()

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await produce(self.stack.kafka_bootstrap_servers, self.worker.topics[topic], [(key.encode(), value)])


@pytest.fixture(scope="module")
async def world(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    run_dir = tmp_path_factory.mktemp("gateway")
    model = f"gw-iris-{uuid.uuid4().hex[:6]}"
    uri = local_stack.mlflow_tracking_uri
    registered = [register_iris(uri, model, regularisation=c) for c in (1.0, 0.01, 0.1)][:REGISTERED]
    with running_worker(local_stack, run_dir / "worker") as worker:
        current = World(local_stack, worker, [], model, run_dir, registered)
        await current.promote_next()
        with running_gateways(local_stack, run_dir / "gateways", worker.env, ["gw-a", "gw-b"]) as gateways:
            current.gateways = gateways
            yield current


V2_BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
).encode()


def _post_v2(url: str) -> httpx.Response:
    return httpx.post(url, content=V2_BODY, headers={"content-type": "application/json"}, timeout=10)


def _predict(gateway: GatewayHandle, model: str, rows: Any, **params: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/predict/{model}", json=iris_records(rows), params=params, timeout=10)


async def test_a_promotion_makes_both_replicas_serve_the_new_version(world: World) -> None:
    previous = world.latest
    version = await world.promote_next()
    await wait_for(
        lambda: all(g.served(world.model) == version for g in world.gateways), timeout_s=10, what="both serve new"
    )
    features, _ = iris_frame()
    for gateway in world.gateways:
        response = _predict(gateway, world.model, features.head(3).to_numpy())
        assert response.status_code == 200, response.text
        assert response.headers["x-model-version"] == str(version)
        assert response.headers["x-model-alias"] == "champion"
        body = response.json()
        assert body["model_version"] == version
        assert len(body["predictions"]) == 3
    status_topic = world.worker.topics["PROMOTER_TOPIC_GATEWAY_STATUS"]

    def acks(records: list[Any]) -> set[str]:
        return {
            e["data"]["gateway_id"]
            for e in events(records)
            if e["type"] == "io.modelpromoter.gateway.swap_acked.v1"
            and e["data"]["route"]["model_name"] == world.model
            and e["data"]["route"]["version"] == version
            and e["data"]["previous_version"] == previous
        }

    def heartbeats(records: list[Any]) -> set[str]:
        return {
            e["data"]["gateway_id"]
            for e in events(records)
            if e["type"] == "io.modelpromoter.gateway.heartbeat.v1"
            and e["data"]["ready"]
            and any(r["model_name"] == world.model and r["version"] == version for r in e["data"]["routes"])
        }

    both = {"gw-a", "gw-b"}
    records = await read_until(
        world.stack.kafka_bootstrap_servers,
        status_topic,
        lambda r: acks(r) >= both and heartbeats(r) >= both,
        timeout_s=10,
    )
    assert acks(records) == both
    assert heartbeats(records) == both


async def test_no_request_fails_across_a_promotion_under_load(world: World) -> None:
    await world.promoted_at_least(len(SEQUENCE) - 1)
    before = world.latest
    target = world.upcoming
    row = iris_records(iris_frame()[0].head(1).to_numpy())[0]
    results: list[tuple[int, str | None, Any]] = []
    stop = asyncio.Event()

    async def client(index: int, http: httpx.AsyncClient) -> None:
        gateway = world.gateways[index % len(world.gateways)]
        while not stop.is_set():
            try:
                response = await http.post(f"{gateway.url}/predict/{world.model}", json=row)
                body = response.json()
                results.append((response.status_code, response.headers.get("x-model-version"), body))
            except httpx.HTTPError as error:
                results.append((0, None, repr(error)))

    async with httpx.AsyncClient(timeout=10) as http:
        load = [asyncio.create_task(client(i, http)) for i in range(4)]
        try:
            await wait_for(lambda: len(results) >= 20, timeout_s=10, what="load running")
            await world.promote_next()
            switched = len(results)
            await wait_for(
                lambda: sum(1 for _, v, _ in results[switched:] if v == str(target)) >= 40,
                timeout_s=10,
                what="new version answering under load",
            )
        finally:
            stop.set()
            await asyncio.gather(*load)

    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    for _, header, body in results:
        assert header == str(body["model_version"]), (header, body)
    assert {header for _, header, _ in results} == {str(before), str(target)}


async def test_a_late_replica_replays_the_latest_and_a_stale_event_moves_nobody_back(world: World) -> None:
    await world.promoted_at_least(len(SEQUENCE))
    latest = world.latest
    stale = ready_bytes(world.promotions[0])  # the first decision again: an older generation
    seen_before = {g.name: g.metric("gateway_stale_events_total") for g in world.gateways}
    await world.publish("PROMOTER_TOPIC_MODEL_READY", world.model, stale)
    with running_gateways(world.stack, world.run_dir / "late", world.worker.env, ["gw-late"]) as (late,):
        everyone = [*world.gateways, late]
        assert late.served(world.model) == latest  # ready means replayed, the stale event included
        assert late.metric("gateway_stale_events_total") >= 1
        await wait_for(
            lambda: all(g.metric("gateway_stale_events_total") > seen_before[g.name] for g in world.gateways),
            timeout_s=10,
            what="the running replicas saw the stale event",
        )
        for gateway in everyone:
            assert gateway.served(world.model) == latest
            response = _predict(gateway, world.model, iris_frame()[0].head(1).to_numpy())
            assert response.headers["x-model-version"] == str(latest), response.text


async def test_ab_split_is_sticky_and_shadow_never_reaches_callers(world: World) -> None:
    await world.promoted_at_least(len(SEQUENCE))
    model = f"gw-ab-{uuid.uuid4().hex[:6]}"
    champion, challenger = (world.event_for(v) for v in world.registered[-2:])
    log_events = [
        ready_bytes(champion, model_name=model, alias="champion", generation=0),
        ready_bytes(challenger, model_name=model, alias="challenger", generation=1),
        ready_bytes(champion, model_name=model, alias="shadow", generation=2),
        ready_bytes(champion, model_name=model, alias="broken", triton_model_name="no-such-model", generation=3),
    ]
    for value in log_events:
        await world.publish("PROMOTER_TOPIC_MODEL_READY", model, value)
    weights = {"champion": 70, "challenger": 30}
    await world.publish("PROMOTER_TOPIC_ROUTING_UPDATED", model, routing_bytes(model, weights, 0, "shadow", 100.0))
    a, b = world.gateways

    def policy_seen(gateway: GatewayHandle, shadow: str) -> bool:
        view = gateway.get("/models").json()["models"].get(model, {})
        return view.get("shadow_alias") == shadow and len(view.get("aliases", {})) == 4

    await wait_for(lambda: all(policy_seen(g, "shadow") for g in world.gateways), timeout_s=10, what="policy")

    clients = [f"client-{i}" for i in range(1000)]
    ordered = tuple(sorted(weights.items()))
    expected = {c: weighted_alias(ordered, client_bucket(c)) for c in clients}
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(timeout=10) as http:

        async def alias_of(gateway: GatewayHandle, client: str) -> str:
            async with limit:
                response = await http.get(f"{gateway.url}/v2/models/{model}/ready", headers={"X-Client-Id": client})
            assert response.status_code == 200, response.text
            return response.headers["x-model-alias"]

        on_a = await asyncio.gather(*(alias_of(a, c) for c in clients))
        on_b = await asyncio.gather(*(alias_of(b, c) for c in clients[:200]))
    assert dict(zip(clients, on_a, strict=True)) == expected
    assert on_b == on_a[:200]
    share = 100 * on_a.count("challenger") / len(clients)
    assert abs(share - 30) <= 5, share

    rows = iris_frame()[0].head(1).to_numpy()
    pinned_alias = _predict(a, model, rows, alias="challenger")
    assert pinned_alias.headers["x-model-alias"] == "challenger"
    assert pinned_alias.json()["model_version"] == challenger["data"]["version"]
    old_version = champion["data"]["version"]
    pinned_version = _post_v2(f"{b.url}/v2/models/{model}/versions/{old_version}/infer")
    assert pinned_version.status_code == 200, pinned_version.text
    assert pinned_version.json()["model_version"] == str(old_version)
    assert pinned_version.headers["x-model-version"] == str(old_version)
    not_served = _post_v2(f"{b.url}/v2/models/{model}/versions/999/infer")
    assert not_served.status_code == 404
    copies = 20
    shadow_ok = a.metric("gateway_shadow_requests_total", model=model, outcome="ok")
    for _i in range(copies):
        response = _predict(a, model, rows)
        assert response.status_code == 200, response.text
    await wait_for(
        lambda: a.metric("gateway_shadow_requests_total", model=model, outcome="ok") >= shadow_ok + copies,
        timeout_s=10,
        what="shadow copies answered",
    )

    await world.publish("PROMOTER_TOPIC_ROUTING_UPDATED", model, routing_bytes(model, weights, 1, "broken", 100.0))
    await wait_for(lambda: policy_seen(a, "broken"), timeout_s=10, what="failing shadow policy")
    for _i in range(copies):
        response = _predict(a, model, rows)
        assert response.status_code == 200, response.text
        assert response.headers["x-model-alias"] in weights
    await wait_for(
        lambda: a.metric("gateway_shadow_requests_total", model=model, outcome="error") >= copies,
        timeout_s=10,
        what="failing shadow copies counted",
    )
    assert a.metric("gateway_errors_total", model=model) == 0


def _tritonclient_infer(url: str, model: str, rows: np.ndarray[Any, Any]) -> tuple[Any, Any, bool]:
    client = triton_http.InferenceServerClient(url.removeprefix("http://"), network_timeout=30)
    try:
        tensor = triton_http.InferInput("input", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows)
        result = client.infer(model, [tensor])
        return result.as_numpy("output"), client.get_model_metadata(model), client.is_model_ready(model)
    finally:
        client.close()


async def test_real_tritonclient_infers_through_the_gateway(world: World) -> None:
    rows = iris_frame()[0].head(20).to_numpy(dtype=np.float64)
    gateway = world.gateways[0]
    through, metadata, ready = await asyncio.to_thread(_tritonclient_infer, gateway.url, world.model, rows)
    served = world.promotions[-1]["data"]["triton_model_name"]
    direct, _, _ = await asyncio.to_thread(_tritonclient_infer, world.stack.triton_http, served, rows)
    assert ready is True
    assert metadata["name"] == world.model
    assert str(world.latest) in metadata["versions"]
    assert np.array_equal(np.asarray(through), np.asarray(direct))


async def test_invalid_input_gets_422_naming_the_feature(world: World) -> None:
    gateway = world.gateways[1]
    good = dict.fromkeys(IRIS_FEATURES, 1.0)
    cases = [
        ({k: v for k, v in good.items() if k != "petal width (cm)"}, "petal width (cm)"),
        ({**good, "colour": 1.0}, "colour"),
        ({**good, "sepal length (cm)": "long"}, "sepal length (cm)"),
    ]
    async with httpx.AsyncClient(timeout=10) as http:
        for body, field_name in cases:
            response = await http.post(f"{gateway.url}/predict/{world.model}", json=body, timeout=10)
            assert response.status_code == 422, response.text
            assert field_name in response.json()["error"]
        unknown = await http.post(f"{gateway.url}/predict/nope-{uuid.uuid4().hex[:4]}", json=good, timeout=10)
        assert unknown.status_code == 404
        assert "not served" in unknown.json()["error"]
        garbage = await http.post(f"{gateway.url}/v2/models/{world.model}/infer", content=b"{not json", timeout=10)
        assert garbage.status_code == 400
        assert "error" in garbage.json()


async def test_more_records_than_max_batch_size_are_split_and_all_answered(world: World) -> None:
    served = world.promotions[-1]["data"]
    assert served["max_batch_size"] == 64  # the worker's default, announced on model.ready
    features, _ = iris_frame()
    rows = features.to_numpy(dtype=np.float64)[:150]
    response = _predict(world.gateways[0], world.model, rows)
    assert response.status_code == 200, response.text
    through = response.json()["predictions"]
    direct: list[Any] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for start in range(0, len(rows), 50):  # Triton itself takes at most max_batch_size rows per inference
            chunk = rows[start : start + 50]
            tensor = {"name": "input", "shape": list(chunk.shape), "datatype": "FP64", "data": chunk.ravel().tolist()}
            answer = await http.post(
                f"http://{world.stack.triton_http}/v2/models/{served['triton_model_name']}/infer",
                json={"inputs": [tensor]},
            )
            assert answer.status_code == 200, answer.text
            direct.extend(answer.json()["outputs"][0]["data"])
    assert len(through) == 150
    assert through == direct


def _v2_request(rows: np.ndarray[Any, Any], request_id: str | None) -> bytes:
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}
    return json.dumps({"inputs": [tensor], **({"id": request_id} if request_id else {})}).encode()


async def test_concurrent_requests_share_inferences_and_each_gets_the_answer_triton_gives_it_alone(
    world: World,
) -> None:
    gateway = world.gateways[0]
    served = world.promotions[-1]["data"]
    features = iris_frame()[0].to_numpy(dtype=np.float64)
    bodies = [_v2_request(features[i * 2 : i * 2 + 1 + i % 2], f"req-{i}" if i % 3 == 0 else None) for i in range(60)]
    bad = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, "x", 3, 4]}]})
    headers = {"content-type": "application/json"}
    merged_before = gateway.metric("gateway_merged_requests_total", model=world.model)
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=100)) as http:
        url = f"{gateway.url}/v2/models/{world.model}/infer"
        sent = [*bodies[:30], bad.encode(), *bodies[30:]]
        through = await asyncio.gather(*(http.post(url, content=body, headers=headers) for body in sent))
        direct_url = f"http://{world.stack.triton_http}/v2/models/{served['triton_model_name']}/infer"
        alone = [await http.post(direct_url, content=body, headers=headers) for body in bodies]  # one at a time
    assert gateway.metric("gateway_merged_requests_total", model=world.model) > merged_before
    refused = through.pop(30)
    assert refused.status_code == 400, refused.text  # its own error, and nobody else's
    assert "error" in refused.json()
    for answer, expected in zip(through, alone, strict=True):
        assert answer.status_code == 200, answer.text
        assert expected.status_code == 200, expected.text
        document, reference = answer.json(), expected.json()
        assert document["model_version"] == str(world.latest) == answer.headers["x-model-version"]
        assert document["outputs"] == reference["outputs"]
        assert document.get("id") == reference.get("id")


async def test_real_triton_failures_reach_callers_as_clear_statuses(world: World) -> None:
    """502 for a routed model Triton does not have, 504 past the request deadline, and 503 once the Triton a
    replica talks to is stopped (its keep-alive connections die with it); never a stack trace."""
    served = world.promotions[-1]["data"]
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"
    await world.publish(
        "PROMOTER_TOPIC_MODEL_READY",
        ghost,
        ready_bytes(world.promotions[-1], model_name=ghost, triton_model_name=f"{ghost}--v1", generation=0),
    )
    await wait_for(lambda: world.gateways[0].served(ghost) is not None, timeout_s=10, what="ghost routed")
    missing = _post_v2(f"{world.gateways[0].url}/v2/models/{ghost}/infer")
    assert missing.status_code == 502, missing.text
    assert "does not serve the routed model" in missing.json()["error"]

    run_dir = world.run_dir / "own-triton"
    spec = triton_spec_on_free_ports(run_dir, world.stack.model_repository)
    own_triton = spec.endpoints["triton_http"]
    triton = ManagedProcess(spec, run_dir / "tritonserver.log")
    triton.start()
    try:
        wait_all_ready([triton])
        async with httpx.AsyncClient(timeout=60) as http:
            load = await http.post(f"http://{own_triton}/v2/repository/models/{served['triton_model_name']}/load")
        assert load.status_code == 200, load.text
        own = {**world.worker.env, "PROMOTER_TRITON_ENDPOINTS": own_triton}
        impatient = {**world.worker.env, "PROMOTER_TRITON_REQUEST_TIMEOUT_S": "0.0001"}
        with (
            running_gateways(world.stack, run_dir / "gw-own", own, ["gw-own"]) as (mine,),
            running_gateways(world.stack, run_dir / "gw-impatient", impatient, ["gw-impatient"]) as (hasty,),
        ):
            url = f"{mine.url}/v2/models/{world.model}/infer"
            assert [_post_v2(url).status_code for _ in range(3)] == [200, 200, 200]  # keep-alive connections open
            late = _post_v2(f"{hasty.url}/v2/models/{world.model}/infer")
            assert late.status_code == 504, late.text
            assert "did not answer within 0.0001 s" in late.json()["error"]
            stop_all([triton])
            gone = _post_v2(url)
            assert gone.status_code == 503, gone.text
            assert gone.json()["error"].startswith("Triton is unavailable")
            assert gone.headers["x-model-version"] == str(world.latest)
    finally:
        stop_all([triton])


def _schemathesis_no_5xx(url: str, served_model: str) -> tuple[list[str], int]:
    """Every operation with generated cases: random model names, and (where there is one) the served model."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    problems: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # Err raises here: an invalid schema fails the test
        strategies = [operation.as_strategy()]
        if "{name}" in operation.path:
            strategies.append(operation.as_strategy(path_parameters={"name": served_model}))
        for strategy in strategies:

            @given(case=strategy)
            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                derandomize=True,  # the same cases every run: a failure here is reproducible, not flaky
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=url, timeout=10)
                if response.status_code >= 500:
                    problems.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                    )

            check()
    return problems, calls


async def test_schemathesis_finds_no_server_error(world: World) -> None:
    gateway = world.gateways[0]
    operations = json.loads(gateway.get("/openapi.json").text)["paths"]
    assert "/predict/{name}" in operations
    assert "/v2/models/{name}/infer" in operations
    problems, calls = await asyncio.to_thread(_schemathesis_no_5xx, gateway.url, world.model)
    assert calls >= 100
    assert not problems, problems[:5]


async def test_console_try_a_model_answers_from_a_form_and_shows_the_same_call_as_curl_and_tritonclient(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        **world.stack.client_env(),
        **world.worker.topics,
        "PROMOTER_CONSOLE_GATEWAY_URLS": world.gateways[0].url,
    }.items():
        monkeypatch.setenv(name, value)
    features, _ = iris_frame()
    row = features.iloc[[120]]
    uri = world.stack.mlflow_tracking_uri
    expected = sklearn_predictions(uri, world.model, world.latest, row).tolist()

    at = console_page("try")
    await asyncio.to_thread(at.run)
    assert not at.exception, at.exception
    assert world.model in at.selectbox[0].options, "every served model is offered"
    at.selectbox[0].select(world.model)  # other tests of this module route models of their own
    await asyncio.to_thread(at.run)
    assert not at.exception, at.exception
    assert (at.selectbox[0].value, at.selectbox[1].value) == (world.model, "champion")
    assert [entry.label for entry in at.number_input] == list(IRIS_FEATURES)
    for entry, value in zip(at.number_input, row.iloc[0], strict=True):
        entry.set_value(float(value))
    at.button[0].click()
    await asyncio.to_thread(at.run)

    assert not at.exception, at.exception
    assert {metric.label: metric.value for metric in at.metric} == {"version": f"v{world.latest}", "alias": "champion"}
    assert json.loads(at.json[0].value) == expected
    curl, code = (block.value for block in at.code)
    answered = await asyncio.to_thread(subprocess.run, ["bash", "-c", curl], capture_output=True, text=True, check=True)
    assert (json.loads(answered.stdout)["predictions"], json.loads(answered.stdout)["model_version"]) == (
        expected,
        world.latest,
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        await asyncio.to_thread(exec, compile(code, "tritonclient_example", "exec"), {})
    assert json.loads(printed.getvalue()) == [[p] for p in expected]  # the output tensor: one column per row
