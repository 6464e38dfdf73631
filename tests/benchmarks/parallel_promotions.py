"""Benchmark: promotions of many models at once, concurrency 1 against 4, and a rebalance mid-flight.

``make bench`` -> ``.bench/scale.json``:

- ``parallel_ratio_50_models``: time until every one of 50 models requested at once is served with
  ``PROMOTER_WORKER_CONCURRENCY=4``, over the same with 1, measured side by side in one run (each
  with its own freshly registered models, so neither reuses the other's loads); beside it the mean
  Triton load stage at each concurrency (from the workers' logs), which says whether Triton had the
  CPU to load four at once, and the CPU seconds the whole stack used per promotion (from /proc).
  ``--models N`` measures another N (``parallel_models`` says which). Measured in ``--pairs`` pairs (3), in
  turn concurrency 1 first and 4 first; the ratio is the median pair's (every pair's in
  ``parallel_ratio_pairs``), and the other figures are that pair's: on this shared 2-core machine one pair
  gave anything from 0.52 to 0.77 within half an hour, the CPU per promotion at 4 varying 0.32-0.46 s.
- ``rebalance_*``: two replicas (concurrency 4) in one group, 32 requests; once the first is served, a
  third member joins the group and leaves (``tests/group_rebalance.py``): two rebalances, each revoking
  every partition of both replicas mid-flight. ``rebalance_duplicates``: decisions
  beyond one per request (a ``model.ready`` with a generation new for its alias, or a generation
  already on the log with another Triton model: what a gateway could act on); ``rebalance_lost``:
  requests with no decision; ``rebalance_duplicate_loads``: Triton loads beyond one per version.
  ``rebalance_reanswers`` counts harmless restatements (the served generation again, answering a
  redelivered request) apart. ``rebalance_served_by_first``/``_second`` and
  ``rebalance_lanes_at_revocation`` (lanes running or queued at the revocations, both replicas) show the
  rebalances hit work in flight.
  ``--models 0`` runs this part alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tritonclient.http as triton_http

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import command_line, cpu_seconds, group_members
from tests.benchmarks.bench_files import merge_figures
from tests.group_rebalance import answers, rebalance_mid_flight, request_all, served_lines
from tests.worker_harness import Record, read_until, ready_on, register_iris, running_worker, wait_for
from worker.shared_runtime import RUNTIME_MODEL, RUNTIME_PREFIX

SERVED_TIMEOUT_S = 900.0
RUNTIME_READY_TIMEOUT_S = 120.0


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


def mean_load_seconds(log_file: Path) -> float:
    """The mean of the promotions' Triton load stage: what a load costs at this concurrency."""
    loads = [line["stages"]["load"] for line in served_lines(log_file) if "load" in line.get("stages", {})]
    return round(sum(loads) / len(loads), 3) if loads else 0.0


STUB_COMM = "triton_python_b"  # /proc/<pid>/comm of Triton's python-backend stubs (15 characters)


def is_stub(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith(STUB_COMM)
    except OSError:  # gone meanwhile
        return False


def cpu_by_component(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by the live processes of each named process group, and by this client.

    Triton's python-backend stubs (in Triton's group) are counted apart: the shared scikit-learn runtime's as
    ``triton_runtime_stub`` (it loads every version's estimator and answers their proofs), the versions' own
    (one each: an interpreter with numpy) as ``triton_version_stubs``.
    """
    used = {"client": cpu_seconds([os.getpid()])}
    for name, pgid in groups.items():
        members = group_members(pgid)
        stubs = [pid for pid in members if name == "tritonserver" and is_stub(pid)]
        used[name] = cpu_seconds(pid for pid in members if pid not in stubs)
        if stubs:
            runtime = [pid for pid in stubs if RUNTIME_PREFIX in (command_line(pid) or "")]
            used["triton_runtime_stub"] = cpu_seconds(runtime)
            used["triton_version_stubs"] = cpu_seconds(pid for pid in stubs if pid not in runtime)
    return used


class AllAnswered:
    """``read_until``'s condition: every request in ``ids`` answered. Each record is parsed once (the condition is
    asked every 0.2 s with every record read so far: parsing them all each time was this client's CPU, taken from
    the 2 cores the stack is measured on)."""

    def __init__(self, ids: list[str]) -> None:
        self.unanswered = set(ids)
        self.read = 0

    def __call__(self, records: list[Record]) -> bool:
        self.unanswered.difference_update(answers(records[self.read :]))
        self.read = len(records)
        return not self.unanswered


async def served_seconds(
    stack: LocalStack, run_dir: Path, models: dict[str, int], concurrency: int
) -> tuple[float, dict[str, float]]:
    """Seconds from the requests' publication until every model is served; CPU seconds per component meanwhile.

    The components are the worker, Triton (its python-backend stubs apart), MLflow, Kafka and this
    client: on this 2-core machine their sum over the wall time says how much room a higher
    concurrency had, and which one grew.

    The clock starts once the shared scikit-learn runtime is READY on Triton. A worker reports ready
    before its preload of the runtime ends (worker/runtime_upkeep.py), and a runtime loads once per
    Triton process (1.1-1.9 s here), so counted in both runs it added the same second or two to each:
    the first promotions of the run, one at concurrency 1 and four at 4, waited for it.
    """
    with running_worker(stack, run_dir, PROMOTER_WORKER_CONCURRENCY=str(concurrency), **over_grpc(stack)) as w:
        await wait_for(
            lambda: ready_on(stack.triton_http, RUNTIME_MODEL),
            timeout_s=RUNTIME_READY_TIMEOUT_S,
            what=f"the worker's preload of {RUNTIME_MODEL}",
        )
        groups = {name: ids["pgid"] for name, ids in stack.pids().items()} | {"worker": w.process.pgid}
        cpu_before = cpu_by_component(groups)
        sent = time.monotonic()
        ids = await request_all(w, stack.kafka_bootstrap_servers, models)
        await read_until(
            stack.kafka_bootstrap_servers, w.topic("model_ready"), AllAnswered(ids), timeout_s=SERVED_TIMEOUT_S
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


def unload_all(stack: LocalStack) -> None:
    """Unload every version between the runs, so neither run serves the other's; the shared runtime stays, as a
    worker leaves it loaded."""
    client = triton_http.InferenceServerClient(stack.triton_http, network_timeout=60)
    try:
        for model in client.get_model_repository_index():
            if model.get("state") == "READY" and not model["name"].startswith(RUNTIME_PREFIX):
                client.unload_model(model["name"])
    finally:
        client.close()


@dataclass(frozen=True, slots=True)
class Pair:
    """One run at concurrency 1 and one at 4, each with freshly registered models; their logs under ``run_dir``."""

    run_dir: Path
    seconds: dict[int, float]  # concurrency -> until every model was served
    cpu: dict[int, dict[str, float]]  # concurrency -> CPU seconds per component

    @property
    def ratio(self) -> float:
        return self.seconds[4] / self.seconds[1]


async def measure_pair(stack: LocalStack, run_dir: Path, count: int, order: tuple[int, int]) -> Pair:
    seconds: dict[int, float] = {}
    cpu: dict[int, dict[str, float]] = {}
    for concurrency in order:
        models = register_models(stack, f"par-c{concurrency}", count)
        seconds[concurrency], cpu[concurrency] = await served_seconds(
            stack, run_dir / f"c{concurrency}", models, concurrency
        )
        unload_all(stack)
    return Pair(run_dir, seconds, cpu)


async def measure(stack: LocalStack, run_dir: Path, count: int, rebalance_models: int, pairs: int) -> dict[str, Any]:
    if count == 0:  # --models 0: the rebalance alone
        return await rebalance_only(stack, run_dir, rebalance_models)
    measured = []
    for index in range(pairs):  # in turn concurrency 1 first and 4 first: drift hits both sides
        order = (1, 4) if index % 2 == 0 else (4, 1)
        pair = await measure_pair(stack, run_dir / f"pair-{index}", count, order)
        at_1, at_4 = pair.seconds[1], pair.seconds[4]
        print(f"pair {index} ({order[0]} first): {at_1:.2f} s at 1, {at_4:.2f} s at 4: ratio {pair.ratio:.3f}")
        measured.append(pair)
    rebalance: dict[str, int] = {}
    if rebalance_models > 0:  # --rebalance-models 0: the concurrency comparison alone
        rebalance = await rebalance_figures(stack, run_dir / "rebalance", rebalance_models)
        unload_all(stack)
    median = sorted(measured, key=lambda pair: pair.ratio)[len(measured) // 2]  # its figures stand for the run
    stages = {
        f"parallel_stage_{stage}_mean_concurrency_{c}_s": seconds
        for c in (1, 4)
        for stage, seconds in mean_stage_seconds(median.run_dir / f"c{c}" / "worker.log").items()
    }
    return {
        "parallel_models": count,
        "parallel_pairs": pairs,
        "parallel_ratio_50_models": round(median.ratio, 3),
        "parallel_ratio_pairs": [round(pair.ratio, 3) for pair in measured],
        "parallel_concurrency_1_s": round(median.seconds[1], 2),
        "parallel_concurrency_4_s": round(median.seconds[4], 2),
        "parallel_concurrency_1_pairs_s": [round(pair.seconds[1], 2) for pair in measured],
        "parallel_concurrency_4_pairs_s": [round(pair.seconds[4], 2) for pair in measured],
        **cpu_figures(median.cpu[1], count, median.seconds[1], 1),
        **cpu_figures(median.cpu[4], count, median.seconds[4], 4),
        "parallel_load_mean_concurrency_1_s": mean_load_seconds(median.run_dir / "c1" / "worker.log"),
        "parallel_load_mean_concurrency_4_s": mean_load_seconds(median.run_dir / "c4" / "worker.log"),
        **stages,
        **rebalance,
    }


async def rebalance_only(stack: LocalStack, run_dir: Path, rebalance_models: int) -> dict[str, float | int]:
    return dict(await rebalance_figures(stack, run_dir / "rebalance", rebalance_models))


async def rebalance_figures(stack: LocalStack, run_dir: Path, count: int) -> dict[str, int]:
    """Two replicas at concurrency 4, ``count`` models, a rebalance forced mid-flight (``tests/group_rebalance``)."""
    models = register_models(stack, "reb", count)
    return await rebalance_mid_flight(
        stack,
        run_dir,
        models,
        served_timeout_s=SERVED_TIMEOUT_S,
        worker_env={"PROMOTER_WORKER_CONCURRENCY": "4", **over_grpc(stack)},
    )


def keep_logs(workers: Path, into: Path) -> None:
    for log_file in workers.rglob("worker.log"):
        target = into / log_file.relative_to(workers)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_file, target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=50, help="models requested at once; 0: the rebalance alone")
    parser.add_argument("--rebalance-models", type=int, default=32, help="0: no rebalance part")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of runs (1 and 4); the ratio is the median pair's")
    parser.add_argument("--keep-logs", type=Path, help="copy the workers' logs here (the rebalance's at INFO)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
        print(
            f"stack ready in {stack.startup_s:.1f} s; {args.models} models, {args.pairs} pairs of concurrency 1 and 4"
        )
        try:
            figures = asyncio.run(measure(stack, Path(tmp) / "workers", args.models, args.rebalance_models, args.pairs))
        finally:
            if args.keep_logs is not None:
                keep_logs(Path(tmp) / "workers", args.keep_logs)
    path = merge_figures("scale", figures)
    if args.models:
        print(
            f"{figures['parallel_models']} models, median of {figures['parallel_pairs']} pairs: "
            f"{figures['parallel_concurrency_1_s']} s at concurrency 1, "
            f"{figures['parallel_concurrency_4_s']} s at 4: ratio {figures['parallel_ratio_50_models']} (goal <= 0.6); "
            f"a Triton load takes {figures['parallel_load_mean_concurrency_1_s']} s at 1, "
            f"{figures['parallel_load_mean_concurrency_4_s']} s at 4; the stack's CPU per promotion: "
            f"{figures['parallel_cpu_per_promotion_concurrency_1_s']} s at 1, "
            f"{figures['parallel_cpu_per_promotion_concurrency_4_s']} s at 4"
        )
    if "rebalance_requests" in figures:
        print(
            f"rebalance: {figures['rebalance_duplicates']} duplicate decisions, {figures['rebalance_lost']} lost "
            f"of {figures['rebalance_requests']} requests (goal 0 and 0); "
            f"{figures['rebalance_duplicate_loads']} second loads; {figures['rebalance_reanswers']} re-answers of a "
            "served generation; served by the first/second "
            f"replica: {figures['rebalance_served_by_first']}/"
            f"{figures['rebalance_served_by_second']}; {figures['rebalance_lanes_at_revocation']} model lanes running "
            "or queued at the revocation"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
