"""Benchmark: memory stays flat over 200 promotions alternating between versions of one model.

``make bench`` -> ``.bench/scale.json``. One worker and one real gateway on the local stack, so that
retirement runs as in production: the worker unloads a version once no live gateway routes it (the
gateway's ack), not after ``PROMOTER_WORKER_RETIRE_GRACE_S`` (left at its default). Four versions of
one model are registered once and promoted in turn, each by an explicit-version request, waiting
for its ``model.ready``, then for the gateway to route it and for Triton to settle.

- ``triton_rss_ratio_200`` (goal <= 1.15): resident memory of Triton's process group (server plus its
  python-backend stubs, the shared runtime's among them) after promotion 200 over after promotion 20;
  ``worker_rss_ratio_200`` (goal <= 1.10) likewise for the worker's process group;
  ``shared_runtime_rss_ratio_200`` for the runtime's stub alone (its estimator cache). Both checkpoints
  are taken in the same state (the same version routed, Triton settled), absolute MB beside them.
- ``max_loaded_models`` / ``max_repository_dirs``: the most READY models in Triton's repository index
  and model directories in the repository seen at any time (sampled every 0.2 s and at each step),
  against ``loaded_models_bound``: routed (1) + kept rollback versions (``keep_loaded_versions``) +
  prepared (0) + the shared runtime (1) + the one version in transition (being loaded, or swapped
  out and awaiting the gateway's ack before its unload). ``max_loaded_models_settled`` is the same
  once each promotion settled, against ``settled_models_bound`` (no version in transition).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import ManagedProcess
from deploy.stack.triton_server import NAME as TRITON
from tests.benchmarks.bench_files import merge_figures
from tests.benchmarks.light_versions import stub_pid
from tests.benchmarks.prepared_swap import served_everywhere
from tests.benchmarks.promotion import ReadyListener, rss_mb
from tests.gateway_harness import running_gateways
from tests.worker_harness import produce, register_iris, request_bytes, running_worker
from worker.shared_runtime import RUNTIME_MODEL

READY = "io.modelpromoter.model.ready.v1"
KEEP_LOADED_VERSIONS = 2  # the worker's default, set explicitly so the bound below says what it counts
STEP_TIMEOUT_S = 120.0
SAMPLE_INTERVAL_S = 0.2


def group_rss_mb(pids: Iterable[int]) -> float:
    """Resident MB of ``pids`` together; a process that exited meanwhile counts as nothing."""
    total = 0.0
    for pid in pids:
        try:
            total += rss_mb(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@dataclass
class TritonView:
    """What Triton holds: READY models in its repository index and model directories in its repository (hidden
    ones, the worker's staging scratch and leases, are not models)."""

    http: httpx.AsyncClient
    url: str
    repository: Path
    triton: ManagedProcess
    max_loaded: int = 0
    max_stubs: int = 0
    max_dirs: int = 0
    samples: int = 0

    async def loaded(self) -> set[str]:
        response = await self.http.post(f"{self.url}/v2/repository/index", json={})
        response.raise_for_status()
        return {entry["name"] for entry in response.json() if entry.get("state") == "READY"}

    def directories(self) -> set[str]:
        return {p.name for p in self.repository.iterdir() if p.is_dir() and not p.name.startswith(".")}

    def stubs(self) -> int:
        """Python-backend stub processes: every process of Triton's group but the server."""
        return len([pid for pid in self.triton.group_pids() if pid != self.triton.pid])

    async def sample(self) -> tuple[set[str], set[str]]:
        loaded, dirs = await self.loaded(), await asyncio.to_thread(self.directories)
        self.max_loaded, self.max_dirs = max(self.max_loaded, len(loaded)), max(self.max_dirs, len(dirs))
        self.max_stubs = max(self.max_stubs, await asyncio.to_thread(self.stubs))
        self.samples += 1
        return loaded, dirs

    async def sample_forever(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)  # a sampling period, not a wait for a condition

    async def settle(self, expected: set[str]) -> float:
        """Seconds until Triton holds exactly ``expected``, loaded and on disk (TimeoutError naming the rest)."""
        began = time.perf_counter()
        while True:
            loaded, dirs = await self.sample()
            if loaded == expected and dirs == expected:
                return time.perf_counter() - began
            if time.perf_counter() - began > STEP_TIMEOUT_S:
                raise TimeoutError(
                    f"Triton did not settle within {STEP_TIMEOUT_S} s: expected {sorted(expected)}, "
                    f"loaded {sorted(loaded)}, directories {sorted(dirs)}"
                )
            await asyncio.sleep(0.05)  # polling a condition with a deadline

    async def stubs_exited(self, loaded: int) -> float:
        """Seconds until one stub per loaded model is left: Triton reports an unload done before the
        unloaded model's stub process has exited (~1-2 s later, measured), so memory is read after that."""
        began = time.perf_counter()
        while (stubs := await asyncio.to_thread(self.stubs)) != loaded:
            if time.perf_counter() - began > STEP_TIMEOUT_S:
                raise TimeoutError(
                    f"{stubs} python-backend stubs left for {loaded} loaded models after {STEP_TIMEOUT_S} s"
                )
            await asyncio.sleep(0.05)  # polling a condition with a deadline
        return time.perf_counter() - began


def held(routed: str, served: dict[str, int]) -> set[str]:
    """What the worker should keep: the routed model, the newest kept versions that were served, the runtime."""
    newest = sorted(served, key=served.__getitem__, reverse=True)[:KEEP_LOADED_VERSIONS]
    return {routed, *newest, RUNTIME_MODEL}


def memory_mb(triton: ManagedProcess, worker: ManagedProcess) -> dict[str, float]:
    runtime = stub_pid(triton.pid, RUNTIME_MODEL)
    group = triton.group_pids()
    return {
        "triton": group_rss_mb(group),
        "server": rss_mb(triton.pid),
        "processes": len(group),
        "worker": group_rss_mb(worker.group_pids()),
        "runtime": rss_mb(runtime) if runtime is not None else float("nan"),
    }


async def measure(stack: LocalStack, run_dir: Path, promotions: int, checkpoint: int, count: int) -> dict[str, Any]:
    model = f"bench-mem-{uuid.uuid4().hex[:6]}"
    versions = [register_iris(stack.mlflow_tracking_uri, model, regularisation=0.05 + i) for i in range(count)]
    triton = next(p for p in stack.processes if p.name == TRITON)
    memory: dict[int, dict[str, float]] = {}
    swap_s: list[float] = []
    settle_s: list[float] = []
    stub_exit_s: list[float] = []
    max_settled = (0, 0)
    served: dict[str, int] = {}
    with (
        running_worker(
            stack,
            run_dir / "worker",
            PROMOTER_LOG_LEVEL="WARNING",
            PROMOTER_WORKER_KEEP_LOADED_VERSIONS=str(KEEP_LOADED_VERSIONS),
        ) as worker,
        running_gateways(stack, run_dir / "gateways", worker.env, ["gw-mem"], PROMOTER_LOG_LEVEL="WARNING") as gws,
    ):
        listener = ReadyListener(stack.kafka_bootstrap_servers, worker.topic("model_ready"))
        await listener.start()
        async with httpx.AsyncClient(timeout=10) as http:
            view = TritonView(http, f"http://{stack.triton_http}", stack.model_repository, triton)
            sampler = asyncio.create_task(view.sample_forever())
            try:
                for step in range(1, promotions + 1):
                    version = versions[(step - 1) % count]
                    event_id = str(uuid.uuid4())
                    began = time.perf_counter()
                    message = request_bytes(model, version=version, event_id=event_id)
                    requests = worker.topic("promotion_requested")
                    await produce(stack.kafka_bootstrap_servers, requests, [(model.encode(), message)])
                    (_, event), *_ = await listener.wait(event_id, 1, STEP_TIMEOUT_S)
                    if event["type"] != READY:
                        raise RuntimeError(f"promotion {step} of v{version} answered {event['type']}: {event}")
                    routed = event["data"]["triton_model_name"]
                    served[routed] = version
                    await served_everywhere(http, gws, model, version)
                    swap_s.append(time.perf_counter() - began)
                    settle_s.append(await view.settle(held(routed, served)))
                    loaded, dirs = await view.sample()
                    max_settled = (max(max_settled[0], len(loaded)), max(max_settled[1], len(dirs)))
                    if step % checkpoint == 0 or step == promotions:
                        stub_exit_s.append(await view.stubs_exited(len(loaded)))
                        memory[step] = memory_mb(triton, worker.process)
                        mb = ", ".join(f"{k} {v:.1f} MB" for k, v in memory[step].items() if k != "processes")
                        print(f"  after {step}: {mb}, Triton processes {memory[step]['processes']:.0f}")
            finally:
                sampler.cancel()
                await listener.stop()
    first, last = memory[checkpoint], memory[promotions]
    settled_bound = 1 + KEEP_LOADED_VERSIONS + 0 + 1
    return {
        "triton_rss_ratio_200": round(last["triton"] / first["triton"], 4),
        "worker_rss_ratio_200": round(last["worker"] / first["worker"], 4),
        "shared_runtime_rss_ratio_200": round(last["runtime"] / first["runtime"], 4),
        "triton_rss_mb_20": round(first["triton"], 1),
        "triton_rss_mb_200": round(last["triton"], 1),
        "worker_rss_mb_20": round(first["worker"], 1),
        "worker_rss_mb_200": round(last["worker"], 1),
        "triton_server_rss_mb_20": round(first["server"], 1),
        "triton_server_rss_mb_200": round(last["server"], 1),
        "triton_processes_20": int(first["processes"]),
        "triton_processes_200": int(last["processes"]),
        "triton_rss_mb_series": [round(memory[step]["triton"], 1) for step in sorted(memory)],
        "shared_runtime_rss_mb_20": round(first["runtime"], 1),
        "shared_runtime_rss_mb_200": round(last["runtime"], 1),
        "max_loaded_models": view.max_loaded,
        "max_repository_dirs": view.max_dirs,
        "loaded_models_bound": settled_bound + 1,
        "max_loaded_models_settled": max_settled[0],
        "max_repository_dirs_settled": max_settled[1],
        "settled_models_bound": settled_bound,
        "memory_flat_promotions": promotions,
        "memory_flat_checkpoint": checkpoint,
        "memory_flat_versions": count,
        "memory_flat_triton_samples": view.samples,
        "memory_flat_swap_p50_s": round(statistics.median(swap_s), 3),
        "memory_flat_settle_p50_s": round(statistics.median(settle_s), 3),
        "memory_flat_settle_max_s": round(max(settle_s), 3),
        "max_stub_processes": view.max_stubs,
        "memory_flat_stub_exit_max_s": round(max(stub_exit_s), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--promotions", type=int, default=200)
    parser.add_argument("--checkpoint", type=int, default=20)
    parser.add_argument("--versions", type=int, default=4)
    args = parser.parse_args(argv)
    if not 0 < args.checkpoint < args.promotions:
        parser.error("--checkpoint must lie between 0 and --promotions")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
        print(f"stack ready in {stack.startup_s:.1f} s; {args.promotions} promotions over {args.versions} versions")
        figures = asyncio.run(measure(stack, Path(tmp), args.promotions, args.checkpoint, args.versions))
    path = merge_figures("scale", figures)
    print(
        f"Triton RSS {figures['triton_rss_mb_20']} -> {figures['triton_rss_mb_200']} MB, ratio "
        f"{figures['triton_rss_ratio_200']} (goal <= 1.15); worker {figures['worker_rss_mb_20']} -> "
        f"{figures['worker_rss_mb_200']} MB, ratio {figures['worker_rss_ratio_200']} (goal <= 1.10); "
        f"max loaded {figures['max_loaded_models']} / dirs {figures['max_repository_dirs']} "
        f"(bound {figures['loaded_models_bound']}), settled {figures['max_loaded_models_settled']} / "
        f"{figures['max_repository_dirs_settled']} (bound {figures['settled_models_bound']})"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
