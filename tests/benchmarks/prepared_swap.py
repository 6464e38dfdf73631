"""Benchmark: alias set -> every gateway serving, for a prepared version against a cold one, same run.

``make bench`` -> ``.bench/scale.json``: ``prepared_swap_ratio`` (p50 prepared / p50 cold; goal <= 0.1),
with the absolute seconds beside it. One worker and two gateways on the local stack; each round
registers two versions, swaps the alias to the cold one, prepares the other (not timed), then swaps
the alias to it. The alias is set in MLflow and the request published as the ingress would.

Beside it, MLflow's alias write alone (``alias_write_p50_s``, over both kinds of swap), which is inside both
clocks, over the cold swap (``prepared_swap_alias_write_ratio``): what of the ratio the write takes by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from deploy.stack.local_stack import LocalStack
from schemas.prepared_version import PrepareRequested, PrepareRequestedData
from tests.benchmarks.bench_files import merge_figures
from tests.gateway_harness import GatewayHandle, running_gateways
from tests.worker_harness import (
    WorkerHandle,
    events,
    produce,
    read_until,
    register_iris,
    request_bytes,
    running_worker,
    set_alias,
)

PREPARED = "io.modelpromoter.model.prepared.v1"
SWAP_TIMEOUT_S = 120.0


async def served_everywhere(http: httpx.AsyncClient, gateways: list[GatewayHandle], model: str, version: int) -> None:
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    pending = list(gateways)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model} v{version} not served by {[g.name for g in pending]} in {SWAP_TIMEOUT_S} s")
        answer = (await http.get(f"{pending[0].url}/models")).json()
        routed = answer["models"].get(model, {}).get("aliases", {}).get("champion", {}).get("version")
        if routed is not None and int(routed) == version:
            pending.pop(0)


async def _swap(
    stack: LocalStack,
    worker: WorkerHandle,
    gateways: list[GatewayHandle],
    http: httpx.AsyncClient,
    producer: AIOKafkaProducer,
    model: str,
    v: int,
) -> tuple[float, float]:
    """Seconds from the alias set in MLflow to every gateway routing it to ``v``, and of them MLflow's alias write
    alone; the request is published by a running producer, as the ingress publishes it (starting one costs this
    client ~50 ms: not the system's time)."""
    began = time.perf_counter()
    set_alias(stack.mlflow_tracking_uri, model, "champion", v)
    written = time.perf_counter()
    await producer.send_and_wait(worker.topic("promotion_requested"), request_bytes(model), key=model.encode())
    await served_everywhere(http, gateways, model, v)
    return time.perf_counter() - began, written - began


async def _prepare(stack: LocalStack, worker: WorkerHandle, model: str, version: int) -> None:
    event = PrepareRequested(
        source="/bench",
        subject=model,
        data=PrepareRequestedData(model_name=model, version=version, origin="cli", requester="bench"),
    )
    bootstrap = stack.kafka_bootstrap_servers
    await produce(bootstrap, worker.topic("promotion_requested"), [(model.encode(), event.to_json_bytes())])

    def answered(documents: list[dict[str, Any]]) -> bool:
        return any(e["type"] == PREPARED and e["data"].get("request_event_id") == event.id for e in documents)

    await read_until(bootstrap, worker.topic("model_ready"), lambda r: answered(events(r)), timeout_s=SWAP_TIMEOUT_S)


async def measure(stack: LocalStack, run_dir: Path, rounds: int) -> dict[str, Any]:
    model = f"bench-prep-{uuid.uuid4().hex[:6]}"
    uri = stack.mlflow_tracking_uri
    first = register_iris(uri, model, regularisation=0.5)
    pairs = [
        (register_iris(uri, model, regularisation=1.0 + i), register_iris(uri, model, regularisation=0.05 + i))
        for i in range(rounds)
    ]
    cold: list[float] = []
    prepared: list[float] = []
    alias_writes: list[float] = []
    with (
        running_worker(stack, run_dir / "worker", PROMOTER_LOG_LEVEL="WARNING") as worker,
        running_gateways(
            stack, run_dir / "gateways", worker.env, ["gw-a", "gw-b"], PROMOTER_LOG_LEVEL="WARNING"
        ) as gws,
    ):
        producer = AIOKafkaProducer(**stack.kafka_settings().producer_kwargs())
        await producer.start()
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                swap = partial(_swap, stack, worker, gws, http, producer, model)
                await swap(first)  # warm-up: the first load pays one-off costs
                for cold_version, prepared_version in pairs:
                    cold_s, cold_write_s = await swap(cold_version)
                    await _prepare(stack, worker, model, prepared_version)
                    prepared_s, prepared_write_s = await swap(prepared_version)
                    cold.append(cold_s)
                    prepared.append(prepared_s)
                    alias_writes.extend((cold_write_s, prepared_write_s))
                    print(
                        f"  cold v{cold_version} {cold_s:.3f} s (alias write {cold_write_s:.3f} s), "
                        f"prepared v{prepared_version} {prepared_s:.3f} s (alias write {prepared_write_s:.3f} s)"
                    )
        finally:
            await producer.stop()
    cold_p50, prepared_p50 = statistics.median(cold), statistics.median(prepared)
    alias_write_p50 = statistics.median(alias_writes)
    return {
        "prepared_swap_ratio": round(prepared_p50 / cold_p50, 4),
        "prepared_swap_p50_s": round(prepared_p50, 3),
        "cold_swap_p50_s": round(cold_p50, 3),
        "prepared_swap_alias_write_ratio": round(alias_write_p50 / cold_p50, 4),
        "alias_write_p50_s": round(alias_write_p50, 3),
        "prepared_swap_rounds": rounds,
        "prepared_swap_gateways": 2,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-prepared-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
        print(f"stack ready in {stack.startup_s:.1f} s; {args.rounds} rounds of a cold and a prepared swap")
        figures = asyncio.run(measure(stack, Path(tmp), args.rounds))
    path = merge_figures("scale", figures)
    print(
        f"alias set -> every gateway serving: prepared p50 {figures['prepared_swap_p50_s']} s, "
        f"cold p50 {figures['cold_swap_p50_s']} s, ratio {figures['prepared_swap_ratio']} (goal <= 0.1); "
        f"MLflow's alias write alone p50 {figures['alias_write_p50_s']} s, "
        f"{figures['prepared_swap_alias_write_ratio']} of the cold swap"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
