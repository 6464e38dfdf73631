"""Benchmark: the gateway against direct Triton on the real local stack (``make bench`` -> ``.bench/gateway.json``).

Measured side by side with the same client (aiohttp, asyncio) on the same machine:

* ``overhead_p50_ms``: sequential 1-row v2 inference, p50 through one gateway minus p50 direct to Triton.
* ``throughput_ratio_16``: requests/s at 16 concurrent clients through one gateway / direct to Triton, the
  median of interleaved pairs, direct and gateway first in turn (``throughput_ratio_16_runs``), with the
  CPU each request cost the client, Triton and the gateway (``cpu_us_per_request_16``), the cores each kept
  busy (``cores_busy_16``) and the share of requests the gateway merged into shared Triton inferences
  (``merged_share_16``). Client, gateway and Triton share the same 2 cores; the worker is stopped meanwhile
  (its broker polling is not on the path being measured).
* ``swap_propagation_p99_ms``: a ``model.ready`` published -> all 4 replicas answer with the new version
  (each replica polled about every millisecond; the figure includes that polling resolution).
* ``cold_start_10k_s``: a new gateway process on a 10,000-event log, from spawn to ``/ready`` 200
  (``cold_start_10k_replay_s``: the replay alone, from the replica's own log lines).
* ``failed_requests_during_swaps``: failed requests of a steady ~200 requests/s open-loop load spread
  over the 4 replicas, across 10 real promotions (the alias flips between two registered versions).
* gRPC, the same client (``grpc.aio`` stubs, raw tensors) both ways: ``grpc_overhead_ratio``, the sequential
  1-row p50 through the gateway's gRPC API over direct Triton gRPC; ``grpc_throughput_ratio_16``, requests/s
  at 16 concurrent clients on one channel, gateway over direct (median of interleaved pairs), with the
  absolute rates, the CPU per request (``grpc_cpu_us_per_request_16``; ``gateway_front``: the Go child's
  share of ``gateway``) and the share of requests merged (``grpc_merged_share_16``); the gateway answers gRPC
  with its native front (Go), and a replica with the Python front alone (``PROMOTER_GATEWAY_GRPC_FRONT=python``)
  is measured in the same runs (``grpc_python_front_*``); ``--grpc-only`` measures just this (its figures
  replace those in ``.bench/gateway.json``); ``grpc_failed_requests_during_swaps``,
  failed requests of the same steady ~200 requests/s load over the 4 replicas' gRPC APIs across 10 more
  promotions (after the HTTP run, not beside it: one client process cannot drive both).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import grpc
import httpx
import numpy as np
from aiokafka import AIOKafkaProducer
from tritonclient.grpc import service_pb2, service_pb2_grpc

from deploy.stack.app_processes import gateway_spec
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, child_pid, cpu_seconds, poll_until, stop_all, wait_all_ready
from deploy.stack.triton_server import NAME as TRITON
from gateway.grpc_front import BINARY_NAME
from tests.benchmarks.bench_files import merge_figures
from tests.gateway_harness import GatewayHandle, promote, ready_bytes, running_gateways
from tests.worker_harness import WorkerHandle, iris_frame, register_iris, running_worker, unique_topics

BENCH_DIR = Path(".bench")
TARGETS = {
    "overhead_p50_ms": "<= 1.0",
    "throughput_ratio_16": ">= 0.75",
    "swap_propagation_p99_ms": "<= 100",
    "cold_start_10k_s": "<= 2.0",
    "failed_requests_during_swaps": "== 0",
    "grpc_throughput_ratio_16": ">= 0.75",
    "grpc_failed_requests_during_swaps": "== 0",
}


class Measured(Protocol):
    """Processes whose CPU time is measured: a service's process group, or one process of it."""

    def group_pids(self) -> list[int]: ...


@dataclass(frozen=True)
class NativeFront:
    """A replica's native gRPC front alone (its Go child), so the gateway's CPU splits into Go and Python."""

    replica: ManagedProcess

    def group_pids(self) -> list[int]:
        pid = child_pid(self.replica.pid, lambda command: BINARY_NAME in command)
        return [] if pid is None else [pid]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def v2_body(rows: int = 1) -> bytes:
    data = iris_frame()[0].head(rows).to_numpy(dtype=float)
    tensor = {"name": "input", "shape": list(data.shape), "datatype": "FP64", "data": data.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


JSON_HEADERS = {"content-type": "application/json"}


async def sequential_ms(http: aiohttp.ClientSession, url: str, body: bytes, count: int) -> list[float]:
    samples: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        async with http.post(url, data=body, headers=JSON_HEADERS) as response:
            await response.read()
        samples.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
    return samples


async def closed_loop(
    call: Callable[[], Awaitable[object]], clients: int, seconds: float, processes: Mapping[str, Measured]
) -> tuple[float, dict[str, float]]:
    """Requests/s of ``clients`` closed-loop callers of ``call``, and the CPU µs each request cost the client
    and ``processes``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    groups = {name: process.group_pids() for name, process in processes.items()}
    cpu_before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    client_before = time.process_time()
    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in groups.items()}
    cpu["client"] = time.process_time() - client_before
    return done / elapsed, {name: round(used / done * 1e6, 1) for name, used in cpu.items()}


async def throughput(
    url: str, body: bytes, clients: int, seconds: float, processes: Mapping[str, Measured]
) -> tuple[float, dict[str, float]]:
    """Requests/s of ``clients`` closed-loop HTTP clients, and the CPU µs each request cost the client and
    ``processes``."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http:

        async def post() -> None:
            async with http.post(url, data=body, headers=JSON_HEADERS) as response:
                await response.read()
            response.raise_for_status()

        return await closed_loop(post, clients, seconds, processes)


async def propagation_ms(
    stack: LocalStack, topic: str, gateways: list[GatewayHandle], templates: list[dict[str, Any]], swaps: int
) -> list[float]:
    """Publish model.ready for a dedicated model, alternating two Triton models; time until all replicas switch."""
    model = f"bench-swap-{uuid.uuid4().hex[:6]}"
    producer = AIOKafkaProducer(**stack.kafka_settings().producer_kwargs())
    await producer.start()
    samples: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def version_on(gateway: GatewayHandle) -> str | None:
                response = await http.get(f"{gateway.url}/v2/models/{model}/ready")
                version = response.headers.get("x-model-version")
                return str(version) if version is not None else None

            for generation in range(swaps + 1):
                template = templates[generation % len(templates)]
                value = ready_bytes(template, model_name=model, generation=generation)
                expected = str(template["data"]["version"])
                began = time.perf_counter()
                await producer.send_and_wait(topic, value, key=model.encode())
                pending = list(gateways)
                while pending:
                    seen = await asyncio.gather(*(version_on(g) for g in pending))
                    pending = [g for g, v in zip(pending, seen, strict=True) if v != expected]
                    if time.perf_counter() - began > 10:
                        raise TimeoutError(f"swap {generation} not seen by {[g.name for g in pending]}")
                if generation:  # the first one creates the model: not a swap
                    samples.append((time.perf_counter() - began) * 1000)
    finally:
        await producer.stop()
    return samples


async def steady_load(
    gateways: list[GatewayHandle], model: str, rate: float, stop: asyncio.Event, results: dict[str, int]
) -> None:
    row = dict(zip(iris_frame()[0].columns, map(float, iris_frame()[0].iloc[0]), strict=True))
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        tasks: set[asyncio.Task[None]] = set()

        async def one(index: int) -> None:
            gateway = gateways[index % len(gateways)]
            try:
                response = await http.post(f"{gateway.url}/predict/{model}", json=row)
                key = "ok" if response.status_code == 200 else f"http_{response.status_code}"
            except httpx.HTTPError as error:
                key = type(error).__name__
            results[key] = results.get(key, 0) + 1

        began = time.perf_counter()
        sent = 0
        while not stop.is_set():
            due = began + sent / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))  # open-loop pacing of the load itself
            task = asyncio.create_task(one(sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.gather(*tasks)


def grpc_request(model: str) -> Any:
    """A 1-row ``ModelInferRequest`` with the tensor as raw_input_contents (what tritonclient.grpc sends)."""
    rows = iris_frame()[0].head(1).to_numpy(dtype=np.float64)
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input", datatype="FP64")
    tensor.shape.extend(rows.shape)
    request.raw_input_contents.append(rows.tobytes())
    return request


async def grpc_sequential_ms(stub: Any, request: Any, count: int) -> list[float]:
    samples: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        await stub.ModelInfer(request, timeout=10)
        samples.append((time.perf_counter() - began) * 1000)
    return samples


async def grpc_side_by_side(
    stack: LocalStack,
    gateway: GatewayHandle,
    python_gateway: GatewayHandle,
    name: str,
    triton_model: str,
    sequential: int,
    seconds: float,
    pairs: int,
) -> dict[str, Any]:
    """Direct Triton gRPC vs the gateway's gRPC API (its native front; and a replica with the Python front alone,
    ``grpc_python_*``): sequential p50 ratio, then throughput at 16 clients sharing one channel, with the CPU each
    request cost and the share of requests the gateway merged."""
    result: dict[str, Any] = {}
    triton_process = next(p for p in stack.processes if p.name == TRITON)
    processes: dict[str, dict[str, Measured]] = {
        "direct": {"triton": triton_process},
        # gateway: the whole replica (Go child and Python); gateway_front: the Go child alone
        "gateway": {
            "triton": triton_process,
            "gateway": gateway.process,
            "gateway_front": NativeFront(gateway.process),
        },
        "python": {"triton": triton_process, "gateway": python_gateway.process},
    }
    async with (
        grpc.aio.insecure_channel(stack.triton_grpc) as direct_channel,
        grpc.aio.insecure_channel(gateway.grpc_address) as gateway_channel,
        grpc.aio.insecure_channel(python_gateway.grpc_address) as python_channel,
    ):
        sides = {
            "direct": (service_pb2_grpc.GRPCInferenceServiceStub(direct_channel), grpc_request(triton_model)),
            "gateway": (service_pb2_grpc.GRPCInferenceServiceStub(gateway_channel), grpc_request(name)),
            "python": (service_pb2_grpc.GRPCInferenceServiceStub(python_channel), grpc_request(name)),
        }
        for stub, request in sides.values():
            await grpc_sequential_ms(stub, request, 50)  # warm every path
        samples: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(sequential // 100):  # interleaved blocks: drift hits every side alike
            for side, (stub, request) in sides.items():
                samples[side] += await grpc_sequential_ms(stub, request, 100)
        direct_p50, gateway_p50, python_p50 = (statistics.median(samples[side]) for side in sides)
        result["grpc_direct_p50_ms"] = round(direct_p50, 3)
        result["grpc_gateway_p50_ms"] = round(gateway_p50, 3)
        result["grpc_overhead_ratio"] = round(gateway_p50 / direct_p50, 3)
        result["grpc_python_front_p50_ms"] = round(python_p50, 3)
        result["grpc_python_front_overhead_ratio"] = round(python_p50 / direct_p50, 3)
        print(
            f"gRPC sequential p50: direct {direct_p50:.3f} ms, gateway {gateway_p50:.3f} ms "
            f"(Python front {python_p50:.3f} ms)"
        )
        merged_before = gateway.metric("gateway_merged_requests_total")
        answered_before = gateway.metric("gateway_requests_total", protocol="grpc", code="200")
        runs = []
        for index in range(pairs):  # the order turns: each side is first, second and third alike
            order = list(sides)[index % 3 :] + list(sides)[: index % 3]
            run = {}
            for side in order:
                stub, request = sides[side]
                run[side] = await closed_loop(
                    functools.partial(stub.ModelInfer, request, timeout=10), 16, seconds, processes[side]
                )
            runs.append(run)
            print(
                f"gRPC 16 clients: direct {run['direct'][0]:.0f}/s, gateway {run['gateway'][0]:.0f}/s "
                f"(Python front {run['python'][0]:.0f}/s)"
            )
        merged = gateway.metric("gateway_merged_requests_total") - merged_before
        answered = gateway.metric("gateway_requests_total", protocol="grpc", code="200") - answered_before
    python_ratios = sorted(run["python"][0] / run["direct"][0] for run in runs)
    result["grpc_python_front_throughput_ratio_16"] = round(python_ratios[len(python_ratios) // 2], 3)
    result["grpc_python_front_cpu_us_per_request_16"] = sorted(
        (run["python"][1] for run in runs), key=lambda cpu: cpu.get("gateway", 0.0)
    )[len(runs) // 2]
    runs.sort(key=lambda run: run["gateway"][0] / run["direct"][0])
    (direct_rps, direct_cpu), (gateway_rps, gateway_cpu) = (
        runs[len(runs) // 2]["direct"],
        runs[len(runs) // 2]["gateway"],
    )
    result["grpc_direct_rps_16"] = round(direct_rps, 1)
    result["grpc_gateway_rps_16"] = round(gateway_rps, 1)
    result["grpc_throughput_ratio_16"] = round(gateway_rps / direct_rps, 3)
    result["grpc_throughput_ratio_16_runs"] = [round(run["gateway"][0] / run["direct"][0], 3) for run in runs]
    result["grpc_cpu_us_per_request_16"] = {"direct": direct_cpu, "gateway": gateway_cpu}
    result["grpc_merged_share_16"] = round(merged / answered, 3)
    print(f"gRPC CPU µs per request: direct {direct_cpu}, through the gateway {gateway_cpu}")
    print(f"gRPC requests the gateway merged into shared Triton inferences: {result['grpc_merged_share_16']:.0%}")
    return result


async def steady_grpc_load(
    gateways: list[GatewayHandle], model: str, rate: float, stop: asyncio.Event, results: dict[str, int]
) -> None:
    """Like ``steady_load``, over the gateways' gRPC APIs; outcomes by gRPC status."""
    request = grpc_request(model)
    channels = [grpc.aio.insecure_channel(gateway.grpc_address) for gateway in gateways]
    stubs = [service_pb2_grpc.GRPCInferenceServiceStub(channel) for channel in channels]
    tasks: set[asyncio.Task[None]] = set()

    async def one(index: int) -> None:
        try:
            await stubs[index % len(stubs)].ModelInfer(request, timeout=10)
            key = "ok"
        except grpc.aio.AioRpcError as error:
            key = error.code().name
        results[key] = results.get(key, 0) + 1

    began = time.perf_counter()
    sent = 0
    try:
        while not stop.is_set():
            await asyncio.sleep(max(0.0, began + sent / rate - time.perf_counter()))  # open-loop pacing
            task = asyncio.create_task(one(sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.gather(*tasks)
    finally:
        for channel in channels:
            await channel.close()


Load = Callable[[list[GatewayHandle], str, float, asyncio.Event, dict[str, int]], Coroutine[Any, Any, None]]


async def swaps_under_load(
    stack: LocalStack,
    worker: WorkerHandle,
    gateways: list[GatewayHandle],
    model: str,
    load: Load,
    versions: list[int],
) -> tuple[dict[str, int], float]:
    """Outcomes of a steady ~200 requests/s ``load`` while ``model`` is promoted to each of ``versions`` in turn,
    and the request rate it kept."""
    outcomes: dict[str, int] = {}
    stop = asyncio.Event()
    running = asyncio.create_task(load(gateways, model, 200.0, stop, outcomes))
    began = time.perf_counter()
    try:
        await wait_until(lambda: sum(outcomes.values()) >= 200, 10.0)  # steady before the first swap
        for version in versions:
            await promote(stack, worker, model, version)
        settled = sum(outcomes.values())
        await wait_until(lambda: sum(outcomes.values()) >= settled + 200, 10.0)  # and after the last
    finally:
        stop.set()
        await running
    return outcomes, round(sum(outcomes.values()) / (time.perf_counter() - began), 1)


@contextmanager
def stopped(process: ManagedProcess) -> Iterator[None]:
    """``process`` stopped for the block and started again after it (same environment: same topics and group)."""
    stop_all([process])
    try:
        yield
    finally:
        process.start()
        wait_all_ready([process])


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)  # polling a condition with a deadline


def _log_time(line: str) -> float:
    return datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()


async def cold_start(
    stack: LocalStack, run_dir: Path, base_env: dict[str, str], template: dict[str, Any]
) -> dict[str, float]:
    topics = unique_topics()
    env = {**base_env, **topics}
    producer = AIOKafkaProducer(**{**stack.kafka_settings().producer_kwargs(), "linger_ms": 5})
    await producer.start()
    from runtime.kafka_topics import ensure_project_topics
    from runtime.settings import KafkaSettings, TopicSettings

    await ensure_project_topics(
        KafkaSettings(bootstrap_servers=stack.kafka_bootstrap_servers),
        TopicSettings.model_validate({k.removeprefix("PROMOTER_TOPIC_").lower(): v for k, v in topics.items()}),
    )
    try:
        futures = []
        for index in range(10_000):
            model = f"cold-{index % 100}"
            value = ready_bytes(template, model_name=model, alias="champion", generation=index // 100)
            futures.append(await producer.send(topics["PROMOTER_TOPIC_MODEL_READY"], value, key=model.encode()))
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    (port,) = free_ports(1)
    process = ManagedProcess(gateway_spec(env, port=port, run_dir=run_dir, name="gw-cold"), run_dir / "gw-cold.log")
    began = time.perf_counter()
    process.start()
    try:
        handle = GatewayHandle("gw-cold", f"http://127.0.0.1:{port}", process)
        ok = await asyncio.to_thread(poll_until, process.is_ready, 60.0, 0.01)
        total = time.perf_counter() - began
        if not ok:
            raise TimeoutError("cold gateway not ready within 60 s")
        served = await asyncio.to_thread(handle.get, "/models")
        lines = process.log_text().splitlines()
        started = next(_log_time(line) for line in lines if '"gateway started"' in line)
        caught_up = next(_log_time(line) for line in lines if '"gateway caught up"' in line)
        models = len(served.json()["models"])
    finally:
        stop_all([process])
    assert models == 100, models
    return {"cold_start_10k_s": round(total, 3), "cold_start_10k_replay_s": round(caught_up - started, 3)}


async def side_by_side(
    stack: LocalStack,
    gateway: GatewayHandle,
    direct_url: str,
    name: str,
    sequential: int,
    seconds: float,
    pair_count: int,
) -> dict[str, Any]:
    """Direct Triton vs through ``gateway``: sequential latency, then throughput at 16 clients."""
    result: dict[str, Any] = {}
    body = v2_body()
    gateway_url = f"{gateway.url}/v2/models/{name}/infer"
    async with aiohttp.ClientSession() as http:
        await sequential_ms(http, direct_url, body, 50)  # warm both paths
        await sequential_ms(http, gateway_url, body, 50)
        direct: list[float] = []
        through: list[float] = []
        for _ in range(sequential // 100):  # interleaved blocks: drift hits both sides alike
            direct += await sequential_ms(http, direct_url, body, 100)
            through += await sequential_ms(http, gateway_url, body, 100)
    result["direct_p50_ms"] = round(statistics.median(direct), 3)
    result["gateway_p50_ms"] = round(statistics.median(through), 3)
    result["overhead_p50_ms"] = round(result["gateway_p50_ms"] - result["direct_p50_ms"], 3)
    result["overhead_p99_ms"] = round(percentile(through, 99) - percentile(direct, 99), 3)
    print(f"sequential p50: direct {result['direct_p50_ms']} ms, gateway {result['gateway_p50_ms']} ms")

    triton_process = next(p for p in stack.processes if p.name == TRITON)
    merged_before = gateway.metric("gateway_merged_requests_total")
    answered_before = gateway.metric("gateway_requests_total", code="200")
    sides = {
        "direct": (direct_url, {"triton": triton_process}),
        "gateway": (gateway_url, {"triton": triton_process, "gateway": gateway.process}),
    }
    pairs = []
    for index in range(pair_count):  # interleaved pairs, in turn direct first and gateway first: drift hits both
        order = ("direct", "gateway") if index % 2 == 0 else ("gateway", "direct")
        runs = {side: await throughput(sides[side][0], body, 16, seconds, sides[side][1]) for side in order}
        (direct_rps, direct_cpu), (gateway_rps, gateway_cpu) = runs["direct"], runs["gateway"]
        pairs.append((direct_rps, gateway_rps, direct_cpu, gateway_cpu))
        print(f"16 clients: direct {direct_rps:.0f}/s, gateway {gateway_rps:.0f}/s")
    pairs.sort(key=lambda pair: pair[1] / pair[0])
    direct_rps, gateway_rps, direct_cpu, gateway_cpu = pairs[len(pairs) // 2]  # the median pair
    result["direct_rps_16"] = round(direct_rps, 1)
    result["gateway_rps_16"] = round(gateway_rps, 1)
    result["throughput_ratio_16"] = round(gateway_rps / direct_rps, 3)
    result["throughput_ratio_16_runs"] = [round(g / d, 3) for d, g, _, _ in pairs]
    result["cpu_us_per_request_16"] = {"direct": direct_cpu, "gateway": gateway_cpu}
    merged = gateway.metric("gateway_merged_requests_total") - merged_before
    answered = gateway.metric("gateway_requests_total", code="200") - answered_before
    result["merged_share_16"] = round(merged / answered, 3)
    result["cores_busy_16"] = {  # of the machine's 2
        "direct": {name: round(us * direct_rps / 1e6, 2) for name, us in direct_cpu.items()},
        "gateway": {name: round(us * gateway_rps / 1e6, 2) for name, us in gateway_cpu.items()},
    }
    print(f"CPU µs per request: direct {direct_cpu}, through the gateway {gateway_cpu}")
    print(f"requests the gateway merged into shared Triton inferences: {result['merged_share_16']:.0%}")

    return result


async def measure(
    stack: LocalStack,
    run_dir: Path,
    sequential: int,
    seconds: float,
    throughput_pairs: int,
    swaps: int,
    *,
    grpc_only: bool = False,
) -> dict[str, Any]:
    name = f"bench-gw-{uuid.uuid4().hex[:6]}"
    uri = stack.mlflow_tracking_uri
    versions = [register_iris(uri, name, regularisation=c) for c in (1.0, 0.01)]
    result: dict[str, Any] = {}
    with running_worker(stack, run_dir / "worker", PROMOTER_LOG_LEVEL="WARNING") as worker:
        templates = [await promote(stack, worker, name, v) for v in versions]  # v2 is champion now
        env = {**worker.env, "PROMOTER_LOG_LEVEL": "INFO"}
        python_front = {"PROMOTER_GATEWAY_GRPC_FRONT": "python"}
        with (
            stopped(worker.process),
            running_gateways(stack, run_dir / "alone", env, ["gw-alone"]) as (alone,),
            running_gateways(stack, run_dir / "alone-python", env, ["gw-python"], **python_front) as (python,),
        ):
            triton = templates[-1]["data"]["triton_model_name"]
            direct_url = f"http://{stack.triton_http}/v2/models/{triton}/infer"
            if not grpc_only:
                result.update(await side_by_side(stack, alone, direct_url, name, sequential, seconds, throughput_pairs))
            result.update(
                await grpc_side_by_side(stack, alone, python, name, triton, sequential, seconds, throughput_pairs)
            )
        if grpc_only:
            return result
        names = [f"gw-{i}" for i in range(4)]
        with running_gateways(stack, run_dir / "gateways", env, names) as gateways:
            samples = await propagation_ms(
                stack, worker.topics["PROMOTER_TOPIC_MODEL_READY"], gateways, templates, swaps
            )
            result["swap_propagation_p50_ms"] = round(statistics.median(samples), 2)
            result["swap_propagation_p99_ms"] = round(percentile(samples, 99), 2)
            result["swap_propagation_samples"] = len(samples)
            p50, p99 = result["swap_propagation_p50_ms"], result["swap_propagation_p99_ms"]
            print(f"swap propagation to 4 replicas: p50 {p50} ms, p99 {p99} ms")

            promotions = 10
            alternate = [versions[index % 2] for index in range(promotions)]
            for protocol, load in (("", steady_load), ("grpc_", steady_grpc_load)):  # one protocol at a time
                outcomes, rate = await swaps_under_load(stack, worker, gateways, name, load, alternate)
                total = sum(outcomes.values())
                result[f"{protocol}requests_during_swaps"] = total
                result[f"{protocol}request_rate_during_swaps"] = rate
                result[f"{protocol}failed_requests_during_swaps"] = total - outcomes.get("ok", 0)
                result[f"{protocol}outcomes_during_swaps"] = outcomes
                print(f"{protocol or 'http_'}load: {promotions} promotions under {rate:.0f} req/s: {outcomes}")
            result["promotions_under_load"] = promotions

        cold_env = {**worker.env, "PROMOTER_LOG_LEVEL": "INFO"}  # its log lines time the replay
        result.update(await cold_start(stack, run_dir / "cold", cold_env, templates[0]))
        cold, replay = result["cold_start_10k_s"], result["cold_start_10k_replay_s"]
        print(f"cold start on 10,000 events: {cold} s (replay {replay} s)")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--throughput-pairs", type=int, default=7, help="direct/gateway throughput pairs (median)")
    parser.add_argument("--swaps", type=int, default=40)
    parser.add_argument(
        "--grpc-only", action="store_true", help="only the gRPC side by side (its figures into .bench/gateway.json)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
        print(f"stack ready in {stack.startup_s:.1f} s")
        result = asyncio.run(
            measure(
                stack,
                Path(tmp),
                args.sequential,
                args.seconds,
                args.throughput_pairs,
                args.swaps,
                grpc_only=args.grpc_only,
            )
        )
    targets = {key: target for key, target in TARGETS.items() if key in result}
    if args.grpc_only:  # the gRPC figures replace those of .bench/gateway.json, the others stay
        written = merge_figures("gateway", {**result, "grpc_measured_at": datetime.now().isoformat(timespec="seconds")})
    else:
        result["targets"] = targets
        BENCH_DIR.mkdir(exist_ok=True)
        written = BENCH_DIR / "gateway.json"
        written.write_text(json.dumps(result, indent=2) + "\n")
    for key, target in targets.items():
        print(f"{key}: {result[key]} (target {target})")
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
