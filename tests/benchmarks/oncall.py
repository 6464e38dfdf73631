"""Benchmark: on-call commands over a large dead-letter topic (``make bench`` -> ``.bench/oncall.json``).

Starts the broker only (the other stack services are not needed). First the start-up of the
command as whole processes: ``promoter --help`` against ``python -c "import typer"`` (the floor of
any typer command), run in turn, and ``promoter dlq list --json`` on an empty topic. Then fills a
dead-letter topic with 10,000 letters and times ``promoter dlq list`` (table and ``--json``) and
``dlq replay --yes``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from deploy.stack.kafka_broker import broker_specs, client_env, local_client_settings
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from deploy.stack.settings import StackSettings
from promoter_cli.main import app
from runtime.kafka_topics import ensure_topics
from runtime.settings import KafkaSettings
from schemas.topics import PROMOTION_DLQ

BENCH_DIR = Path(".bench")
LETTERS = 10_000
REPLAYS = 1_000
STARTUP_RUNS = 9
PROMOTER = [sys.executable, "-c", "from promoter_cli.main import main; main()"]
IMPORT_TYPER = [sys.executable, "-c", "import typer"]


async def fill(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(**{**local_client_settings(bootstrap).producer_kwargs(), "linger_ms": 5})
    await producer.start()
    try:
        failed_at = datetime.now(UTC).isoformat().encode()
        for index in range(count):
            headers = [
                ("x-dlq-reason-code", b"retries_exhausted"),
                ("x-dlq-last-failure-at", failed_at),
                ("x-dlq-source-topic", b"bench.requests"),
                ("x-dlq-event-id", f"evt-{index}".encode()),
                ("x-dlq-attempts", b"5"),
            ]
            value = json.dumps({"id": f"evt-{index}", "data": {"model_name": f"m-{index % 50}", "version": 1}})
            await producer.send(topic, value.encode(), key=f"m-{index % 50}".encode(), headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


def timed(env: dict[str, str], *args: str) -> float:
    began = time.perf_counter()
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exit_code != 0:
        raise RuntimeError(f"promoter {' '.join(args)} failed: {result.output[-2000:]}")
    return time.perf_counter() - began


def process_seconds(commands: list[list[str]], env: dict[str, str], runs: int) -> list[list[float]]:
    """Wall seconds of each command as a whole process (start-up included), run in turn after one warm-up."""
    seconds: list[list[float]] = [[] for _ in commands]
    for run in range(runs + 1):
        for argv, times in zip(commands, seconds, strict=True):
            began = time.perf_counter()
            subprocess.run(argv, env={**os.environ, **env}, capture_output=True, check=True, timeout=120)
            if run:
                times.append(time.perf_counter() - began)
    return seconds


def min_median(times: list[float]) -> dict[str, float]:
    return {"min_s": round(min(times), 3), "median_s": round(statistics.median(times), 3)}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-oncall-") as tmp:
        (port,) = free_ports(1)
        chosen = StackSettings().kafka_broker
        (spec,) = broker_specs(chosen, [port], Path(tmp))
        broker = ManagedProcess(spec, Path(tmp) / f"{chosen}.log")
        broker.start()
        try:
            wait_all_ready([broker])
            bootstrap = f"127.0.0.1:{port}"
            env = {
                "PROMOTER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                **client_env(chosen),
                "PROMOTER_TOPIC_PROMOTION_DLQ": "bench.dlq",
                "PROMOTER_TOPIC_DEAD_LETTER_REPLAYS": "bench.replays",
            }
            empty = replace(PROMOTION_DLQ, name="bench.empty-dlq")
            asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [empty]))
            help_s, typer_s = process_seconds([[*PROMOTER, "--help"], IMPORT_TYPER], env, STARTUP_RUNS)
            empty_env = {**env, "PROMOTER_TOPIC_PROMOTION_DLQ": empty.name}
            (empty_list_s,) = process_seconds([[*PROMOTER, "dlq", "list", "--json"]], empty_env, STARTUP_RUNS)
            asyncio.run(fill(bootstrap, "bench.dlq", LETTERS))
            list_json_s = timed(env, "dlq", "list", "--json")
            list_table_s = timed(env, "dlq", "list")
            filtered_s = timed(env, "dlq", "list", "--model", "m-7", "--since", "1h")
            replay_s = timed(env, "dlq", "replay", "--offsets", f"0-{REPLAYS - 1}", "--yes")
        finally:
            stop_all([broker])
    ratios = [help_run / typer_run for help_run, typer_run in zip(help_s, typer_s, strict=True)]
    result = {
        "promoter_help": min_median(help_s),
        "python_import_typer": min_median(typer_s),
        "help_over_import_typer_median": round(statistics.median(ratios), 2),
        "dlq_list_empty_topic": min_median(empty_list_s),
        "letters": LETTERS,
        "dlq_list_10k_json_s": round(list_json_s, 3),
        "dlq_list_10k_table_s": round(list_table_s, 3),
        "dlq_list_10k_filtered_s": round(filtered_s, 3),
        "replayed": REPLAYS,
        "replay_per_s": round(REPLAYS / replay_s, 1),
    }
    BENCH_DIR.mkdir(exist_ok=True)
    (BENCH_DIR / "oncall.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"promoter --help {result['promoter_help']} vs python -c 'import typer' {result['python_import_typer']}: "
        f"{result['help_over_import_typer_median']}x (median of pairs; target <= 3x)"
    )
    print(f"promoter dlq list --json on an empty topic: {result['dlq_list_empty_topic']}")
    print(f"dlq list over {LETTERS} letters: {list_json_s:.2f} s (--json), {list_table_s:.2f} s (table) (target < 2 s)")
    print(f"dlq list --model --since over {LETTERS}: {filtered_s:.2f} s")
    print(f"dlq replay: {result['replay_per_s']} letters/s over {REPLAYS} (with audit records)")
    print(f"wrote {BENCH_DIR / 'oncall.json'}")


if __name__ == "__main__":
    main()
