"""Benchmark: the worker's delivery, at-least-once against one Kafka transaction (``.bench/exactly_once.json``).

The worker's loop, stripped to its Kafka part, on a real Apache Kafka broker started for the run:
read one promotion request in a consumer group, publish its outcome, then

- **at-least-once** (what the worker does): wait for the broker's acknowledgement, then commit the
  offset. A crash between the two redelivers the request: its outcome is published again.
- **transaction**: publish the outcome and commit the offset in one Kafka transaction
  (``send_offsets_to_transaction``). A crash before ``commit_transaction`` aborts both; readers with
  ``isolation_level=read_committed`` never see the first outcome.

Two figures per mode: the cost per promotion (one request per cycle, as promotions come one by one:
milliseconds from the record in hand to the offset committed) and the duplicates after crashes
(``CRASHES`` times, the process dies in the window between publishing and committing; a new
consumer and producer of the same group and transactional id take over, as a restarted pod would).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from deploy.stack.kafka_broker import broker_specs, local_client_settings
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from deploy.stack.settings import StackSettings
from runtime.kafka_topics import ensure_topics
from schemas.topics import MODEL_READY, PROMOTION_REQUESTED
from tests.benchmarks.bench_files import BENCH_DIR, bench_path

CYCLES = 200  # requests timed one by one, per mode
CRASHES = 20  # crashes between publishing an outcome and committing its offset, per mode
Mode = Literal["at_least_once", "transaction"]
Isolation = Literal["read_committed", "read_uncommitted"]


class Delivery:
    """One worker incarnation: a group consumer of the requests and a producer of the outcomes."""

    def __init__(self, bootstrap: str, mode: Mode, requests: str, outcomes: str, group: str) -> None:
        self.mode = mode
        self.outcomes = outcomes
        self.group = group
        settings = local_client_settings(bootstrap, "kafka")
        extra = {"transactional_id": f"{group}-worker-0"} if mode == "transaction" else {}
        self.producer = AIOKafkaProducer(**settings.producer_kwargs(), **extra)
        self.consumer = AIOKafkaConsumer(
            requests,
            **settings.consumer_kwargs(),
            group_id=group,
            isolation_level="read_committed",
        )

    async def start(self) -> None:
        await self.producer.start()  # a transactional producer fences (aborts) its predecessor's open transaction
        await self.consumer.start()

    async def crash(self) -> None:
        """Gone without committing: the group takes the partition back, the open transaction stays open."""
        await self.consumer.stop()
        await self.producer.stop()

    async def next_record(self) -> ConsumerRecord[bytes, bytes]:
        while True:
            batches = await self.consumer.getmany(timeout_ms=1000, max_records=1)
            for records in batches.values():
                return records[0]

    async def handle(self, record: ConsumerRecord[bytes, bytes], *, crash_before_commit: bool = False) -> None:
        """Publish ``record``'s outcome and commit its offset (or crash in between)."""
        offsets = {TopicPartition(record.topic, record.partition): record.offset + 1}
        outcome = b'{"type": "io.modelpromoter.promotion.rejected.v1", "request": ' + (record.value or b"") + b"}"
        if self.mode == "at_least_once":
            await self.producer.send_and_wait(self.outcomes, outcome, key=record.key)
            if crash_before_commit:
                return await self.crash()
            await self.consumer.commit(offsets)
            return None
        await self.producer.begin_transaction()
        await self.producer.send_and_wait(self.outcomes, outcome, key=record.key)
        await self.producer.send_offsets_to_transaction(offsets, self.group)
        if crash_before_commit:
            return await self.crash()
        await self.producer.commit_transaction()
        return None


async def _fill(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(**local_client_settings(bootstrap, "kafka").producer_kwargs())
    await producer.start()
    try:
        for i in range(count):
            await producer.send(topic, json.dumps({"id": i}).encode(), key=b"bench-model")
        await producer.flush()
    finally:
        await producer.stop()


async def _outcomes(bootstrap: str, topic: str, isolation: Isolation) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", isolation_level=isolation
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        partitions = consumer.assignment() or {TopicPartition(topic, 0)}
        ends = await consumer.end_offsets(list(partitions))
        while any([await consumer.position(p) < end for p, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                values.extend(r.value or b"" for r in records)
    finally:
        await consumer.stop()
    return values


async def _topics(bootstrap: str, mode: Mode, label: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    requests, outcomes = f"bench.{mode}.{label}.requests.{suffix}", f"bench.{mode}.{label}.outcomes.{suffix}"
    specs = [
        replace(PROMOTION_REQUESTED, name=requests, partitions=1),
        replace(MODEL_READY, name=outcomes, partitions=1),
    ]
    await ensure_topics(local_client_settings(bootstrap, "kafka"), specs)
    return requests, outcomes


async def cost(bootstrap: str, mode: Mode) -> dict[str, float]:
    """Milliseconds per promotion: from the request in hand to its outcome published and its offset committed."""
    requests, outcomes = await _topics(bootstrap, mode, "cost")
    await _fill(bootstrap, requests, CYCLES)
    delivery = Delivery(bootstrap, mode, requests, outcomes, f"bench-{mode}-{uuid.uuid4().hex[:6]}")
    await delivery.start()
    times: list[float] = []
    try:
        for _ in range(CYCLES):
            record = await delivery.next_record()
            began = time.perf_counter()
            await delivery.handle(record)
            times.append((time.perf_counter() - began) * 1000)
    finally:
        await delivery.crash()
    times = times[10:]  # the first cycles include connecting to the coordinators
    return {
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(statistics.quantiles(times, n=10)[-1], 2),
        "mean_ms": round(statistics.fmean(times), 2),
    }


async def duplicates(bootstrap: str, mode: Mode) -> dict[str, Any]:
    """Outcomes per request after ``CRASHES`` crashes between publishing and committing (one request each)."""
    requests, outcomes = await _topics(bootstrap, mode, "crash")
    await _fill(bootstrap, requests, CRASHES + 1)
    group = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    for _ in range(CRASHES):
        delivery = Delivery(bootstrap, mode, requests, outcomes, group)
        await delivery.start()
        await delivery.handle(await delivery.next_record())  # the previous crash's request, again
        await delivery.handle(await delivery.next_record(), crash_before_commit=True)
    final = Delivery(bootstrap, mode, requests, outcomes, group)
    await final.start()
    await final.handle(await final.next_record())
    await final.crash()

    figures: dict[str, Any] = {"crashes": CRASHES, "requests": CRASHES + 1}
    for isolation in ("read_committed", "read_uncommitted"):
        seen = Counter(await _outcomes(bootstrap, outcomes, isolation))
        figures[f"outcomes_{isolation}"] = sum(seen.values())
        figures[f"duplicates_{isolation}"] = sum(seen.values()) - len(seen)
    return figures


async def run(bootstrap: str) -> dict[str, Any]:
    result: dict[str, Any] = {"cycles": CYCLES}
    for mode in ("at_least_once", "transaction"):
        result[mode] = {"cost": await cost(bootstrap, mode), "after_crashes": await duplicates(bootstrap, mode)}
    return result


def main() -> int:
    if StackSettings().kafka_broker != "kafka":
        print("transactions need Apache Kafka: unset PROMOTER_STACK_KAFKA_BROKER", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-eos-") as tmp:
        (port,) = free_ports(1)
        (spec,) = broker_specs("kafka", [port], Path(tmp))
        broker = ManagedProcess(spec, Path(tmp) / "kafka.log")
        broker.start()
        try:
            wait_all_ready([broker])
            result = asyncio.run(run(f"127.0.0.1:{port}"))
        finally:
            stop_all([broker])
    BENCH_DIR.mkdir(exist_ok=True)
    output = bench_path("exactly_once")
    output.write_text(json.dumps(result, indent=2) + "\n")
    for mode in ("at_least_once", "transaction"):
        figures = result[mode]
        print(f"{mode:>14}: {figures['cost']} per promotion; after {CRASHES} crashes {figures['after_crashes']}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
