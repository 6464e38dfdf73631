"""Benchmark: promotions of many models at once, concurrency 1 against 4, and a rebalance mid-flight.

``make bench`` -> ``.bench/scale.json``:

- ``parallel_ratio_50_models``: time until every one of N models requested at once is served with
  ``PROMOTER_WORKER_CONCURRENCY=4``, over the same with 1, measured side by side in one run (each
  with its own freshly registered models, so neither reuses the other's loads). N defaults to 12,
  not 50: a Triton load of a scikit-learn version takes 3-4 s here, and 50 one after another would
  take minutes; ``--models 50`` measures the issue's figure. ``parallel_models`` says which N.
- ``rebalance_duplicates`` / ``rebalance_lost``: two replicas (concurrency 4) in one group; the second
  joins while the first is mid-way through the requests, which revokes every partition. Counted:
  ``model.ready`` records beyond one per request, and requests with none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import tritonclient.http as triton_http
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from deploy.stack.local_stack import LocalStack
from schemas.topics import PROMOTION_REQUESTED
from tests.benchmarks.bench_files import merge_figures
from tests.worker_harness import (
    Record,
    WorkerHandle,
    produce,
    read_until,
    register_iris,
    request_bytes,
    running_worker,
    until,
)

READY = "io.modelpromoter.model.ready.v1"
SERVED_TIMEOUT_S = 900.0


def register_models(stack: LocalStack, prefix: str, count: int) -> dict[str, int]:
    return {
        name: register_iris(stack.mlflow_tracking_uri, name)
        for name in (f"{prefix}-{i}-{uuid.uuid4().hex[:6]}" for i in range(count))
    }


def answers(records: list[Record]) -> Counter[str]:
    """model.ready records per answered request event id."""
    documents = [json.loads(r.value) for r in records if r.value]
    return Counter(d["data"].get("request_event_id") for d in documents if d.get("type") == READY)


async def request_all(worker: WorkerHandle, stack: LocalStack, models: dict[str, int]) -> tuple[list[str], float]:
    """Publish one pinned champion request per model; the event ids and when they were sent."""
    ids = [str(uuid.uuid4()) for _ in models]
    messages: list[tuple[bytes | None, bytes]] = [
        (name.encode(), request_bytes(name, version=version, event_id=event_id))
        for (name, version), event_id in zip(models.items(), ids, strict=True)
    ]
    sent = time.monotonic()
    await produce(stack.kafka_bootstrap_servers, worker.topic("promotion_requested"), messages)
    return ids, sent


async def served_seconds(stack: LocalStack, run_dir: Path, models: dict[str, int], concurrency: int) -> float:
    """Seconds from the requests' publication until every model is served."""
    with running_worker(
        stack, run_dir, PROMOTER_WORKER_CONCURRENCY=str(concurrency), PROMOTER_LOG_LEVEL="WARNING"
    ) as w:
        ids, sent = await request_all(w, stack, models)
        await read_until(
            stack.kafka_bootstrap_servers,
            w.topic("model_ready"),
            lambda records: all(answers(records)[i] >= 1 for i in ids),
            timeout_s=SERVED_TIMEOUT_S,
        )
        return time.monotonic() - sent


async def rebalance_figures(stack: LocalStack, run_dir: Path, models: dict[str, int]) -> dict[str, int]:
    """Two replicas, the second joining mid-way: model.ready records beyond one per request, and requests lost."""
    with running_worker(stack, run_dir / "a", PROMOTER_WORKER_CONCURRENCY="4", PROMOTER_LOG_LEVEL="WARNING") as first:
        ids, _ = await request_all(first, stack, models)
        ready_topic = first.topic("model_ready")
        await read_until(  # the first replica is mid-way: some served, the rest in flight or queued
            stack.kafka_bootstrap_servers, ready_topic, lambda r: sum(answers(r)[i] for i in ids) >= 1, timeout_s=120
        )
        same_group = {**first.topics, "PROMOTER_WORKER_GROUP_ID": first.env["PROMOTER_WORKER_GROUP_ID"]}
        with running_worker(
            stack, run_dir / "b", PROMOTER_WORKER_CONCURRENCY="4", PROMOTER_LOG_LEVEL="WARNING", **same_group
        ):
            records = await read_until(
                stack.kafka_bootstrap_servers,
                ready_topic,
                lambda r: all(answers(r)[i] >= 1 for i in ids),
                timeout_s=SERVED_TIMEOUT_S,
            )
            # A request handled twice would be answered before its offset is committed: wait until the group
            # committed every request, then read the answers once more.
            group, requested = same_group["PROMOTER_WORKER_GROUP_ID"], first.topic("promotion_requested")
            await until(
                lambda: all_committed(stack, group, requested, len(ids)), timeout_s=120, what="every offset committed"
            )
            records = await read_until(stack.kafka_bootstrap_servers, ready_topic, lambda r: len(r) >= len(records))
    counts = answers(records)
    return {
        "rebalance_requests": len(ids),
        "rebalance_duplicates": sum(max(0, counts[i] - 1) for i in ids),
        "rebalance_lost": sum(1 for i in ids if counts[i] == 0),
    }


async def all_committed(stack: LocalStack, group: str, topic: str, records: int) -> bool:
    """True once ``group``'s committed offsets on the (fresh) ``topic`` add up to its ``records``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap_servers)
    await admin.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PROMOTION_REQUESTED.partitions)]
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await admin.close()
    done: int = sum(max(0, offset.offset) for offset in committed.values())
    return done >= records


def unload_all(stack: LocalStack) -> None:
    """Free Triton's memory between the runs (each loaded scikit-learn version is ~200 MB)."""
    client = triton_http.InferenceServerClient(stack.triton_http, network_timeout=60)
    try:
        for model in client.get_model_repository_index():
            if model.get("state") == "READY":
                client.unload_model(model["name"])
    finally:
        client.close()


async def measure(stack: LocalStack, run_dir: Path, count: int, rebalance_models: int) -> dict[str, float | int]:
    sequential_models = register_models(stack, "par-c1", count)
    parallel_models = register_models(stack, "par-c4", count)
    one_at_a_time = await served_seconds(stack, run_dir / "c1", sequential_models, 1)
    unload_all(stack)
    four_at_once = await served_seconds(stack, run_dir / "c4", parallel_models, 4)
    unload_all(stack)
    rebalance = await rebalance_figures(stack, run_dir / "rebalance", register_models(stack, "reb", rebalance_models))
    unload_all(stack)
    return {
        "parallel_models": count,
        "parallel_concurrency_1_s": round(one_at_a_time, 2),
        "parallel_concurrency_4_s": round(four_at_once, 2),
        "parallel_ratio_50_models": round(four_at_once / one_at_a_time, 3),
        **rebalance,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=12, help="models requested at once (the issue's goal: 50)")
    parser.add_argument("--rebalance-models", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
        print(f"stack ready in {stack.startup_s:.1f} s; {args.models} models at concurrency 1, then 4")
        figures = asyncio.run(measure(stack, Path(tmp) / "workers", args.models, args.rebalance_models))
    path = merge_figures("scale", figures)
    print(
        f"{figures['parallel_models']} models: {figures['parallel_concurrency_1_s']} s at concurrency 1, "
        f"{figures['parallel_concurrency_4_s']} s at 4: ratio {figures['parallel_ratio_50_models']} (goal <= 0.6)"
    )
    print(
        f"rebalance: {figures['rebalance_duplicates']} duplicates, {figures['rebalance_lost']} lost "
        f"of {figures['rebalance_requests']} requests (goal 0 and 0)"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
