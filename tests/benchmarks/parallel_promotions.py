"""Benchmark: promotions of many models at once, concurrency 1 against 4, and a rebalance mid-flight.

``make bench`` -> ``.bench/scale.json``:

- ``parallel_ratio_50_models``: time until every one of 50 models requested at once is served with
  ``PROMOTER_WORKER_CONCURRENCY=4``, over the same with 1, measured side by side in one run (each
  with its own freshly registered models, so neither reuses the other's loads); beside it the mean
  Triton load stage at each concurrency (from the workers' logs), which says whether Triton had the
  CPU to load four at once, and the CPU seconds the whole stack used per promotion (from /proc).
  ``--models N`` measures another N (``parallel_models`` says which).
- ``rebalance_*``: two replicas (concurrency 4) in one group; the second joins while the first is
  mid-way through 32 requests, which revokes every partition. ``rebalance_duplicates``: decisions
  beyond one per request (a ``model.ready`` with a generation new for its alias, or a generation
  already on the log with another Triton model: what a gateway could act on); ``rebalance_lost``:
  requests with no decision; ``rebalance_duplicate_loads``: Triton loads beyond one per version.
  ``rebalance_reanswers`` counts harmless restatements (the served generation again, answering a
  redelivered request) apart. ``rebalance_served_by_first``/``_second`` and
  ``rebalance_lanes_at_revocation`` show the rebalance really moved work mid-flight.
  ``--models 0`` runs this part alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import tritonclient.http as triton_http
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import cpu_seconds, group_members
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


def over_grpc(stack: LocalStack) -> dict[str, str]:
    """The worker's settings to reach Triton over gRPC, as README recommends for concurrent promotions.

    Triton's HTTP server holds a thread for the whole of a model load, and loads whose connections
    share a thread queue behind each other (4 concurrent loads ran 1, 2, 3 or 4 at once over HTTP,
    always 4 over gRPC).
    """
    return {"PROMOTER_TRITON_PROTOCOL": "grpc", "PROMOTER_TRITON_ENDPOINTS": stack.triton_grpc}


def register_models(stack: LocalStack, prefix: str, count: int) -> dict[str, int]:
    return {
        name: register_iris(stack.mlflow_tracking_uri, name)
        for name in (f"{prefix}-{i}-{uuid.uuid4().hex[:6]}" for i in range(count))
    }


def ready_documents(records: list[Record]) -> list[dict[str, Any]]:
    documents = [json.loads(r.value) for r in records if r.value]
    return [d for d in documents if d.get("type") == READY]


def answers(records: list[Record]) -> Counter[str]:
    """model.ready records per answered request event id."""
    return Counter(d["data"].get("request_event_id") for d in ready_documents(records))


def classify_answers(records: list[Record], ids: list[str]) -> dict[str, int]:
    """Per request: decisions (a generation new for its model and alias: gateways switch to it) and re-answers.

    A re-answer restates a decision already on the log, same generation and Triton model (``already
    served`` after a redelivery, with the new request's id): every reader ignores it as a decision. So
    only decisions beyond one per request are duplicates, and so is a record that gives a generation
    already on the log another Triton model (a conflict a gateway could act on).
    """
    decided: dict[tuple[str, str, int], str] = {}  # (model, alias, generation) -> Triton model
    decisions: Counter[str] = Counter()
    reanswers: Counter[str] = Counter()
    for document in ready_documents(records):
        data = document["data"]
        request, decision = data.get("request_event_id"), (data["model_name"], data["alias"], data["generation"])
        if decided.get(decision) == data["triton_model_name"]:
            reanswers[request] += 1
        else:
            decided.setdefault(decision, data["triton_model_name"])
            decisions[request] += 1
    return {
        "rebalance_requests": len(ids),
        "rebalance_duplicates": sum(max(0, decisions[i] - 1) for i in ids),
        "rebalance_reanswers": sum(reanswers[i] for i in ids),
        "rebalance_lost": sum(1 for i in ids if decisions[i] == 0),
    }


def served_lines(log_file: Path) -> list[dict[str, Any]]:
    """The replica's "model served" log lines (each names its Triton model and the stages it ran)."""
    lines = (json.loads(line) for line in log_file.read_text().splitlines() if '"model served"' in line)
    return [line for line in lines if line.get("event") == "model served"]


def mean_load_seconds(log_file: Path) -> float:
    """The mean of the promotions' Triton load stage: what a load costs at this concurrency."""
    loads = [line["stages"]["load"] for line in served_lines(log_file) if "load" in line.get("stages", {})]
    return round(sum(loads) / len(loads), 3) if loads else 0.0


def replica_figures(first_log: Path, second_log: Path) -> dict[str, int]:
    """Who served what, loads beyond one per Triton model, and the promotions in flight at the revocation."""
    first, second = served_lines(first_log), served_lines(second_log)
    loads = Counter(line["triton_model"] for line in first + second if "load" in line.get("stages", {}))
    return {
        "rebalance_served_by_first": len(first),
        "rebalance_served_by_second": len(second),
        "rebalance_duplicate_loads": sum(count - 1 for count in loads.values()),
        "rebalance_lanes_at_revocation": lanes_at_revocation(first_log),
    }


def lanes_at_revocation(log_file: Path) -> int:
    """Models (lanes) the first replica had running or queued when its partitions were revoked (from its log)."""
    lanes = 0
    for line in log_file.read_text().splitlines():
        if "finishing the promotions in flight first" in line:
            lanes += json.loads(line).get("lanes", 0)
    return lanes


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


STUB_COMM = "triton_python_b"  # /proc/<pid>/comm of Triton's python-backend stubs (15 characters)


def is_stub(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith(STUB_COMM)
    except OSError:  # gone meanwhile
        return False


def cpu_by_component(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by the live processes of each named process group, and by this client.

    Triton's python-backend stubs (in Triton's group) are counted apart, as ``triton_stubs``.
    """
    used = {"client": cpu_seconds([os.getpid()])}
    for name, pgid in groups.items():
        members = group_members(pgid)
        stubs = [pid for pid in members if name == "tritonserver" and is_stub(pid)]
        used[name] = cpu_seconds(pid for pid in members if pid not in stubs)
        if stubs:
            used["triton_stubs"] = cpu_seconds(stubs)
    return used


async def served_seconds(
    stack: LocalStack, run_dir: Path, models: dict[str, int], concurrency: int
) -> tuple[float, dict[str, float]]:
    """Seconds from the requests' publication until every model is served; CPU seconds per component meanwhile.

    The components are the worker, Triton (its python-backend stubs apart), MLflow, Kafka and this
    client: on this 2-core machine their sum over the wall time says how much room a higher
    concurrency had, and which one grew.
    """
    with running_worker(stack, run_dir, PROMOTER_WORKER_CONCURRENCY=str(concurrency), **over_grpc(stack)) as w:
        groups = {name: ids["pgid"] for name, ids in stack.pids().items()} | {"worker": w.process.pgid}
        cpu_before = cpu_by_component(groups)
        ids, sent = await request_all(w, stack, models)
        await read_until(
            stack.kafka_bootstrap_servers,
            w.topic("model_ready"),
            lambda records: all(answers(records)[i] >= 1 for i in ids),
            timeout_s=SERVED_TIMEOUT_S,
        )
        wall = time.monotonic() - sent
        after = cpu_by_component(groups)
        return wall, {name: seconds - cpu_before.get(name, 0.0) for name, seconds in after.items()}


def cpu_figures(used: dict[str, float], count: int, wall_s: float, concurrency: int) -> dict[str, float]:
    """The stack's CPU per promotion, in all and per component, and the cores it kept busy."""
    total = sum(used.values())
    suffix = f"concurrency_{concurrency}"
    return {
        f"parallel_cpu_per_promotion_{suffix}_s": round(total / count, 3),
        f"parallel_cores_busy_{suffix}": round(total / wall_s, 2),
        **{f"parallel_cpu_{name}_{suffix}_s": round(seconds, 2) for name, seconds in sorted(used.items())},
    }


def mean_stage_seconds(log_file: Path) -> dict[str, float]:
    """The mean of each stage of the promotions served (from the replica's log)."""
    stages: dict[str, list[float]] = {}
    for line in served_lines(log_file):
        for stage, seconds in line.get("stages", {}).items():
            stages.setdefault(stage, []).append(seconds)
    return {stage: round(sum(values) / len(values), 3) for stage, values in stages.items()}


async def rebalance_figures(stack: LocalStack, run_dir: Path, models: dict[str, int]) -> dict[str, int]:
    """Two replicas, the second joining mid-way: decisions beyond one per request, re-answers, requests lost."""
    first_dir, second_dir = run_dir / "first", run_dir / "second"
    with running_worker(
        stack, first_dir, PROMOTER_WORKER_CONCURRENCY="4", PROMOTER_WORKER_REPLICA_ID="first", **over_grpc(stack)
    ) as first:
        ids, _ = await request_all(first, stack, models)
        ready_topic = first.topic("model_ready")
        await read_until(  # the first replica is mid-way: some served, the rest in flight or queued
            stack.kafka_bootstrap_servers, ready_topic, lambda r: sum(answers(r)[i] for i in ids) >= 1, timeout_s=120
        )
        same_group = {**first.topics, "PROMOTER_WORKER_GROUP_ID": first.env["PROMOTER_WORKER_GROUP_ID"]}
        with running_worker(
            stack,
            run_dir / "second",
            PROMOTER_WORKER_CONCURRENCY="4",
            PROMOTER_WORKER_REPLICA_ID="second",
            **same_group,
            **over_grpc(stack),
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
    return {**classify_answers(records, ids), **replica_figures(first_dir / "worker.log", second_dir / "worker.log")}


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
    if count == 0:  # --models 0: the rebalance alone
        return await rebalance_only(stack, run_dir, rebalance_models)
    sequential_models = register_models(stack, "par-c1", count)
    parallel_models = register_models(stack, "par-c4", count)
    one_at_a_time, cpu_1 = await served_seconds(stack, run_dir / "c1", sequential_models, 1)
    unload_all(stack)
    four_at_once, cpu_4 = await served_seconds(stack, run_dir / "c4", parallel_models, 4)
    unload_all(stack)
    rebalance = await rebalance_figures(stack, run_dir / "rebalance", register_models(stack, "reb", rebalance_models))
    unload_all(stack)
    stages = {
        f"parallel_stage_{stage}_mean_concurrency_{c}_s": seconds
        for c in (1, 4)
        for stage, seconds in mean_stage_seconds(run_dir / f"c{c}" / "worker.log").items()
    }
    return {
        "parallel_models": count,
        "parallel_concurrency_1_s": round(one_at_a_time, 2),
        "parallel_concurrency_4_s": round(four_at_once, 2),
        "parallel_ratio_50_models": round(four_at_once / one_at_a_time, 3),
        **cpu_figures(cpu_1, count, one_at_a_time, 1),
        **cpu_figures(cpu_4, count, four_at_once, 4),
        "parallel_load_mean_concurrency_1_s": mean_load_seconds(run_dir / "c1" / "worker.log"),
        "parallel_load_mean_concurrency_4_s": mean_load_seconds(run_dir / "c4" / "worker.log"),
        **stages,
        **rebalance,
    }


async def rebalance_only(stack: LocalStack, run_dir: Path, rebalance_models: int) -> dict[str, float | int]:
    figures = await rebalance_figures(stack, run_dir / "rebalance", register_models(stack, "reb", rebalance_models))
    return dict(figures)


def keep_logs(workers: Path, into: Path) -> None:
    for log_file in workers.rglob("worker.log"):
        target = into / log_file.relative_to(workers)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_file, target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=50, help="models requested at once; 0: the rebalance alone")
    parser.add_argument("--rebalance-models", type=int, default=32)
    parser.add_argument("--keep-logs", type=Path, help="copy the workers' logs here (the rebalance's at INFO)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
        print(f"stack ready in {stack.startup_s:.1f} s; {args.models} models at concurrency 1, then 4")
        try:
            figures = asyncio.run(measure(stack, Path(tmp) / "workers", args.models, args.rebalance_models))
        finally:
            if args.keep_logs is not None:
                keep_logs(Path(tmp) / "workers", args.keep_logs)
    path = merge_figures("scale", figures)
    if args.models:
        print(
            f"{figures['parallel_models']} models: {figures['parallel_concurrency_1_s']} s at concurrency 1, "
            f"{figures['parallel_concurrency_4_s']} s at 4: ratio {figures['parallel_ratio_50_models']} (goal <= 0.6); "
            f"a Triton load takes {figures['parallel_load_mean_concurrency_1_s']} s at 1, "
            f"{figures['parallel_load_mean_concurrency_4_s']} s at 4; the stack's CPU per promotion: "
            f"{figures['parallel_cpu_per_promotion_concurrency_1_s']} s at 1, "
            f"{figures['parallel_cpu_per_promotion_concurrency_4_s']} s at 4"
        )
    print(
        f"rebalance: {figures['rebalance_duplicates']} duplicate decisions, {figures['rebalance_lost']} lost "
        f"of {figures['rebalance_requests']} requests (goal 0 and 0); {figures['rebalance_duplicate_loads']} second "
        f"loads; {figures['rebalance_reanswers']} re-answers of a served generation; served by the first/second "
        f"replica: {figures['rebalance_served_by_first']}/"
        f"{figures['rebalance_served_by_second']}; {figures['rebalance_lanes_at_revocation']} model lanes running "
        "or queued at the revocation"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
