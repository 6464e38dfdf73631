"""A gateway in front of two real tritonservers sharing one model repository, under constant load from several
clients: one Triton SIGKILLed, then restarted empty (explicit model control: nothing loaded) and loaded again by
hand, fails no caller's request; a caller's NaN row gets a 400 naming it while the other callers get answers."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from deploy.stack.triton_server import triton_spec_on_free_ports
from tests.gateway_harness import GatewayHandle, iris_records, promote, running_gateways
from tests.worker_harness import WorkerHandle, iris_frame, register_iris, running_worker, wait_for

pytestmark = pytest.mark.integration

LOAD_TIMEOUT_S = 60.0


@dataclass
class Triton:
    process: ManagedProcess
    http: str
    metrics_url: str

    async def load(self, triton_model: str) -> None:
        async with httpx.AsyncClient(timeout=LOAD_TIMEOUT_S) as http:
            answer = await http.post(f"http://{self.http}/v2/repository/models/{triton_model}/load")
        assert answer.status_code == 200, answer.text

    def answered(self, triton_model: str) -> float:
        """Inferences of ``triton_model`` this Triton answered since it started."""
        total = 0.0
        for line in httpx.get(self.metrics_url, timeout=10).text.splitlines():
            if line.startswith(f'nv_inference_request_success{{model="{triton_model}"'):
                total += float(line.rpartition(" ")[2])
        return total

    async def kill(self) -> None:
        """SIGKILL, as a crashed or evicted server, then clean what it left behind."""
        self.process.kill()
        await wait_for(self.process.gone, timeout_s=30, what="the killed tritonserver is gone")
        self.process.remove_leftovers()

    async def restart(self) -> None:
        self.process.start()
        await asyncio.to_thread(wait_all_ready, [self.process])


@dataclass
class Fleet:
    stack: LocalStack
    worker: WorkerHandle
    model: str
    versions: list[int]
    tritons: list[Triton]
    gateway: GatewayHandle
    triton_models: dict[str, str] = field(default_factory=dict)  # alias -> Triton model


@pytest.fixture(scope="module")
async def fleet(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    run_dir = tmp_path_factory.mktemp("failover")
    model = f"gw-failover-{uuid.uuid4().hex[:6]}"
    uri = local_stack.mlflow_tracking_uri
    versions = [register_iris(uri, model, regularisation=c) for c in (1.0, 0.1)]
    tritons = []
    for name in ("triton-a", "triton-b"):
        spec = triton_spec_on_free_ports(run_dir / name, local_stack.model_repository)
        process = ManagedProcess(spec, run_dir / name / "tritonserver.log")
        tritons.append(Triton(process, spec.endpoints["triton_http"], spec.endpoints["triton_metrics"]))
    with running_worker(local_stack, run_dir / "worker") as worker:
        ready = await promote(local_stack, worker, model, versions[0])
        for triton in tritons:
            triton.process.start()
        try:
            await asyncio.to_thread(wait_all_ready, [triton.process for triton in tritons])
            champion = ready["data"]["triton_model_name"]
            await asyncio.gather(*(triton.load(champion) for triton in tritons))
            env = {**worker.env, "PROMOTER_TRITON_ENDPOINTS": ",".join(triton.http for triton in tritons)}
            with running_gateways(local_stack, run_dir / "gateway", env, ["gw-failover"]) as (gateway,):
                await wait_for(lambda: gateway.served(model) == versions[0], timeout_s=10, what="champion routed")
                yield Fleet(local_stack, worker, model, versions, tritons, gateway, {"champion": champion})
        finally:
            stop_all([triton.process for triton in tritons])


@functools.cache
def iris_rows() -> np.ndarray[Any, Any]:
    return np.asarray(iris_frame()[0].to_numpy(dtype=np.float64))


def v2_body(rows: np.ndarray[Any, Any]) -> bytes:
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


@dataclass
class Load:
    """Answers seen by the load's clients: (client, HTTP status, body when not 200, sent at (unix time))."""

    results: list[tuple[str, int, str, float]] = field(default_factory=list)

    def failures(self) -> list[tuple[str, int, str, float]]:
        return [result for result in self.results if result[1] != 200]


@asynccontextmanager
async def steady_load(gateway: GatewayHandle, model: str, alias: str = "champion") -> AsyncIterator[Load]:
    """Four clients, each sending its next request as soon as the last was answered: one-row and three-row v2
    requests (merged by the gateway when they queue) and a /predict of 100 records (split into two inferences)."""
    load = Load()
    stop = asyncio.Event()
    rows = iris_rows()
    v2_url = f"{gateway.url}/v2/models/{model}/infer?alias={alias}"
    requests: dict[str, tuple[str, dict[str, Any]]] = {
        "v2-one-row": (v2_url, {"content": v2_body(rows[:1])}),
        "v2-one-row-b": (v2_url, {"content": v2_body(rows[5:6])}),
        "v2-three-rows": (v2_url, {"content": v2_body(rows[10:13])}),
        "predict-100": (f"{gateway.url}/predict/{model}?alias={alias}", {"json": iris_records(rows[:100])}),
    }

    async def client(name: str, url: str, body: dict[str, Any], http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            sent = time.time()
            try:
                response = await http.post(url, headers={"content-type": "application/json"}, **body)
            except httpx.HTTPError as error:
                load.results.append((name, 0, repr(error), sent))
                continue
            text = "" if response.status_code == 200 else response.text
            load.results.append((name, response.status_code, text, sent))

    async with httpx.AsyncClient(timeout=30) as http:
        tasks = [asyncio.create_task(client(name, url, body, http)) for name, (url, body) in requests.items()]
        try:
            await wait_for(lambda: len(load.results) >= 20, timeout_s=30, what="the load is running")
            yield load
        finally:
            stop.set()
            await asyncio.gather(*tasks)


def assert_no_failures(load: Load, gateway: GatewayHandle) -> None:
    failures = load.failures()
    assert not failures, f"{len(failures)} of {len(load.results)} failed: {failures[:5]}\n{gateway.process.tail(80)}"


async def answered_after(load: Load, count: int, *, timeout_s: float, what: str) -> None:
    seen = len(load.results)
    await wait_for(lambda: len(load.results) >= seen + count, timeout_s=timeout_s, what=what)


async def test_a_killed_triton_fails_no_request(fleet: Fleet) -> None:
    gateway = fleet.gateway
    victim = fleet.tritons[1]
    async with steady_load(gateway, fleet.model) as load:
        await victim.kill()
        await wait_for(
            lambda: gateway.metric("gateway_endpoint_ejections_total", endpoint=victim.http, scope="endpoint") >= 1,
            timeout_s=10,
            what="the killed endpoint is ejected",
        )
        await answered_after(load, 100, timeout_s=60, what="requests answered with one Triton dead")
        assert gateway.get("/ready").status_code == 200  # one good endpoint left: still ready
    assert_no_failures(load, gateway)
    assert gateway.metric("gateway_upstream_retries_total") >= 1
    assert gateway.metric("gateway_ejected_upstreams", scope="endpoint") == 1


async def test_a_triton_restarted_empty_fails_no_request_and_is_readmitted_once_loaded(fleet: Fleet) -> None:
    gateway = fleet.gateway
    victim = fleet.tritons[1]
    champion = fleet.triton_models["champion"]
    if not victim.process.gone():  # on its own: kill it as the test before did
        await victim.kill()
    async with steady_load(gateway, fleet.model) as load:
        await victim.restart()  # explicit model control: it comes back with nothing loaded
        await wait_for(
            lambda: gateway.metric("gateway_endpoint_ejections_total", endpoint=victim.http, scope="model") >= 1,
            timeout_s=30,
            what="the restarted, empty endpoint is ejected for the routed model",
        )
        assert gateway.metric("gateway_ejected_upstreams", scope="endpoint") == 0  # it answers: the endpoint is up
        assert gateway.metric("gateway_ejected_upstreams", scope="model") == 1
        await victim.load(champion)
        await wait_for(
            lambda: gateway.metric("gateway_endpoint_readmissions_total", endpoint=victim.http, scope="model") >= 1,
            timeout_s=30,
            what="the endpoint is back in rotation once the model is loaded there",
        )
        served = victim.answered(champion)
        await answered_after(load, 40, timeout_s=60, what="requests answered after the re-admission")
        assert victim.answered(champion) > served  # it takes its share again
    assert_no_failures(load, gateway)
    assert gateway.metric("gateway_ejected_upstreams") == 0
    log = gateway.process.log_text()
    assert "Triton endpoint out of rotation" in log
    assert "Triton endpoint back in rotation" in log


def _tritonclient_nan(url: str, model: str) -> InferenceServerException:
    client = triton_http.InferenceServerClient(url.removeprefix("http://"), network_timeout=30)
    try:
        tensor = triton_http.InferInput("input", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.array([[5.1, np.nan, 1.4, 0.2]]))  # binary tensor data
        try:
            client.infer(model, [tensor])
        except InferenceServerException as error:
            return error
        raise AssertionError("a NaN row was answered")
    finally:
        client.close()


async def test_a_nan_row_gets_a_400_naming_it_while_other_callers_are_answered(fleet: Fleet) -> None:
    """NaN rows and the good load hit the same Triton model: its dynamic batcher may put a NaN row in one batch
    with good rows, and the python-backend model then predicts each request of that batch alone."""
    gateway = fleet.gateway
    if fleet.tritons[1].process.gone():  # on its own, after a failed test before
        await fleet.tritons[1].restart()
        await fleet.tritons[1].load(fleet.triton_models["champion"])
    ejections = gateway.metric("gateway_endpoint_ejections_total")
    retries = gateway.metric("gateway_upstream_retries_total")
    nan_body = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [5.1, float("nan"), 1.4, 0.2]}]}
    )
    async with steady_load(gateway, fleet.model) as load, httpx.AsyncClient(timeout=30) as http:
        for _ in range(5):
            refused = await http.post(f"{gateway.url}/v2/models/{fleet.model}/infer", content=nan_body)
            assert refused.status_code == 400, refused.text
            assert "NaN" in refused.json()["error"]
            binary = await asyncio.to_thread(_tritonclient_nan, gateway.url, fleet.model)
            assert str(binary.status()) == "400", binary
            assert "NaN" in str(binary.message())
        await answered_after(load, 40, timeout_s=60, what="good requests answered beside the NaN ones")
    assert_no_failures(load, gateway)
    assert gateway.metric("gateway_endpoint_ejections_total") == ejections  # the caller's fault ejects nothing
    assert gateway.metric("gateway_upstream_retries_total") == retries  # and is never sent twice
