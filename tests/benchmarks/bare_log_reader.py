"""The baseline of the gateway's cold start: a bare aiokafka consumer reading a log to its end, nothing else.

Run as a script by ``tests/benchmarks/gateway_scale.py`` (``python bare_log_reader.py BOOTSTRAP TOPIC...``), so the
figure includes what any process that reads the log pays too: the interpreter's start, ``import aiokafka``,
the connection and the metadata. It reads every partition of the topics from offset 0 (no consumer group, as the
gateway does) until each position reached the end offset seen at start, parses nothing, prints
``{"records": N, "bytes": B, "read_s": S}`` (``read_s``: from the consumer's start to the end) and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_to_end(bootstrap: str, topics: list[str]) -> dict[str, float]:
    began = time.perf_counter()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # as runtime.kafka_clients.assign_from_start does
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records = size = 0
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batches = await consumer.getmany(timeout_ms=1000)
            for batch in batches.values():
                records += len(batch)
                size += sum(len(record.value or b"") for record in batch)
        return {"records": records, "bytes": size, "read_s": round(time.perf_counter() - began, 4)}
    finally:
        await consumer.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(read_to_end(sys.argv[1], sys.argv[2:]))))
