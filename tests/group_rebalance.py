"""Two worker replicas in one group, disrupted in the middle of their promotions (issue 14, item 3).

Used by ``tests/integration/worker/test_rebalance.py`` (asserts), ``tests/benchmarks/parallel_promotions.py`` and
``make chaos`` (figures). Both replicas start at once and settle into the group; one pinned request per model is
published; once some are served, the group is disrupted. By default a third member joins the group and leaves as
soon as it was assigned partitions: two rebalances, each revoking every partition of both replicas while
promotions are under way (the intruder commits nothing and handles nothing, so what it held goes back). Or one
replica is frozen until the group evicts it (:func:`first_frozen_past_its_session`). Counted once the group
committed every request: decisions beyond one per request, requests without a decision, Triton loads beyond one
per version, and the lanes each replica was running when its partitions were revoked (that the rebalance hit work
in flight).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from deploy.stack.local_stack import LocalStack
from schemas.topics import PROMOTION_REQUESTED
from tests.worker_harness import (
    Record,
    WorkerHandle,
    produce,
    read_until,
    request_bytes,
    running_workers,
    snapshot,
    until,
    wait_for,
)

READY = "io.modelpromoter.model.ready.v1"
REPLICAS = ("first", "second")
REVOKED_IN_FLIGHT = "partitions revoked: finishing the promotions in flight first"  # worker/concurrent_batches.py


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


def log_lines(log_file: Path, event: str) -> list[dict[str, Any]]:
    """The replica's JSON log lines whose event is ``event`` (complete lines: the log may be read while written)."""
    lines = log_file.read_text().split("\n")[:-1]  # the text after the last newline may be a line half written
    documents = (json.loads(line) for line in lines if f'"{event}"' in line)
    return [document for document in documents if document.get("event") == event]


def served_lines(log_file: Path) -> list[dict[str, Any]]:
    """The replica's "model served" log lines (each names its Triton model and the stages it ran)."""
    return log_lines(log_file, "model served")


def lanes_at_revocation(log_file: Path) -> int:
    """Model lanes the replica had running or queued when its partitions were revoked, over every revocation."""
    revocations = log_lines(log_file, REVOKED_IN_FLIGHT)
    return sum(line.get("lanes", 0) for line in revocations)


def replica_figures(logs: dict[str, Path]) -> dict[str, int]:
    """Who served what, loads beyond one per Triton model, and the lanes in flight at the revocations."""
    served = {name: served_lines(log_file) for name, log_file in logs.items()}
    loads = Counter(
        line["triton_model"] for lines in served.values() for line in lines if "load" in line.get("stages", {})
    )
    return {
        **{f"rebalance_served_by_{name}": len(lines) for name, lines in served.items()},
        "rebalance_duplicate_loads": sum(count - 1 for count in loads.values()),
        "rebalance_lanes_at_revocation": sum(lanes_at_revocation(log_file) for log_file in logs.values()),
    }


def assigned(log_file: Path) -> set[str]:
    """The partitions the replica's last "partitions assigned" line gave it."""
    lines = log_lines(log_file, "partitions assigned")
    return set(lines[-1]["partitions"]) if lines else set()


def settled(logs: list[Path], partitions: int) -> bool:
    """True when the replicas' last assignments share out every partition, each replica holding some."""
    held = [assigned(log_file) for log_file in logs]
    return all(held) and sum(len(h) for h in held) == partitions and len(set().union(*held)) == partitions


async def force_rebalance(bootstrap: str, group: str, topic: str, *, timeout_s: float = 120.0) -> None:
    """A member joins ``group`` and leaves once it holds partitions: the group rebalances as it joins and as
    it leaves. It commits nothing (what it fetched is its next owner's to handle)."""
    intruder = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await intruder.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not intruder.assignment():
            if time.monotonic() > deadline:
                raise AssertionError(f"the intruder got no partition of {topic} within {timeout_s} s")
            await intruder.getmany(timeout_ms=100)  # joins the group; the records fetched are not handled
    finally:
        await intruder.stop()  # leaves the group


#: What is done to the group once the first request is answered (the replicas; their run logs by name).
Disruption = Callable[[list[WorkerHandle], dict[str, Path]], Awaitable[None]]


async def intruder_joins_and_leaves(workers: list[WorkerHandle], logs: dict[str, Path]) -> None:
    """Two rebalances, each revoking every partition of both replicas (:func:`force_rebalance`)."""
    first = workers[0]
    bootstrap, group = first.env["PROMOTER_KAFKA_BOOTSTRAP_SERVERS"], first.env["PROMOTER_WORKER_GROUP_ID"]
    await force_rebalance(bootstrap, group, first.topic("promotion_requested"))


async def first_frozen_past_its_session(workers: list[WorkerHandle], logs: dict[str, Path]) -> None:
    """The first replica stops (SIGSTOP: a stalled VM, a long pause) until the group evicted it and gave every
    partition to the second, then goes on (SIGCONT) with the promotions it had in flight: their offsets can no
    longer be committed, so the second replica handles those requests again."""
    frozen, _ = workers
    os.kill(frozen.process.pid, signal.SIGSTOP)
    try:
        await wait_for(
            lambda: len(assigned(logs[REPLICAS[1]])) == PROMOTION_REQUESTED.partitions,
            timeout_s=60,
            what="the second replica holding every partition",
        )
    finally:
        os.kill(frozen.process.pid, signal.SIGCONT)


async def all_committed(bootstrap: str, group: str, topic: str, records: int) -> bool:
    """True once ``group``'s committed offsets on the (fresh) ``topic`` add up to its ``records``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PROMOTION_REQUESTED.partitions)]
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await admin.close()
    done: int = sum(max(0, offset.offset) for offset in committed.values())
    return done >= records


async def request_all(worker: WorkerHandle, bootstrap: str, models: dict[str, int]) -> list[str]:
    """Publish one pinned champion request per model; their event ids."""
    ids = [str(uuid.uuid4()) for _ in models]
    messages: list[tuple[bytes | None, bytes]] = [
        (name.encode(), request_bytes(name, version=version, event_id=event_id))
        for (name, version), event_id in zip(models.items(), ids, strict=True)
    ]
    await produce(bootstrap, worker.topic("promotion_requested"), messages)
    return ids


async def rebalance_mid_flight(
    stack: LocalStack,
    run_dir: Path,
    models: dict[str, int],
    *,
    served_timeout_s: float,
    worker_env: Mapping[str, str],
    disrupt: Disruption = intruder_joins_and_leaves,
) -> dict[str, int]:
    """Two replicas (with ``worker_env`` beside the stack's settings) promote ``models`` while the group is
    disrupted (by default, forced to rebalance); the figures (module docstring). A request still unanswered
    ``served_timeout_s`` after the disruption counts as lost."""
    bootstrap = stack.kafka_bootstrap_servers
    logs = {name: run_dir / name / "worker.log" for name in REPLICAS}
    with running_workers(stack, {name: run_dir / name for name in REPLICAS}, **worker_env) as workers:
        first = workers[0]
        group, requested = first.env["PROMOTER_WORKER_GROUP_ID"], first.topic("promotion_requested")
        await wait_for(
            lambda: settled(list(logs.values()), PROMOTION_REQUESTED.partitions),
            timeout_s=120,
            what="both replicas holding partitions",
        )
        ids = await request_all(first, bootstrap, models)
        ready_topic = first.topic("model_ready")
        await read_until(bootstrap, ready_topic, lambda r: sum(answers(r)[i] for i in ids) >= 1, timeout_s=300)
        await disrupt(workers, logs)
        try:
            records = await read_until(
                bootstrap, ready_topic, lambda r: all(answers(r)[i] >= 1 for i in ids), timeout_s=served_timeout_s
            )
        except AssertionError:  # some request unanswered by the deadline: counted below as lost
            records = await snapshot(bootstrap, ready_topic)
        # A request handled twice would be answered before its offset is committed: wait until the group
        # committed every request, then read the answers once more.
        await until(
            lambda: all_committed(bootstrap, group, requested, len(ids)), timeout_s=120, what="every offset committed"
        )
        records = await read_until(bootstrap, ready_topic, lambda r: len(r) >= len(records))
    return {**classify_answers(records, ids), **replica_figures(logs)}
