"""The faults the README promises to survive, caused for real, each measured into a dict of figures."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from mlflow import MlflowClient

from deploy.stack.service_handle import ServiceHandle
from promoter_client.promotion import request_promotion_async
from runtime.settings import TopicSettings
from tests.chaos.load import ConstantLoad, TensorShape, failures, input_tensor, summary
from tests.chaos.system import ChaosSystem, until_holds, until_served
from tests.group_rebalance import first_frozen_past_its_session, rebalance_mid_flight
from tests.kafka_cluster import group_coordinator
from tests.worker_harness import register_iris, snapshot
from worker.staging import leftover_staging_dirs
from worker.triton_naming import triton_model_name

MODEL = "chaos-iris"
ALIAS = "champion"
WORKER_KILL_STAGES = ("download", "stage", "load", "prove")
TRITON_DOWN_S = 10.0
SETTLE_S = 2.0  # load kept running after a recovery, so a late failure is counted too
LOST_WEBHOOK_OUTAGE_S = 12.0  # longer than MLflow's four delivery attempts (~8 s)
DEADLINE_S = 120.0
FROZEN_WORKER_MODELS = 12


@dataclass
class Run:
    """What every scenario needs: the system, one HTTP client, the registry, the served version."""

    system: ChaosSystem
    http: httpx.AsyncClient
    registry: MlflowClient
    tensor: TensorShape | None = None
    served: int = 0
    regularisation: float = 1.0

    def register(self) -> int:
        self.regularisation /= 2  # every version is a different model
        return register_iris(self.system.stack.mlflow_tracking_uri, MODEL, regularisation=self.regularisation)

    async def promote(self, version: int) -> float:
        """Move the alias in MLflow (webhook -> ingress -> worker) and wait for both gateways."""
        began = time.monotonic()
        self.registry.set_registered_model_alias(MODEL, ALIAS, str(version))
        await until_served(self.http, self.system.gateway_urls, MODEL, version)
        self.served = version
        return time.monotonic() - began

    def load(self, **options: Any) -> ConstantLoad:
        assert self.tensor is not None
        load = ConstantLoad(self.system.gateway_urls, MODEL, self.tensor, **options)
        load.start()
        return load


async def keep_loading(seconds: float) -> None:
    """Let the load run on for ``seconds``: a measurement window, not a wait for a condition."""
    await asyncio.sleep(seconds)  # poll


async def first_version(run: Run) -> dict[str, Any]:
    version = run.register()
    seconds = await run.promote(version)
    run.tensor = await input_tensor(run.system.gateway_urls[0], MODEL)
    return {"first_promotion_s": round(seconds, 2)}


async def _restart_under_load(run: Run, outage: Callable[[ServiceHandle], Awaitable[float]]) -> dict[str, Any]:
    """Break the second Triton with ``outage`` under load; count failures until it holds the routed model again."""
    triton = run.system.tritons[1]
    url = run.system.triton_urls[1]
    routed = {triton_model_name(MODEL, run.served)}
    load = run.load()
    await load.until_flowing()
    began = time.monotonic()
    up_at = began + await outage(triton)
    restore_s = await until_holds(run.http, url, routed)
    await keep_loading(SETTLE_S)
    await load.stop()
    window = load.between(began, time.monotonic())
    return {
        "failed_requests": len(failures(window)),
        "requests": len(window),
        "answers": summary(window),
        "restore_s": round(restore_s, 2),
        "restarted_after_s": round(up_at - began, 2),
    }


async def _bare_load_s(run: Run) -> float:
    """The routed model loaded by hand on a Triton nobody else uses, in the same run."""
    spare = run.system.spare_triton()
    try:
        url = f"http://{spare.spec.endpoints['triton_http']}/v2/repository/models"
        began = time.monotonic()
        answer = await run.http.post(f"{url}/{triton_model_name(MODEL, run.served)}/load", timeout=DEADLINE_S)
        answer.raise_for_status()
        return time.monotonic() - began
    finally:
        spare.stop()


async def triton_restart(run: Run) -> dict[str, Any]:
    async def kill_and_start(triton: ServiceHandle) -> float:
        began = time.monotonic()
        await asyncio.to_thread(triton.kill)
        await asyncio.to_thread(triton.start)
        return time.monotonic() - began

    figures = await _restart_under_load(run, kill_and_start)
    bare = await _bare_load_s(run)
    return {
        "triton_restart_failed_requests": figures["failed_requests"],
        "triton_restart_requests": figures["requests"],
        "triton_restart_answers": figures["answers"],
        "triton_restart_restore_s": figures["restore_s"],
        "bare_load_s": round(bare, 2),
    }


async def triton_down(run: Run) -> dict[str, Any]:
    async def stop_wait_start(triton: ServiceHandle) -> float:
        began = time.monotonic()
        await asyncio.to_thread(triton.stop)
        await keep_loading(TRITON_DOWN_S)
        await asyncio.to_thread(triton.start)
        return time.monotonic() - began

    figures = await _restart_under_load(run, stop_wait_start)
    return {
        "triton_down_failed_requests": figures["failed_requests"],
        "triton_down_requests": figures["requests"],
        "triton_down_answers": figures["answers"],
        "triton_down_restore_s": figures["restore_s"],
    }


async def poison(run: Run) -> dict[str, Any]:
    load = run.load(poison=1, poison_rate=20.0)
    await load.until_flowing()
    began = time.monotonic()
    await keep_loading(10.0)
    await load.stop()
    window = load.between(began, time.monotonic())
    poisoned = [o for o in window if o.poison]
    return {
        "poison_good_failed": len(failures(window)),
        "poison_good_requests": len([o for o in window if not o.poison]),
        "poison_answers": summary(poisoned),
        "poison_all_400": bool(poisoned) and all(o.status == "400" for o in poisoned),
        "poison_message": poisoned[0].message if poisoned else "",
    }


def _log_lines(path: Path, offset: int) -> list[dict[str, Any]]:
    with path.open("rb") as log:
        log.seek(offset)
        raw = log.read().decode(errors="replace")
    lines = []
    for line in raw.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


async def _until_stage(worker: ServiceHandle, offset: int, stage: str, version: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        for line in _log_lines(worker.log_path, offset):
            if line.get("event") == "stage started" and line.get("stage") == stage and line.get("version") == version:
                return
        await asyncio.sleep(0.005)  # poll: the prove stage lasts a few hundred ms
    raise RuntimeError(f"the worker never logged stage {stage!r} of v{version}")


async def _ready_records(run: Run, version: int) -> int:
    records = await snapshot(run.system.env["PROMOTER_KAFKA_BOOTSTRAP_SERVERS"], TopicSettings().model_ready)
    count = 0
    for record in records:
        event = json.loads(record.value or b"{}")
        data = event.get("data", {})
        if event.get("type", "").startswith("io.modelpromoter.model.ready.") and data.get("model_name") == MODEL:
            count += data.get("version") == version and data.get("alias") == ALIAS
    return count


async def worker_kill(run: Run) -> dict[str, Any]:
    worker = run.system.worker
    per_stage: dict[str, dict[str, Any]] = {}
    for stage in WORKER_KILL_STAGES:
        version = run.register()
        offset = worker.log_path.stat().st_size
        run.registry.set_registered_model_alias(MODEL, ALIAS, str(version))
        await _until_stage(worker, offset, stage, version)
        killed_at = time.monotonic()
        await asyncio.to_thread(worker.kill)
        await asyncio.to_thread(worker.start)
        await until_served(run.http, run.system.gateway_urls, MODEL, version)
        run.served = version
        per_stage[stage] = {
            "served_after_kill_s": round(time.monotonic() - killed_at, 2),
            "model_ready_records": await _ready_records(run, version),
            "stray_dirs": len(leftover_staging_dirs(run.system.stack.model_repository)),
        }
    return {"worker_kill": per_stage}


async def lost_webhook(run: Run) -> dict[str, Any]:
    version = run.register()
    ingress = run.system.ingress
    await asyncio.to_thread(ingress.stop)
    moved_at = time.monotonic()
    run.registry.set_registered_model_alias(MODEL, ALIAS, str(version))
    await keep_loading(LOST_WEBHOOK_OUTAGE_S)  # MLflow tries four times, then drops the delivery
    await asyncio.to_thread(ingress.start)
    await until_served(run.http, run.system.gateway_urls, MODEL, version)
    run.served = version
    return {"lost_webhook_recovered_s": round(time.monotonic() - moved_at, 2)}


def _dlq_replay(env: dict[str, str], event_id: str) -> subprocess.CompletedProcess[str]:
    promoter = Path(sys.executable).with_name("promoter")  # the console script, as on-call runs it
    argv = [str(promoter), "dlq", "replay", "--event-id", event_id, "--yes"]
    return subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False)


async def mlflow_down(run: Run) -> dict[str, Any]:
    """MLflow stops while a promotion resolves; its retries run out; replay serves it once MLflow is back."""
    system = run.system
    restart_without_reconcile(system)  # so only the replay, not the registry check, can serve the version
    version = run.register()
    old = run.served
    await asyncio.to_thread(system.ingress.stop)  # the alias move reaches the worker only by the request below
    run.registry.set_registered_model_alias(MODEL, ALIAS, str(version))
    mlflow = system.mlflow()
    await asyncio.to_thread(mlflow.stop)
    await asyncio.to_thread(system.ingress.start)
    load = run.load()
    await load.until_flowing()
    began = time.monotonic()
    kafka = system.stack.kafka_settings()
    outcome = await request_promotion_async(MODEL, alias=ALIAS, origin="cli", wait_s=DEADLINE_S, kafka=kafka)
    rejected_after_s = time.monotonic() - began
    await load.stop()
    window = load.between(began, time.monotonic())
    await asyncio.to_thread(mlflow.start)
    replayed_at = time.monotonic()
    replay = await asyncio.to_thread(_dlq_replay, system.env, outcome.event_id)
    if replay.returncode != 0:
        raise RuntimeError(f"promoter dlq replay exited {replay.returncode}: {replay.stderr or replay.stdout}")
    await until_served(run.http, system.gateway_urls, MODEL, version)
    run.served = version
    return {
        "mlflow_down_old_version": old,
        "mlflow_down_failed_requests": len(failures(window)),
        "mlflow_down_requests": len(window),
        "mlflow_down_other_versions": sum(1 for o in window if o.ok and o.version != str(old)),
        "mlflow_down_outcome": f"{outcome.kind} ({outcome.reason_code})",
        "mlflow_down_rejected_after_s": round(rejected_after_s, 2),
        "mlflow_down_replay_exit": replay.returncode,
        "mlflow_down_replay_served_s": round(time.monotonic() - replayed_at, 2),
    }


def restart_without_reconcile(system: ChaosSystem) -> None:
    worker = system.worker
    env = {**worker.spec.env, "PROMOTER_WORKER_RECONCILE_INTERVAL_S": "0"}
    worker.stop()
    worker.spec = dataclasses.replace(worker.spec, env=env)
    worker.start()


async def _topic_events(run: Run, topic: str) -> list[dict[str, Any]]:
    records = await snapshot(run.system.env["PROMOTER_KAFKA_BOOTSTRAP_SERVERS"], topic)
    return [json.loads(record.value) for record in records if record.value]


async def _dead_letters_of(run: Run, event_id: str) -> int:
    records = await snapshot(run.system.env["PROMOTER_KAFKA_BOOTSTRAP_SERVERS"], TopicSettings().promotion_dlq)
    return sum(1 for r in records if ("x-dlq-event-id", event_id.encode()) in r.headers)


async def broker_kill(run: Run) -> dict[str, Any]:
    """The group coordinator of the three brokers SIGKILLed right after an alias moved, under load; then restarted.

    While it is down, an on-call request for an unknown model must come back rejected; once it is
    back, a second promotion. Counted afterwards on the topics: each promotion's request, its
    ``model.ready`` and both gateways' swap acks, and the unknown model's dead letter.
    """
    system = run.system
    nodes = system.kafka_nodes()
    during, after = run.register(), run.register()
    load = run.load()
    await load.until_flowing()
    began = time.monotonic()
    victim = nodes[await group_coordinator(system.env["PROMOTER_KAFKA_BOOTSTRAP_SERVERS"]) - 1]
    run.registry.set_registered_model_alias(MODEL, ALIAS, str(during))
    await asyncio.to_thread(victim.kill)
    killed_at = time.monotonic()
    unknown = asyncio.create_task(
        request_promotion_async(
            f"{MODEL}-unknown", alias=ALIAS, origin="cli", wait_s=DEADLINE_S, kafka=system.stack.kafka_settings()
        )
    )
    resume_s = killed_at - began + await until_served(run.http, system.gateway_urls, MODEL, during)
    rejected = await unknown
    await asyncio.to_thread(victim.start)
    restarted_s = time.monotonic() - killed_at
    await run.promote(after)
    await keep_loading(SETTLE_S)
    await load.stop()
    window = load.between(began, time.monotonic())

    topics = TopicSettings()
    requests = [e for e in await _topic_events(run, topics.promotion_requested) if e.get("subject") == MODEL]
    acks = [e["data"] for e in await _topic_events(run, topics.gateway_status) if "swap_acked" in e.get("type", "")]
    gateways = [s.spec.name for s in system.gateways]
    missing: dict[str, int] = {}
    for version in (during, after):
        asked = [e for e in requests if e["data"].get("reason", "").endswith(f"version {version}")]
        acked = {
            a["gateway_id"] for a in acks if a["route"]["model_name"] == MODEL and a["route"]["version"] == version
        }
        missing[f"v{version} request"] = 0 if asked else 1
        missing[f"v{version} model.ready"] = 0 if await _ready_records(run, version) else 1
        missing[f"v{version} swaps"] = len(set(gateways) - acked)
    dead_letters = await _dead_letters_of(run, rejected.event_id)
    missing["dead letter"] = 0 if dead_letters else 1
    return {
        "broker_kill_lost": sum(missing.values()),
        "broker_kill_missing": {what: n for what, n in missing.items() if n},
        "broker_kill_failed_requests": len(failures(window)),
        "broker_kill_requests": len(window),
        "broker_kill_answers": summary(window),
        "broker_kill_unknown_outcome": f"{rejected.kind} ({rejected.reason_code})",
        "broker_kill_dead_letters": dead_letters,
        "broker_kill_restarted_after_s": round(restarted_s, 2),
        "promotions_resume_s": round(resume_s, 2),
    }


async def frozen_worker(run: Run) -> dict[str, Any]:
    """Two more worker replicas in a group of their own (own topics) promote 12 models two at a time; once the
    first is served, one replica is frozen (SIGSTOP) until the group evicted it and gave every partition to the
    other, then resumed (SIGCONT) with its promotions in flight. Counted once every offset is committed."""
    stack = run.system.stack
    models = {
        name: register_iris(stack.mlflow_tracking_uri, name)
        for name in (f"chaos-frozen-{index}" for index in range(FROZEN_WORKER_MODELS))
    }
    figures = await rebalance_mid_flight(
        stack,
        stack.run_dir / "frozen_worker",
        models,
        served_timeout_s=DEADLINE_S,
        worker_env={"PROMOTER_WORKER_CONCURRENCY": "2"},
        disrupt=first_frozen_past_its_session,
    )
    return {f"frozen_worker_{key.removeprefix('rebalance_')}": value for key, value in figures.items()}
