"""Benchmark: the gateway at scale (issue 14, item 5) -> ``.bench/scale.json`` (``make bench``).

Every figure is a ratio of two things measured in the same run on the same machine:

* ``gateway_cold_start_ratio_1000_models``: a new gateway process on a serving-state log of 1,000 models x 2 aliases
  (2,000 ``model.ready`` records of ~1 KB, written straight to fresh topics), from spawn to ``/ready`` 200 (polled
  every 10 ms), over a bare aiokafka consumer reading the same log to its end in a fresh Python process
  (``bare_log_reader.py``, spawn -> exit: the interpreter's start, ``import aiokafka``, the connection, the metadata,
  the read; no parsing, no HTTP server). Medians of interleaved rounds (with the import floor below), each side first
  in turn, after one untimed warm-up run of each (all read compiled bytecode, as an installed wheel does). Beside it
  the CPU seconds each spent by then (``..._cpu_...``: steadier than wall time on a shared machine), the gateway's
  phases from its own log lines, and its replay alone (``gateway_replay_s_1000_models``: Kafka clients up -> caught
  up, while the serving side is imported) against the bare reader's read alone. Goal <= 2. Beside it, in the same
  rotation, the floor under it (``gateway_import_floor_...``): a fresh process that imports only the modules, not the
  project's, that a replica has imported when it answers ``/ready`` (``gateway_import_floor.py``: the standard
  library's and the installed libraries'), spawn -> exit, over the bare reader: the least a gateway built on these
  libraries can reach, before it reads one record.
* ``routing_cost_ratio_1000_models``: the per-request routing decision (``InferenceService.decide``: the table
  lookup and the routing policy) in-process, requests spread over 1,000 routed models against requests for the
  one model of a 1-model table; the worst of three request kinds (default alias, sticky A/B weights with a client
  id, alias pin), each the median of 5 fresh builds of both tables (a build's ratio: the least disturbed round of
  each side, over interleaved rounds, in the timing thread's CPU time so that a preemption is not counted; each
  build's ratio and the ratio of the medians beside it). And
  ``http_routing_cost_ratio_1000_models``: sequential v2 inferences through two gateways to one real Triton model
  (numpy, python backend), one gateway routing only that model and one routing it among 1,000 models; p50 over
  p50, interleaved blocks. Goal <= 1.1.
* ``propagation_ratio_16_vs_4``: a ``model.ready`` published -> every replica's swap ack read back from
  ``gateway.status`` (what the worker waits for), p99 over the swaps, 16 replicas over 4 (each run on its own
  topics, with a one-model log, heartbeats every 5 s; ``propagation_applied_p99_ms_*``: to the replicas' own ack
  timestamps, i.e. without the ack's way back). Goal <= 2.

Triton is used only by the HTTP routing figure; the rest needs only the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deploy.stack import kafka_broker
from deploy.stack.app_processes import gateway_spec
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, cpu_seconds, poll_until, stop_all, wait_all_ready
from deploy.stack.settings import KafkaBrokerName, StackSettings
from gateway.inference import InferenceService
from gateway.metrics import GatewayMetrics
from gateway.routing_table import RoutingState
from gateway.settings import GatewaySettings
from gateway.upstream import TritonUpstream
from runtime.kafka_clients import assign_from_start
from runtime.kafka_topics import ensure_project_topics
from runtime.settings import KafkaSettings, TopicSettings, TritonSettings
from schemas.model_ready import ModelReady, ModelReadyData
from schemas.routing_updated import RoutingUpdatedData
from tests.benchmarks.bench_files import merge_figures
from tests.benchmarks.gateway import percentile, sequential_ms
from tests.gateway_harness import running_gateways
from tests.integration.deploy.test_triton import write_affine_model
from tests.worker_harness import unique_topics

MODELS = 1000
ALIASES = ("champion", "challenger")
BARE_READER = Path(__file__).with_name("bare_log_reader.py")
IMPORT_FLOOR = Path(__file__).with_name("gateway_import_floor.py")
GOALS = {
    "gateway_cold_start_ratio_1000_models": "<= 2.0",
    "routing_cost_ratio_1000_models": "<= 1.1",
    "propagation_ratio_16_vs_4": "<= 2.0",
}
_SIGNATURE = {
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [4]}],
    "columns": [{"name": f"feature_{index}", "type": "double"} for index in range(4)],
}


def ready_data(model: str, alias: str, version: int, triton_model: str, generation: int) -> ModelReadyData:
    """A model.ready as the worker writes it (digest, signature, stage timings), for a model of 4 features."""
    return ModelReadyData.model_validate(
        {
            "model_name": model,
            "alias": alias,
            "version": version,
            "triton_model_name": triton_model,
            "artifact_sha256": uuid.uuid5(uuid.NAMESPACE_URL, triton_model).hex * 2,
            "mlflow_run_id": uuid.uuid5(uuid.NAMESPACE_DNS, triton_model).hex,
            "flavor": "sklearn",
            "signature": _SIGNATURE,
            "max_batch_size": 8,
            "generation": generation,
            "stage_seconds": {"resolve": 0.02, "download": 0.1, "stage": 0.05, "load": 3.9, "smoke": 0.03},
            "pinned": False,
            "registry_version": version,
        }
    )


def ready_record(data: ModelReadyData) -> tuple[bytes, bytes]:
    event = ModelReady(source="/bench/gateway-scale", subject=data.model_name, data=data)
    return data.model_name.encode(), event.to_json_bytes()


def serving_log(models: int, real_model: str | None = None) -> list[tuple[bytes, bytes]]:
    """``models`` models x 2 aliases; model 0 is ``scale-0`` and answers as ``real_model`` (else a fake Triton
    model like the others)."""
    records = []
    for index in range(models):
        name = f"scale-{index}"
        for alias_index, alias in enumerate(ALIASES):
            version = alias_index + 1
            triton = real_model if (index == 0 and real_model) else f"{name}--v{version}"
            records.append(ready_record(ready_data(name, alias, version, triton, generation=alias_index)))
    return records


class Broker(Protocol):
    """What the cold start needs of the stack: its Kafka (a :class:`LocalStack`, or :class:`BrokerOnly`)."""

    @property
    def kafka_bootstrap_servers(self) -> str: ...

    def kafka_settings(self) -> KafkaSettings: ...

    def client_env(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class BrokerOnly:
    """The local stack's Kafka alone, for ``--only cold_start``: it needs no MLflow or Triton (the gateway connects to
    Triton on the first inference), and on a loaded machine MLflow's start can miss its deadline."""

    kafka_bootstrap_servers: str
    broker: KafkaBrokerName

    def kafka_settings(self) -> KafkaSettings:
        return kafka_broker.local_client_settings(self.kafka_bootstrap_servers, self.broker)

    def client_env(self) -> dict[str, str]:
        return {
            "PROMOTER_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            **kafka_broker.client_env(self.broker),
            "PROMOTER_TOPIC_REPLICATION_FACTOR": "1",
        }


@contextmanager
def running_broker(run_dir: Path) -> Iterator[BrokerOnly]:
    """One node of the configured broker (``PROMOTER_STACK_KAFKA_BROKER``), stopped on the way out."""
    broker = StackSettings().kafka_broker
    (port,) = free_ports(1)
    processes = [
        ManagedProcess(spec, run_dir / f"{spec.name}.log")
        for spec in kafka_broker.broker_specs(broker, [port], run_dir)
    ]
    try:
        for process in processes:
            process.start()
        wait_all_ready(processes)
        yield BrokerOnly(f"127.0.0.1:{port}", broker)
    finally:
        stop_all(processes)


async def fresh_topics(stack: Broker) -> dict[str, str]:
    topics = unique_topics()
    names = TopicSettings.model_validate({k.removeprefix("PROMOTER_TOPIC_").lower(): v for k, v in topics.items()})
    await ensure_project_topics(stack.kafka_settings(), names)
    return topics


async def write_records(stack: Broker, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**{**stack.kafka_settings().producer_kwargs(), "linger_ms": 5})
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# -- cold start -----------------------------------------------------------------------------------------------


def bytecode_env(run_dir: Path) -> dict[str, str]:
    """Both sides of the cold start read compiled bytecode, as an installed wheel has it (pip compiles it): written
    by a warm-up run into a cache of the benchmark's own, even where ``PYTHONDONTWRITEBYTECODE`` is set."""
    return {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(run_dir / "pycache")}


@dataclass
class ColdRun:
    """One timed start: wall seconds to the end (exit, or ``/ready``), CPU seconds spent by then, and details."""

    wall_s: float
    cpu_s: float
    details: dict[str, float]


def script_run(script: Path, arguments: list[str], run_dir: Path) -> ColdRun:
    """Spawn -> exit of a Python script that prints a JSON document of details (its CPU from the kernel's account of
    waited-for children)."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(script), *arguments],
        capture_output=True,
        check=True,
        timeout=60,
        env={**os.environ, **bytecode_env(run_dir)},
    )
    took = time.perf_counter() - began
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime
    return ColdRun(took, cpu, json.loads(done.stdout))


def list_gateway_libraries(run_dir: Path) -> Path:
    """A file listing the modules, not the project's, a gateway has imported when it answers ``/ready``."""
    listed = subprocess.run(
        [sys.executable, str(IMPORT_FLOOR), "list"],
        check=False,
        capture_output=True,
        timeout=60,
        env={**os.environ, **bytecode_env(run_dir)},
    )
    if listed.returncode != 0:
        raise RuntimeError(f"listing the gateway's libraries failed: {listed.stderr.decode()[-2000:]}")
    run_dir.mkdir(parents=True, exist_ok=True)
    libraries = run_dir / "gateway-libraries.json"
    libraries.write_bytes(listed.stdout)
    return libraries


def gateway_start(env: dict[str, str], run_dir: Path, name: str, routes: int) -> ColdRun:
    """Spawn -> ``/ready`` 200 of a new gateway process (asserting it routes ``routes``), its CPU by then, and its
    phases from its own log lines (seconds after the spawn), and when its documented HTTP API first answered."""
    http_port, grpc_port = free_ports(2)
    spec = gateway_spec(env, port=http_port, grpc_port=grpc_port, run_dir=run_dir, name=name)
    process = ManagedProcess(spec, run_dir / f"{name}.log")
    spawned = time.time()
    began = time.perf_counter()
    process.start()
    try:
        if not poll_until(process.is_ready, 60.0, 0.01):
            raise TimeoutError(f"{name} not ready within 60 s: {process.tail()}")
        took = time.perf_counter() - began
        cpu = cpu_seconds(process.group_pids())
        served = httpx.get(f"http://127.0.0.1:{http_port}/ready", timeout=10).json()["routes"]
        # A route of the documented HTTP API (FastAPI), built after the replay: answers once it is built.
        httpx.get(f"http://127.0.0.1:{http_port}/v2", timeout=30).raise_for_status()
        documented_api = time.perf_counter() - began
        phases = {**_log_phases(process.log_text(), spawned), "documented_api_s": round(documented_api, 3)}
    finally:
        stop_all([process])
    if served != routes:
        raise AssertionError(f"{name} ready with {served} routes, expected {routes}")
    return ColdRun(took, cpu, phases)


def _log_phases(text: str, spawned: float) -> dict[str, float]:
    """Seconds after the spawn of: the first log line, the replay started (Kafka clients up: ``gateway.replica``),
    the replay caught up, the end of the lifespan start-up (the serving side imported, the gRPC API open); and the
    replay itself (started -> caught up)."""
    phases: dict[str, float] = {}
    wanted = {
        "replaying the serving-state log": "replay_started_s",
        "gateway caught up": "caught_up_s",
        "gateway started": "lifespan_done_s",
    }
    for line in text.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        at = round(datetime.fromisoformat(document["timestamp"]).timestamp() - spawned, 3)
        phases.setdefault("first_log_s", at)
        key = wanted.get(document.get("event", ""))
        if key:
            phases.setdefault(key, at)
    phases["replay_s"] = round(phases["caught_up_s"] - phases["replay_started_s"], 3)
    return phases


async def cold_start(stack: Broker, run_dir: Path, pairs: int) -> dict[str, Any]:
    topics = await fresh_topics(stack)
    log_topics = [topics["PROMOTER_TOPIC_MODEL_READY"], topics["PROMOTER_TOPIC_ROUTING_UPDATED"]]
    await write_records(stack, log_topics[0], serving_log(MODELS))
    env = {**stack.client_env(), **topics, **bytecode_env(run_dir), "PROMOTER_LOG_LEVEL": "INFO"}
    routes = MODELS * len(ALIASES)
    libraries = await asyncio.to_thread(list_gateway_libraries, run_dir)
    starts: dict[str, Callable[[int], ColdRun]] = {
        "bare": lambda _: script_run(BARE_READER, [stack.kafka_bootstrap_servers, *log_topics], run_dir),
        "floor": lambda _: script_run(IMPORT_FLOOR, ["import", str(libraries)], run_dir),
        "gateway": lambda index: gateway_start(env, run_dir, f"gw-cold-{index}-{uuid.uuid4().hex[:6]}", routes),
    }
    for start in starts.values():  # warm-up runs (bytecode), not timed
        await asyncio.to_thread(start, -1)
    runs: dict[str, list[ColdRun]] = {side: [] for side in starts}
    for index in range(pairs):  # interleaved, each side first in turn: drift hits them all
        for side in rotated(list(starts), index):
            runs[side].append(await asyncio.to_thread(starts[side], index))
        if runs["bare"][-1].details["records"] != routes:
            raise AssertionError(f"bare reader read {runs['bare'][-1].details['records']} records")
        bare_run, floor_run, gateway_run = runs["bare"][-1], runs["floor"][-1], runs["gateway"][-1]
        print(
            f"cold start round {index}: bare reader {bare_run.wall_s:.3f} s ({bare_run.cpu_s:.3f} s CPU), "
            f"import floor {floor_run.wall_s:.3f} s ({floor_run.cpu_s:.3f} s CPU, "
            f"{floor_run.details['modules']} modules), "
            f"gateway {gateway_run.wall_s:.3f} s ({gateway_run.cpu_s:.3f} s CPU), phases {gateway_run.details}"
        )

    def median(side: str, figure: Callable[[ColdRun], float]) -> float:
        return statistics.median(figure(run) for run in runs[side])

    bare, gateway = median("bare", lambda run: run.wall_s), median("gateway", lambda run: run.wall_s)
    floor, floor_cpu = median("floor", lambda run: run.wall_s), median("floor", lambda run: run.cpu_s)
    bare_cpu, gateway_cpu = median("bare", lambda run: run.cpu_s), median("gateway", lambda run: run.cpu_s)
    phases = {
        key: statistics.median(run.details[key] for run in runs["gateway"])
        for key in sorted(runs["gateway"][0].details)
    }
    return {
        "gateway_cold_start_ratio_1000_models": round(gateway / bare, 3),
        "gateway_cold_start_s_1000_models": round(gateway, 3),
        "bare_reader_s_1000_models": round(bare, 3),
        "gateway_cold_start_cpu_ratio_1000_models": round(gateway_cpu / bare_cpu, 3),
        "gateway_cold_start_cpu_s_1000_models": round(gateway_cpu, 3),
        "bare_reader_cpu_s_1000_models": round(bare_cpu, 3),
        "gateway_replay_s_1000_models": phases["replay_s"],
        "bare_reader_read_only_s_1000_models": median("bare", lambda run: run.details["read_s"]),
        "serving_log_bytes_1000_models": runs["bare"][0].details["bytes"],
        "gateway_cold_start_runs_s": [round(run.wall_s, 3) for run in runs["gateway"]],
        "bare_reader_runs_s": [round(run.wall_s, 3) for run in runs["bare"]],
        "gateway_cold_start_phases_s": phases,
        "gateway_import_floor_ratio_1000_models": round(floor / bare, 3),
        "gateway_import_floor_s_1000_models": round(floor, 3),
        "gateway_import_floor_cpu_ratio_1000_models": round(floor_cpu / bare_cpu, 3),
        "gateway_import_floor_modules": int(runs["floor"][0].details["modules"]),
        "gateway_import_floor_runs_s": [round(run.wall_s, 3) for run in runs["floor"]],
    }


def rotated(sides: list[str], turn: int) -> list[str]:
    """``sides`` in the order of round ``turn``: each first in turn."""
    shift = turn % len(sides)
    return sides[shift:] + sides[:shift]


# -- the routing decision -------------------------------------------------------------------------------------


def routed_service(models: int, *, policy: bool) -> InferenceService:
    """An inference service (never started: no connection) whose table routes ``models`` models x 2 aliases."""
    state = RoutingState()
    for index in range(models):
        name = f"scale-{index}"
        for alias_index, alias in enumerate(ALIASES):
            state.apply(ready_data(name, alias, alias_index + 1, f"{name}--v{alias_index + 1}", alias_index))
        if policy:
            state.apply(RoutingUpdatedData(model_name=name, weights={"champion": 90, "challenger": 10}, generation=1))
    settings = GatewaySettings(gateway_id="bench")
    upstream = TritonUpstream(TritonSettings(endpoints=["127.0.0.1:1"]), connect_timeout_s=1.0)
    return InferenceService(settings, state, upstream, GatewayMetrics())


_KINDS: dict[str, tuple[bool, Callable[[int], dict[str, str]]]] = {
    "default_alias": (False, lambda _: {}),
    "ab_weights": (True, lambda index: {"x-client-id": f"client-{index % 997}"}),
    "alias_pin": (False, lambda _: {"x-model-alias": "challenger"}),
}


def decision_ns(service: InferenceService, names: list[str], headers: list[dict[str, str]]) -> float:
    """CPU nanoseconds per ``decide`` over the given requests (names and headers pairwise)."""
    decide = service.decide
    gc.collect()
    began = time.thread_time_ns()
    for name, request_headers in zip(names, headers, strict=True):
        decide(name, request_headers)
    return (time.thread_time_ns() - began) / len(names)


def routing_cost(rounds: int, requests: int, builds: int) -> dict[str, Any]:
    """Per kind: ``builds`` fresh pairs of a 1-model and a 1,000-model service, each pair timed in ``rounds``
    interleaved rounds (the least disturbed round of each side: its ratio); the median pair is the figure. Each
    build lays the tables out in memory anew, and a layout can cost one side tens of percent for a whole process
    (a 1.6 ratio once, then 1.0 with the same code), so one build alone says more about its layout than the code."""
    result: dict[str, Any] = {}
    ratios = {}
    for kind, (policy, headers_of) in _KINDS.items():
        headers = [headers_of(index) for index in range(requests)]
        # Fresh strings, as a request's path gives: each request pays the hash of its name.
        one_names = ["".join(("scale-", "0")) for _ in range(requests)]
        many_names = ["".join(("scale-", str(index % MODELS))) for index in range(requests)]
        pairs: list[tuple[float, float]] = []
        medians: list[float] = []
        for _ in range(builds):
            one, many = routed_service(1, policy=policy), routed_service(MODELS, policy=policy)
            samples: dict[str, list[float]] = {"one": [], "many": []}
            for index in range(rounds):
                order = ("one", "many") if index % 2 == 0 else ("many", "one")
                for side in order:
                    service, names = (one, one_names) if side == "one" else (many, many_names)
                    samples[side].append(decision_ns(service, list(names), headers))
            pairs.append((min(samples["one"]), min(samples["many"])))  # the least disturbed round of each
            medians.append(statistics.median(samples["many"]) / statistics.median(samples["one"]))
        pair_ratios = [many_ns / one_ns for one_ns, many_ns in pairs]
        one_ns, many_ns = sorted(pairs, key=lambda pair: pair[1] / pair[0])[len(pairs) // 2]
        ratios[kind] = round(many_ns / one_ns, 3)
        result[f"routing_decision_ns_{kind}"] = {
            "1_model": round(one_ns, 1),
            "1000_models": round(many_ns, 1),
            "builds_ratios": [round(ratio, 3) for ratio in pair_ratios],
            "median_ratio": round(statistics.median(medians), 3),
        }
        print(
            f"routing decision ({kind}): 1 model {one_ns:.0f} ns, 1,000 models {many_ns:.0f} ns "
            f"(ratio per build: {', '.join(f'{ratio:.3f}' for ratio in pair_ratios)})"
        )
    result["routing_cost_ratio_by_kind"] = ratios
    result["routing_cost_ratio_1000_models"] = max(ratios.values())
    return result


# -- the HTTP path through a gateway to one real Triton model -------------------------------------------------


def load_affine_model(stack: LocalStack) -> str:
    name = f"bench-affine-{uuid.uuid4().hex[:8]}"
    write_affine_model(stack.model_repository, name)
    response = httpx.post(f"http://{stack.triton_http}/v2/repository/models/{name}/load", timeout=120)
    response.raise_for_status()
    return name


def unload_model(stack: LocalStack, name: str) -> None:
    httpx.post(f"http://{stack.triton_http}/v2/repository/models/{name}/unload", timeout=30)


async def http_routing_cost(stack: LocalStack, run_dir: Path, blocks: int, per_block: int) -> dict[str, Any]:
    triton_model = await asyncio.to_thread(load_affine_model, stack)
    envs = {}
    for label, models in (("one", 1), ("many", MODELS)):
        topics = await fresh_topics(stack)
        await write_records(stack, topics["PROMOTER_TOPIC_MODEL_READY"], serving_log(models, triton_model))
        envs[label] = {**stack.client_env(), **topics, "PROMOTER_LOG_LEVEL": "WARNING"}
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
    ).encode()
    samples: dict[str, list[float]] = {"one": [], "many": []}
    try:
        with (
            running_gateways(stack, run_dir / "http-one", envs["one"], ["gw-one"]) as (one,),
            running_gateways(stack, run_dir / "http-many", envs["many"], ["gw-many"]) as (many,),
        ):
            urls = {side: f"{gateway.url}/v2/models/scale-0/infer" for side, gateway in (("one", one), ("many", many))}
            async with aiohttp.ClientSession() as http:
                for url in urls.values():
                    await sequential_ms(http, url, body, 50)  # warm both
                for index in range(blocks):
                    for side in ("one", "many") if index % 2 == 0 else ("many", "one"):
                        samples[side] += await sequential_ms(http, urls[side], body, per_block)
    finally:
        await asyncio.to_thread(unload_model, stack, triton_model)
    one_p50, many_p50 = statistics.median(samples["one"]), statistics.median(samples["many"])
    print(f"v2 inference through a gateway: 1 model p50 {one_p50:.3f} ms, 1,000 models p50 {many_p50:.3f} ms")
    return {
        "http_routing_cost_ratio_1000_models": round(many_p50 / one_p50, 3),
        "http_inference_p50_ms": {"1_model": round(one_p50, 3), "1000_models": round(many_p50, 3)},
    }


# -- swap propagation -----------------------------------------------------------------------------------------


class AckReader:
    """Reads ``gateway.status`` from its end: when each replica acked each generation of one model."""

    def __init__(self, stack: LocalStack, topic: str, model: str) -> None:
        kwargs = {**stack.kafka_settings().consumer_kwargs(), "group_id": None, "fetch_max_wait_ms": 100}
        self.consumer = AIOKafkaConsumer(**kwargs)
        self.topic = topic
        self.model = model
        self.acks: dict[int, dict[str, tuple[float, int]]] = {}  # generation -> gateway -> (read at, ack time ms)

    async def start(self) -> None:
        await self.consumer.start()
        partitions = await assign_from_start(self.consumer, [self.topic])
        await self.consumer.seek_to_end(*partitions)

    async def until_acked(self, generation: int, gateways: int, timeout_s: float) -> dict[str, tuple[float, int]]:
        deadline = time.perf_counter() + timeout_s
        while len(self.acks.get(generation, {})) < gateways:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"generation {generation}: acks from {sorted(self.acks.get(generation, {}))} only")
            batches = await self.consumer.getmany(timeout_ms=100)
            read_at = time.perf_counter()
            for batch in batches.values():
                for record in batch:
                    document = json.loads(record.value or b"{}")
                    data = document.get("data", {})
                    if document.get("type") == "io.modelpromoter.gateway.swap_acked.v1":
                        route = data["route"]
                        if route["model_name"] == self.model:
                            acked = self.acks.setdefault(route["generation"], {})
                            acked.setdefault(data["gateway_id"], (read_at, record.timestamp))
        return self.acks[generation]

    async def stop(self) -> None:
        await self.consumer.stop()


async def propagation(stack: LocalStack, run_dir: Path, replicas: int, swaps: int) -> dict[str, float]:
    """p50/p99 of a swap reaching every one of ``replicas`` gateways: acks read back, and acks' own timestamps."""
    topics = await fresh_topics(stack)
    model, ready_topic = "swapped", topics["PROMOTER_TOPIC_MODEL_READY"]
    versions = [ready_data(model, "champion", version, f"swapped--v{version}", 0) for version in (1, 2)]
    await write_records(stack, ready_topic, [ready_record(versions[0])])
    env = {**stack.client_env(), **topics, "PROMOTER_LOG_LEVEL": "INFO"}
    names = [f"gw-{index}" for index in range(replicas)]
    received: list[float] = []
    applied: list[float] = []
    with running_gateways(
        stack, run_dir / f"propagation-{replicas}", env, names, PROMOTER_GATEWAY_HEARTBEAT_INTERVAL_S="5"
    ) as gateways:
        # Ready replicas finish their start-up after /ready (the documented HTTP API is built then: ~0.3 CPU-seconds
        # each); timed swaps start once every one has, so the figure is the fan-out's, not 16 start-ups'.
        for gateway in gateways:
            gateway.get("/v2").raise_for_status()  # answered once that API is built
        reader = AckReader(stack, topics["PROMOTER_TOPIC_GATEWAY_STATUS"], model)
        producer = AIOKafkaProducer(**stack.kafka_settings().producer_kwargs())
        await reader.start()
        await producer.start()
        groups = [gateway.process.group_pids() for gateway in gateways]
        cpu_before = sum(cpu_seconds(pids) for pids in groups)
        swaps_began = time.perf_counter()
        try:
            for generation in range(1, swaps + 1):
                data = versions[generation % 2].model_copy(update={"generation": generation})
                key, value = ready_record(data)
                sent_ms = int(time.time() * 1000)
                began = time.perf_counter()
                await producer.send_and_wait(ready_topic, value, key=key, timestamp_ms=sent_ms)
                acks = await reader.until_acked(generation, replicas, timeout_s=30)
                received.append((max(read_at for read_at, _ in acks.values()) - began) * 1000)
                applied.append(float(max(stamp for _, stamp in acks.values()) - sent_ms))
            elapsed = time.perf_counter() - swaps_began
            cpu = sum(cpu_seconds(pids) for pids in groups) - cpu_before
        finally:
            await producer.stop()
            await reader.stop()
    print(
        f"swap to {replicas} replicas: acks read back p50 {statistics.median(received):.1f} ms, "
        f"p99 {percentile(received, 99):.1f} ms; applied p99 {percentile(applied, 99):.1f} ms; "
        f"{cpu / swaps / replicas * 1000:.2f} ms CPU per replica and swap"
    )
    return {
        "p50_ms": round(statistics.median(received), 2),
        "p99_ms": round(percentile(received, 99), 2),
        "applied_p50_ms": round(statistics.median(applied), 2),
        "applied_p99_ms": round(percentile(applied, 99), 2),
        "replica_cpu_ms_per_swap": round(cpu / swaps / replicas * 1000, 3),
        "replicas_cores_busy": round(cpu / elapsed, 2),
    }


async def propagation_figures(stack: LocalStack, run_dir: Path, swaps: int) -> dict[str, Any]:
    four = await propagation(stack, run_dir, 4, swaps)
    sixteen = await propagation(stack, run_dir, 16, swaps)
    result: dict[str, Any] = {"propagation_ratio_16_vs_4": round(sixteen["p99_ms"] / four["p99_ms"], 3)}
    for label, figures in (("4", four), ("16", sixteen)):
        result[f"propagation_p50_ms_{label}"] = figures["p50_ms"]
        result[f"propagation_p99_ms_{label}"] = figures["p99_ms"]
        result[f"propagation_applied_p99_ms_{label}"] = figures["applied_p99_ms"]
        result[f"propagation_replica_cpu_ms_per_swap_{label}"] = figures["replica_cpu_ms_per_swap"]
        result[f"propagation_replicas_cores_busy_{label}"] = figures["replicas_cores_busy"]
    result["propagation_swaps"] = swaps
    return result


PARTS = ("cold_start", "routing", "http_routing", "propagation")


NEED_THE_STACK = {"http_routing", "propagation"}  # Triton; the gateway harness


async def measure(stack: Broker, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    parts = set(args.only or PARTS)
    result: dict[str, Any] = {}
    if "cold_start" in parts:
        result.update(await cold_start(stack, run_dir / "cold", args.cold_pairs))
    if "routing" in parts:
        result.update(routing_cost(args.rounds, args.requests, args.builds))
    if parts & NEED_THE_STACK:
        assert isinstance(stack, LocalStack)
        if "http_routing" in parts:
            result.update(await http_routing_cost(stack, run_dir, args.http_blocks, args.http_per_block))
        if "propagation" in parts:
            result.update(await propagation_figures(stack, run_dir, args.swaps))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--cold-pairs", type=int, default=5, help="cold start rounds (bare reader, import floor, gateway)"
    )
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds of the routing decision per build")
    parser.add_argument("--builds", type=int, default=5, help="fresh routing tables per request kind (median)")
    parser.add_argument("--requests", type=int, default=20_000, help="routing decisions per round")
    parser.add_argument("--http-blocks", type=int, default=10, help="interleaved blocks of v2 inferences")
    parser.add_argument("--http-per-block", type=int, default=100)
    parser.add_argument("--swaps", type=int, default=200, help="swaps timed per replica count")
    parser.add_argument(
        "--only", action="append", choices=PARTS, metavar="PART", help=f"measure only (repeatable): {', '.join(PARTS)}"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-scale-") as tmp:
        if set(args.only or PARTS) & NEED_THE_STACK:
            with LocalStack(Path(tmp) / "stack") as stack:
                print(f"stack ready in {stack.startup_s:.1f} s")
                result = asyncio.run(measure(stack, Path(tmp), args))
        else:
            with running_broker(Path(tmp) / "broker") as broker:
                result = asyncio.run(measure(broker, Path(tmp), args))
    result["gateway_scale_goals"] = GOALS
    path = merge_figures("scale", result)
    for key, goal in GOALS.items():
        if key in result:
            print(f"{key}: {result[key]} (goal {goal})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
