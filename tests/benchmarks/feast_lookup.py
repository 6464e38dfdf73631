"""Benchmark: ``/predict`` by entity id (features looked up in Feast over Redis) against ``/predict`` with the full
payload, in the same run on one gateway (``make bench`` -> ``feast_lookup_ratio`` in ``.bench/gateway.json``).

Sequential 1-record requests, interleaved (entity id, full payload, ...) so both see the same machine; the ratio
is p50 by entity id over p50 with the full payload, with both p50s in milliseconds beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from deploy.stack.feature_store import ENTITY_KEY, iris_feast_models, running_iris_feature_store
from deploy.stack.local_stack import LocalStack
from deploy.stack.process import wait_all_ready
from tests.benchmarks.bench_files import merge_figures
from tests.gateway_harness import iris_records, promote, running_gateways
from tests.worker_harness import iris_frame, register_iris, running_worker


def measure(url: str, rows: list[list[float]], requests: int) -> dict[str, Any]:
    by_id: list[float] = []
    full: list[float] = []
    records = iris_records(rows)
    with httpx.Client(timeout=10) as client:
        for row in range(10):  # warm up: connections, the feature server's first reads
            client.post(url, json={ENTITY_KEY: row}).raise_for_status()
        for index in range(requests):
            row = index % len(rows)
            for body, times in (({ENTITY_KEY: row}, by_id), (records[row], full)):
                started = time.perf_counter()
                response = client.post(url, json=body)
                times.append(time.perf_counter() - started)
                response.raise_for_status()
    p50_id, p50_full = statistics.median(by_id) * 1000, statistics.median(full) * 1000
    return {
        "feast_lookup_ratio": round(p50_id / p50_full, 2),
        "feast_lookup_p50_ms": round(p50_id, 2),
        "feast_full_payload_p50_ms": round(p50_full, 2),
        "feast_lookup_requests": requests,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args(argv)
    rows = iris_frame()[0].to_numpy().tolist()
    model = f"bench-feast-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="bench-feast-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
        run_dir = Path(tmp)
        with running_iris_feature_store(run_dir / "feast", rows) as (_, feast):
            version = register_iris(stack.mlflow_tracking_uri, model)
            with running_worker(stack, run_dir / "worker") as worker:
                asyncio.run(promote(stack, worker, model, version))
                settings = {
                    "PROMOTER_GATEWAY_FEAST_SERVER_URL": feast.spec.endpoints["feast"],
                    "PROMOTER_GATEWAY_FEAST_MODELS": iris_feast_models(model),
                    "PROMOTER_GATEWAY_FEAST_TIMEOUT_S": "2",  # latency measured here, not fallbacks
                }
                with running_gateways(stack, run_dir / "gateways", worker.env, ["gw-bench"], **settings) as gws:
                    wait_all_ready([feast])
                    figures = measure(f"{gws[0].url}/predict/{model}", rows, args.requests)
    print(figures)
    print(f"wrote {merge_figures('gateway', figures)}")


if __name__ == "__main__":
    main()
