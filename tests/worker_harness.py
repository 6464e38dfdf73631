"""Helpers for tests of the worker on the real stack: models in MLflow, topics, a worker process."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import mlflow
import mlflow.sklearn
import numpy as np
import sklearn
import tritonclient.http as triton_http
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from mlflow import MlflowClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from deploy.stack.app_processes import worker_spec
from deploy.stack.kafka_broker import local_client_settings
from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from runtime.kafka_clients import assign_from_start
from schemas.promotion_requested import PromotionRequested, PromotionRequestedData

Record: TypeAlias = ConsumerRecord[bytes, bytes]


def iris_frame() -> tuple[Any, Any]:
    features, target = load_iris(return_X_y=True, as_frame=True)
    return features, target


#: What MLflow would infer for an iris classifier, declared: inferring it runs a subprocess that imports
#: the model's modules (about 4 s of every registration on a 2-core machine).
SKLEARN_REQUIREMENTS = (f"scikit-learn=={sklearn.__version__}", f"numpy=={np.__version__}")


@functools.cache
def trained_iris(regularisation: float) -> LogisticRegression:
    """An iris classifier; fitted once per ``regularisation`` per test process (the fit is deterministic)."""
    features, target = iris_frame()
    return LogisticRegression(max_iter=1000, C=regularisation).fit(features, target)


def register_iris(
    tracking_uri: str,
    name: str,
    *,
    regularisation: float = 1.0,
    signature: bool = True,
    pip_requirements: Sequence[str] = SKLEARN_REQUIREMENTS,
) -> int:
    """Log and register an iris classifier as a new MLflow run; return the new version number."""
    features, _ = iris_frame()
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            trained_iris(regularisation),
            name="model",
            registered_model_name=name,
            input_example=features.head(5) if signature else None,
            pip_requirements=list(pip_requirements),
        )
    version = info.registered_model_version
    assert version is not None
    return int(version)


def ready_on(url: str, model: str) -> bool:
    """True when the Triton at ``url`` reports ``model`` READY; False when it does not, or is down or restarting."""
    client = triton_http.InferenceServerClient(url, network_timeout=10)
    try:
        return bool(client.is_model_ready(model))
    except Exception:  # down or restarting: not ready
        return False
    finally:
        client.close()


def set_alias(tracking_uri: str, name: str, alias: str, version: int) -> None:
    MlflowClient(tracking_uri).set_registered_model_alias(name, alias, str(version))


def sklearn_predictions(tracking_uri: str, name: str, version: int, rows: Any) -> np.ndarray[Any, Any]:
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    return np.asarray(model.predict(rows))


def request_bytes(
    model: str, *, alias: str = "champion", version: int | None = None, event_id: str | None = None
) -> bytes:
    event = PromotionRequested(
        id=event_id or str(uuid.uuid4()),
        source="/tests",
        subject=model,
        data=PromotionRequestedData(model_name=model, alias=alias, version=version, origin="cli", requester="pytest"),
    )
    return event.to_json_bytes()


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(**local_client_settings(bootstrap).producer_kwargs())
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def read_until(
    bootstrap: str, topic: str, done: Callable[[list[Record]], bool], *, timeout_s: float = 60.0
) -> list[Record]:
    """Every record of ``topic`` from the start, once ``done(records)`` holds (AssertionError at the deadline).

    It long-polls as the services do (``fetch_max_wait_ms`` of the local broker's client settings: the broker
    answers as soon as a record arrives). ``done`` is asked at least every 0.2 s, records or not: it may also
    look at something else (a worker's metrics).
    """
    wait_ms = local_client_settings(bootstrap).fetch_max_wait_ms
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=wait_ms)
    await consumer.start()
    records: list[Record] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not await assign_from_start(consumer, [topic]):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: the topic did not appear within {timeout_s} s")
        while not done(records):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{topic}: condition not met within {timeout_s} s; got {len(records)} records")
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 0.2) * 1000))
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def snapshot(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> list[Record]:
    """Every record of ``topic`` right now: read until each partition reached the end offset seen at
    the start and a fetch came back empty (tansu under-reports end offsets after batches)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    records: list[Record] = []
    try:
        partitions = await assign_from_start(consumer, [topic])
        if not partitions:
            return records  # the topic does not exist (yet): nothing on it
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
            if not batches and all([await consumer.position(p) >= end for p, end in ends.items()]):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: not read to its end within {timeout_s} s; got {len(records)} records")
    finally:
        await consumer.stop()


def events(records: list[Record]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if r.value]


def about(documents: list[dict[str, Any]], model: str, event_type: str | None = None) -> list[dict[str, Any]]:
    """The events whose subject is ``model`` (and whose type is ``event_type``, if given)."""
    return [e for e in documents if e.get("subject") == model and (event_type is None or e["type"] == event_type)]


async def events_about(
    bootstrap: str, topic: str, model: str, *, count: int = 1, event_type: str | None = None, timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    """The events about ``model`` on ``topic``, once there are at least ``count`` of them."""
    records = await read_until(
        bootstrap, topic, lambda r: len(about(events(r), model, event_type)) >= count, timeout_s=timeout_s
    )
    return about(events(records), model, event_type)


def headers(record: Record) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


@dataclass
class WorkerHandle:
    process: ManagedProcess
    topics: dict[str, str]
    health_url: str
    env: dict[str, str]

    def topic(self, name: str) -> str:
        """The topic this worker uses for ``name`` (e.g. ``model_ready``)."""
        return self.topics[f"PROMOTER_TOPIC_{name.upper()}"]

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"{self.health_url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        prefix = f"{name}{{{wanted}}}" if labels else name
        total = 0.0
        for line in self.metrics_text().splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            if series == prefix or (
                labels and series.startswith(name + "{") and all(f'{k}="{v}"' in series for k, v in labels.items())
            ):
                total += float(value)
        return total


def unique_topics() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    names = (
        "promotion_requested",
        "model_ready",
        "model_rejected",
        "promotion_dlq",
        "gateway_status",
        "routing_updated",
        "dead_letter_replays",
    )
    return {f"PROMOTER_TOPIC_{n.upper()}": f"it.{n}.{suffix}" for n in names}


@contextmanager
def running_worker(stack: LocalStack, run_dir: Path, **settings: str) -> Iterator[WorkerHandle]:
    """A ``promoter-worker`` process on fresh topics and a fresh group, stopped afterwards."""
    name = settings.get("PROMOTER_WORKER_REPLICA_ID", "worker")  # the spec sets the replica id from its name
    with running_workers(stack, {name: run_dir}, **settings) as (worker,):
        yield worker


@contextmanager
def running_workers(stack: LocalStack, run_dirs: dict[str, Path], **settings: str) -> Iterator[list[WorkerHandle]]:
    """Worker replicas named by ``run_dirs``' keys (each logging to its ``worker.log`` there), in one group on the
    same fresh topics, started at once and stopped afterwards."""
    topics = unique_topics()
    env = {
        **stack.client_env(),
        **topics,
        "PROMOTER_WORKER_GROUP_ID": f"it-worker-{uuid.uuid4().hex[:8]}",
        "PROMOTER_WORKER_BACKOFF_INITIAL_S": "0.2",
        "PROMOTER_WORKER_BACKOFF_MAX_S": "1",
        "PROMOTER_TRITON_LOAD_TIMEOUT_S": "60",
        "PROMOTER_TRITON_REQUEST_TIMEOUT_S": "5",
        "PROMOTER_LOG_LEVEL": "INFO",
        **settings,
    }
    ports = free_ports(len(run_dirs))
    handles = []
    for (name, run_dir), port in zip(run_dirs.items(), ports, strict=True):
        run_dir.mkdir(parents=True, exist_ok=True)
        own = {"PROMOTER_WORKER_DOWNLOAD_DIR": str(run_dir / "downloads"), **env}
        process = ManagedProcess(worker_spec(own, health_port=port, run_dir=run_dir, name=name), run_dir / "worker.log")
        handles.append(WorkerHandle(process=process, topics=topics, health_url=f"http://127.0.0.1:{port}", env=own))
    try:
        for handle in handles:
            handle.process.start()
        wait_all_ready(handle.process for handle in handles)
        yield handles
    finally:
        stop_all(handle.process for handle in handles)


async def until(probe: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str) -> None:
    """Await ``probe()`` until it is true; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true within {timeout_s} s")
        await asyncio.sleep(0.2)  # polling a condition with a deadline


async def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true within {timeout_s} s")
        await asyncio.sleep(0.05)  # polling a condition with a deadline
