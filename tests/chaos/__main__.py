"""``make chaos``: every fault the README promises to survive, caused for real, measured into .bench/chaos.json.

The system: the local stack on three Kafka brokers with a second Triton on the same model repository,
one worker (registry reconcile every 10 s), the webhook ingress registered in MLflow, two gateways, and constant-rate
``tritonclient.http`` load by registered model name. Scenarios run one after another on it.

``python -m tests.chaos --only worker_kill --only lost_webhook`` runs the first promotion (every
scenario needs a served version) and the named scenarios only, and writes .bench/chaos-only.json
so a partial run never replaces the full figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from mlflow import MlflowClient

from tests.chaos.scenarios import (
    Run,
    broker_kill,
    first_version,
    frozen_worker,
    lost_webhook,
    mlflow_down,
    poison,
    triton_down,
    triton_restart,
    worker_kill,
)
from tests.chaos.system import chaos_system

BENCH = Path(".bench")
WORKER_ENV = {
    "PROMOTER_WORKER_RECONCILE_INTERVAL_S": "10",
    "PROMOTER_WORKER_RETIRE_GRACE_S": "30",
    "PROMOTER_WORKER_MAX_ATTEMPTS": "3",
    "PROMOTER_WORKER_BACKOFF_INITIAL_S": "0.5",
}
Scenario = Callable[[Run], Awaitable[dict[str, Any]]]
SCENARIOS: tuple[tuple[str, Scenario], ...] = (
    ("first promotion", first_version),
    ("one of two Tritons SIGKILLed and restarted under load", triton_restart),
    ("one of two Tritons stopped for 10 s under load", triton_down),
    ("a client sending NaN rows among four good clients", poison),
    ("worker SIGKILLed in each promotion stage", worker_kill),
    ("webhook lost while the ingress is down", lost_webhook),
    ("MLflow down during a promotion, then a dead-letter replay", mlflow_down),
    ("the group coordinator of three brokers SIGKILLed and restarted under promotions and load", broker_kill),
    ("one of two worker replicas frozen (SIGSTOP) past its group session mid-flight", frozen_worker),
)

GOALS = (
    ("triton_restart_failed_requests", "== 0"),
    ("triton_restart_restore_s", "<= bare_load_s + 2"),
    ("triton_down_failed_requests", "== 0"),
    ("poison_good_failed", "== 0"),
    ("lost_webhook_recovered_s", "<= 20"),
    ("mlflow_down_failed_requests", "== 0"),
    ("broker_kill_lost", "== 0"),
    ("broker_kill_failed_requests", "== 0"),
    ("frozen_worker_lost", "== 0"),
    ("frozen_worker_duplicates", "== 0"),
    ("promotions_resume_s", "measured"),
)


def _met(figures: dict[str, Any], key: str) -> bool | None:
    value = figures.get(key)
    if value is None:
        return None
    if key == "triton_restart_restore_s":
        return bool(value <= figures.get("bare_load_s", 0) + 2)
    if key == "lost_webhook_recovered_s":
        return bool(value <= 20)
    if key == "promotions_resume_s":
        return True
    return bool(value == 0)


def _selected(only: list[str]) -> tuple[tuple[str, Scenario], ...]:
    if not only:
        return SCENARIOS
    return tuple(
        (title, scenario) for title, scenario in SCENARIOS if scenario is first_version or scenario.__name__ in only
    )


async def run_all(run_dir: Path, scenarios: tuple[tuple[str, Scenario], ...] = SCENARIOS) -> dict[str, Any]:
    figures: dict[str, Any] = {"errors": {}}
    with chaos_system(run_dir, worker_env=WORKER_ENV) as system:
        async with httpx.AsyncClient(timeout=10) as http:
            run = Run(system=system, http=http, registry=MlflowClient(system.stack.mlflow_tracking_uri))
            for title, scenario in scenarios:
                print(f"- {title} ...", flush=True)
                began = time.monotonic()
                try:
                    result = await scenario(run)
                except Exception as error:
                    figures["errors"][scenario.__name__] = f"{type(error).__name__}: {error}"
                    traceback.print_exc()
                    if scenario is first_version:
                        break
                    continue
                figures.update(result)
                print(f"  {json.dumps(result)} ({time.monotonic() - began:.0f} s)", flush=True)
    figures["goals"] = {key: {"goal": goal, "met": _met(figures, key)} for key, goal in GOALS}
    for stage, kill in figures.get("worker_kill", {}).items():
        met = kill["served_after_kill_s"] <= 30 and kill["model_ready_records"] == 1 and kill["stray_dirs"] == 0
        figures["goals"][f"worker_kill_{stage}"] = {"goal": "served <= 30 s, one model.ready, no stray dir", "met": met}
    return figures


def main() -> int:
    names = [scenario.__name__ for _, scenario in SCENARIOS if scenario is not first_version]
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", default=[], choices=names, metavar="NAME", help=f"run only: {', '.join(names)}"
    )
    only = parser.parse_args().only
    run_dir = Path(tempfile.mkdtemp(prefix="chaos-"))
    print(f"chaos suite: logs under {run_dir}", flush=True)
    figures = asyncio.run(run_all(run_dir, _selected(only)))
    BENCH.mkdir(exist_ok=True)
    output = BENCH / ("chaos-only.json" if only else "chaos.json")
    output.write_text(json.dumps(figures, indent=2) + "\n")
    print("\ngoal                               measured   goal")
    for key, verdict in figures["goals"].items():
        mark = {True: "met", False: "MISSED", None: "not measured"}[verdict["met"]]
        print(f"{key:<34} {figures.get(key, '')!s:>9}   {verdict['goal']:<18} {mark}")
    print(f"wrote {output}")
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
