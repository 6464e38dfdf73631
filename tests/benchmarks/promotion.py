"""Benchmark: promotions on the real local stack (``make bench`` -> ``.bench/promotion.json``).

Promotes an iris classifier N times (a new MLflow version each time, pinned, one after the other)
and reports, per stage and in total, p50/p95 from request published to ``model.ready`` received.
Then replays one answered request many times to measure how fast duplicates are handled (they
publish nothing: ``duplicate_announcements`` should be 0), and reads the worker's resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deploy.stack.local_stack import LocalStack
from runtime.kafka_clients import assign_from_start
from tests.worker_harness import register_iris, request_bytes, running_worker

BENCH_DIR = Path(".bench")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class ReadyListener:
    """Follows the model.ready topic from its beginning and hands out events by request id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=20)
        self.topic = topic
        self.arrivals: dict[str, list[tuple[float, dict[str, Any]]]] = {}

    async def start(self) -> None:
        await self.consumer.start()
        await assign_from_start(self.consumer, [self.topic])

    async def poll(self) -> None:
        batches = await self.consumer.getmany(timeout_ms=20)
        now = time.perf_counter()
        for records in batches.values():
            for record in records:
                event = json.loads(record.value or b"{}")
                request_id = event.get("data", {}).get("request_event_id", "")
                self.arrivals.setdefault(request_id, []).append((now, event))

    async def wait(self, request_id: str, count: int, timeout_s: float) -> list[tuple[float, dict[str, Any]]]:
        deadline = time.perf_counter() + timeout_s
        while len(self.arrivals.get(request_id, [])) < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{count} model.ready for {request_id} not seen within {timeout_s} s")
            await self.poll()
        return self.arrivals[request_id]

    async def stop(self) -> None:
        await self.consumer.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(stack: LocalStack, run_dir: Path, promotions: int, duplicates: int) -> dict[str, Any]:
    name = f"bench-iris-{uuid.uuid4().hex[:6]}"
    versions = [register_iris(stack.mlflow_tracking_uri, name, regularisation=0.05 + i) for i in range(promotions)]
    with running_worker(stack, run_dir, PROMOTER_LOG_LEVEL="WARNING") as worker:
        requested = worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"]
        listener = ReadyListener(stack.kafka_bootstrap_servers, worker.topics["PROMOTER_TOPIC_MODEL_READY"])
        await listener.start()
        producer = AIOKafkaProducer(**stack.kafka_settings().producer_kwargs())
        await producer.start()
        totals: list[float] = []
        stages: dict[str, list[float]] = {}
        last_id = ""
        try:
            for version in versions:
                last_id = str(uuid.uuid4())
                began = time.perf_counter()
                await producer.send_and_wait(
                    requested, request_bytes(name, version=version, event_id=last_id), key=name.encode()
                )
                ((arrived, event),) = await listener.wait(last_id, 1, timeout_s=120)
                totals.append(arrived - began)
                for stage, seconds in event["data"]["stage_seconds"].items():
                    stages.setdefault(stage, []).append(seconds)
                print(f"  v{version}: {totals[-1]:.3f} s  {event['data']['stage_seconds']}")

            duplicate = request_bytes(name, version=versions[-1], event_id=last_id)
            began = time.perf_counter()
            for _ in range(duplicates):
                await producer.send(requested, duplicate, key=name.encode())
            # Duplicates publish nothing (their answer is on the log): a request queued behind them
            # (same key, same partition) is answered once every duplicate was handled.
            after_id = str(uuid.uuid4())
            after = request_bytes(name, alias="bench-after", version=versions[-1], event_id=after_id)
            await producer.send(requested, after, key=name.encode())
            await producer.flush()
            await listener.wait(after_id, 1, timeout_s=120)
            duplicates_per_s = duplicates / (time.perf_counter() - began)
            duplicate_announcements = len(listener.arrivals[last_id]) - 1
            worker_rss = rss_mb(worker.process.pid)
        finally:
            await producer.stop()
            await listener.stop()
    return {
        "promotions": promotions,
        "promotion_p50_s": round(statistics.median(totals), 3),
        "promotion_p95_s": round(percentile(totals, 95), 3),
        "promotion_max_s": round(max(totals), 3),
        "stages": {stage: round(statistics.median(values), 4) for stage, values in stages.items()},
        "stages_p95": {stage: round(percentile(values, 95), 4) for stage, values in stages.items()},
        "duplicates": duplicates,
        "duplicates_per_s": round(duplicates_per_s, 1),
        "duplicate_announcements": duplicate_announcements,
        "worker_rss_mb": round(worker_rss, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--promotions", type=int, default=12)
    parser.add_argument("--duplicates", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-promotion-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
        print(f"stack ready in {stack.startup_s:.1f} s; promoting {args.promotions} versions")
        result = asyncio.run(measure(stack, Path(tmp) / "worker", args.promotions, args.duplicates))
    BENCH_DIR.mkdir(exist_ok=True)
    (BENCH_DIR / "promotion.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"promotion p50 {result['promotion_p50_s']} s, p95 {result['promotion_p95_s']} s (target p50 < 2.0 s)")
    print("stage p50: " + ", ".join(f"{k} {v:.3f} s" for k, v in result["stages"].items()))
    print(f"duplicates handled: {result['duplicates_per_s']}/s (target >= 500)")
    print(f"worker RSS {result['worker_rss_mb']} MB")
    print(f"wrote {BENCH_DIR / 'promotion.json'}")


if __name__ == "__main__":
    main()
