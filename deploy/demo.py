"""``make demo``: the whole story of model-promoter on one machine, narrated, measured, cleaned up.

Starts the local stack (tansu, mlflow server, tritonserver), a worker, the webhook ingress and two
gateway replicas, then:

1. trains an iris classifier, registers v1 and points ``champion`` at it with the MLflow client:
   the signed webhook reaches the ingress, the worker promotes it, both gateways switch;
2. checks predictions through a gateway against scikit-learn's own on the iris test split;
3. registers v2 and moves ``champion`` while traffic flows: no failed request;
4. registers a broken model (no signature), points ``champion`` at it: rejected with its reason,
   dead-lettered, and v2 keeps serving; the ``promoter.*`` tags the worker wrote back on both
   versions are printed as MLflow shows them;
5. points ``challenger`` at v1 and sets a 90/10 A/B split, and measures it;
6. prints the timings, writes ``.bench/demo.json`` and stops every process (also on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import mlflow
import mlflow.sklearn
import numpy as np
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from mlflow import MlflowClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from deploy.stack.local_stack import LocalStack
from deploy.stack.services import Services, start_services
from promoter_client.routing import publish_routing
from runtime.kafka_clients import assign_from_start, started
from runtime.settings import TopicSettings
from schemas.catalog import parse_event
from schemas.promotion_rejected import PromotionRejected

MODEL = "iris-clf"
BENCH = Path(".bench")
POLL_S = 0.02  # how often the demo looks at the gateways while it measures a swap
TRAFFIC_SENDERS = 4
TRAFFIC_INTERVAL_S = 0.015  # pacing of each sender; the rate reached is measured and printed
DEADLINE_S = 120.0
# Quiet service logs; old versions retired within the demo's run.
DEMO_ENV = {"PROMOTER_LOG_LEVEL": "WARNING", "PROMOTER_WORKER_RETIRE_GRACE_S": "30"}


def say(message: str) -> None:
    print(message, flush=True)


def train(features: Any, target: Any, regularisation: float) -> LogisticRegression:
    return LogisticRegression(max_iter=1000, C=regularisation).fit(features, target)


def register(model: LogisticRegression, example: Any | None) -> int:
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=MODEL, input_example=example)
    return int(info.registered_model_version or 0)


def records(rows: Any) -> list[dict[str, float]]:
    return [{str(k): float(v) for k, v in row.items()} for row in rows.to_dict(orient="records")]


async def served_version(http: httpx.AsyncClient, gateway: str, alias: str = "champion") -> int | None:
    try:
        answer = (await http.get(f"{gateway}/models")).json()
    except (httpx.HTTPError, ValueError):
        return None
    route = answer.get("models", {}).get(MODEL, {}).get("aliases", {}).get(alias)
    return int(route["version"]) if route else None


async def until_all_serve(http: httpx.AsyncClient, gateways: list[str], version: int, alias: str = "champion") -> float:
    """Seconds until every gateway serves ``version`` under ``alias`` (RuntimeError at the deadline)."""
    began = time.perf_counter()
    while True:
        versions = [await served_version(http, g, alias) for g in gateways]
        if all(v == version for v in versions):
            return time.perf_counter() - began
        if time.perf_counter() - began > DEADLINE_S:
            raise RuntimeError(f"gateways serve {versions}, not v{version}, after {DEADLINE_S:g} s: see the logs")
        await asyncio.sleep(POLL_S)


async def set_alias_and_wait(
    client: MlflowClient, http: httpx.AsyncClient, gateways: list[str], alias: str, version: int
) -> float:
    began = time.perf_counter()
    client.set_registered_model_alias(MODEL, alias, str(version))
    await until_all_serve(http, gateways, version, alias)
    return time.perf_counter() - began


@dataclass
class Traffic:
    """The demo's own load: concurrent senders over both gateways, every answer recorded."""

    results: list[tuple[float, int, int, str | None]] = field(default_factory=list)  # (t, gateway, status, version)
    running: bool = True
    flowing: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, http: httpx.AsyncClient, gateways: list[str], body: list[dict[str, float]]) -> None:
        await asyncio.gather(*(self._sender(http, gateways, body, lane) for lane in range(TRAFFIC_SENDERS)))

    async def _sender(
        self, http: httpx.AsyncClient, gateways: list[str], body: list[dict[str, float]], lane: int
    ) -> None:
        index = lane
        while self.running:
            gateway = index % len(gateways)
            try:
                response = await http.post(f"{gateways[gateway]}/predict/{MODEL}", json=body)
                version = response.headers.get("x-model-version")
                self.results.append((time.perf_counter(), gateway, response.status_code, version))
            except httpx.HTTPError:
                self.results.append((time.perf_counter(), gateway, 0, None))
            index += 1
            if len(self.results) >= 50:
                self.flowing.set()
            await asyncio.sleep(TRAFFIC_INTERVAL_S)  # pacing of the load

    def rate(self) -> float:
        if len(self.results) < 2:
            return 0.0
        return len(self.results) / (self.results[-1][0] - self.results[0][0])


class Story:
    def __init__(self, stack: LocalStack, services: Services, http: httpx.AsyncClient, summary: dict[str, Any]) -> None:
        self.stack = stack
        self.services = services
        self.gateways = services.gateways
        self.http = http
        self.summary = summary
        self.client = MlflowClient(stack.mlflow_tracking_uri)
        mlflow.set_tracking_uri(stack.mlflow_tracking_uri)
        features, target = load_iris(return_X_y=True, as_frame=True)
        self.x_train, self.x_test, self.y_train, _ = train_test_split(
            features, target, test_size=0.3, random_state=0, stratify=target
        )

    async def run(self) -> None:
        v1, v1_model = await self.first_version()
        await self.check_predictions(v1_model)
        v2 = await self.swap_under_load()
        await self.broken_model(v2)
        await self.ab_split(v1)

    async def timed_alias(self, alias: str, version: int) -> float:
        seconds = await set_alias_and_wait(self.client, self.http, self.gateways, alias, version)
        self.summary["alias_to_serving_s"].append(round(seconds, 3))
        return seconds

    async def first_version(self) -> tuple[int, LogisticRegression]:
        say("\n[1/6] v1: train, register, set alias champion in MLflow")
        model = train(self.x_train, self.y_train, 1.0)
        version = register(model, self.x_train.head(5))
        seconds = await self.timed_alias("champion", version)
        say("      webhook -> ingress -> Kafka -> worker -> Triton -> both gateways:")
        say(f"      v{version} served {seconds:.2f} s after the alias was set")
        return version, model

    async def check_predictions(self, model: LogisticRegression) -> None:
        say("\n[2/6] predictions through gateway A vs scikit-learn on the iris test split")
        response = await self.http.post(f"{self.gateways[0]}/predict/{MODEL}", json=records(self.x_test))
        served = np.asarray(response.json()["predictions"]).ravel()
        expected = model.predict(self.x_test)
        equal = int((served == expected).sum())
        self.summary["prediction_agreement"] = f"{equal}/{len(expected)}"
        version = response.headers["x-model-version"]
        say(f"      {equal}/{len(expected)} predictions equal scikit-learn's (answered by v{version})")
        if equal != len(expected):
            raise RuntimeError("the gateway's predictions differ from scikit-learn's")

    async def swap_under_load(self) -> int:
        say("\n[3/6] v2: register and move champion while traffic flows through both gateways")
        version = register(train(self.x_train, self.y_train, 0.05), self.x_train.head(5))
        traffic = Traffic()
        load = asyncio.create_task(traffic.run(self.http, self.gateways, records(self.x_test.head(2))))
        await traffic.flowing.wait()
        moved_at = time.perf_counter()
        seconds = await self.timed_alias("champion", version)
        await asyncio.sleep(1.0)  # one more second of load, all on the new version
        traffic.running = False
        await load
        failed = sum(1 for _, _, status, _ in traffic.results if status != 200)
        self.summary["failed_requests"] = failed
        self.summary["requests_during_swap"] = len(traffic.results)
        say(f"      {len(traffic.results)} requests ({traffic.rate():.0f}/s), {failed} failed")
        self.summary["swap_load_requests_per_s"] = round(traffic.rate())
        say(f"      both gateways on v{version} {seconds:.2f} s after the alias moved")
        for index, name in enumerate(("A", "B")):
            first = min((t for t, g, _, v in traffic.results if g == index and v == str(version)), default=None)
            if first is not None:
                say(f"      gateway {name}: first answer from v{version} at +{first - moved_at:.3f} s")
        if failed:
            raise RuntimeError(f"{failed} requests failed during the swap")
        return version

    async def broken_model(self, serving: int) -> None:
        say("\n[4/6] a broken model (no signature): champion moved to it in MLflow")
        broken = register(train(self.x_train, self.y_train, 1.0), None)
        started = datetime.now(UTC)
        self.client.set_registered_model_alias(MODEL, "champion", str(broken))
        rejection, letter = await wait_for_rejection(self.services.env, started)
        still = await self.http.post(f"{self.gateways[1]}/predict/{MODEL}", json=records(self.x_test.head(1)))
        say(f"      rejected ({rejection.data.reason_code}): {rejection.data.message}")
        source = f"{letter['x-dlq-source-topic']}@{letter['x-dlq-source-partition']}:{letter['x-dlq-source-offset']}"
        say(f"      dead letter: {letter['x-dlq-reason-code']} ({letter['x-dlq-error-type']}), from {source}")
        answered = still.headers.get("x-model-version")
        say(f"      meanwhile gateway B still answers with v{answered} (status {still.status_code})")
        self.summary["broken_model_rejected"] = rejection.data.reason_code
        if answered != str(serving):
            raise RuntimeError("the old version stopped serving")
        say("      what MLflow shows now (tags the worker wrote back on the versions):")
        for version, status in ((serving, "serving"), (broken, "rejected")):
            tags = await promoter_tags_once(self.client, version, status)
            say(f"        v{version}: " + "  ".join(f"{key}={value}" for key, value in sorted(tags.items())))
        self.client.set_registered_model_alias(MODEL, "champion", str(serving))  # the registry agrees again

    async def ab_split(self, challenger: int) -> None:
        say("\n[5/6] challenger -> v1, then a 90/10 A/B split")
        seconds = await self.timed_alias("challenger", challenger)
        say(f"      challenger v{challenger} served by both gateways {seconds:.2f} s after the alias was set")
        await publish_routing(MODEL, {"champion": 90, "challenger": 10}, kafka=self.stack.kafka_settings())
        split = await measure_split(self.http, self.gateways, records(self.x_test.head(1)))
        self.summary["ab_split_percent"] = split
        shares = " / ".join(f"{alias} {share:.1f}%" for alias, share in split.items())
        say(f"      over 2,000 client ids: {shares}")


async def story(stack: LocalStack, services: Services, summary: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        await Story(stack, services, http, summary).run()


async def promoter_tags_once(client: MlflowClient, version: int, status: str) -> dict[str, str]:
    """The ``promoter.*`` tags of a version once the worker wrote ``status`` (it writes in the background)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = await asyncio.to_thread(client.get_model_version, MODEL, str(version))
        tags = {key: value for key, value in (found.tags or {}).items() if key.startswith("promoter.")}
        if tags.get("promoter.status") == status:
            return tags
        if time.monotonic() > deadline:
            raise RuntimeError(f"v{version} was not tagged promoter.status={status} within {DEADLINE_S:g} s: {tags}")
        await asyncio.sleep(POLL_S)  # poll: the registry has no push for tags


async def first_record(
    env: dict[str, str], topic: str, matches: Callable[[ConsumerRecord[bytes, bytes]], bool]
) -> ConsumerRecord[bytes, bytes]:
    """The first record of ``topic`` (from its start) that ``matches`` (RuntimeError at the deadline)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=env["PROMOTER_KAFKA_BOOTSTRAP_SERVERS"], group_id=None, fetch_max_wait_ms=50
    )
    async with started(consumer):
        await assign_from_start(consumer, [topic])
        deadline = time.perf_counter() + DEADLINE_S
        while time.perf_counter() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                for record in batch:
                    if matches(record):
                        return record
    raise RuntimeError(f"nothing matching arrived on {topic} within {DEADLINE_S:g} s")


async def wait_for_rejection(env: dict[str, str], since: datetime) -> tuple[PromotionRejected, dict[str, str]]:
    """The rejection of the broken model's promotion, and the diagnostic headers of its dead letter."""
    topics = TopicSettings()

    def rejected(record: ConsumerRecord[bytes, bytes]) -> bool:
        event = parse_event(record.value or b"", PromotionRejected)
        return event.subject == MODEL and event.time >= since

    rejection = parse_event((await first_record(env, topics.model_rejected, rejected)).value or b"", PromotionRejected)

    def dead_letter(record: ConsumerRecord[bytes, bytes]) -> bool:
        return dict(record.headers).get("x-dlq-event-id") == (rejection.data.request_event_id or "").encode()

    letter = await first_record(env, topics.promotion_dlq, dead_letter)
    return rejection, {name: value.decode() for name, value in letter.headers if name.startswith("x-dlq-")}


async def measure_split(http: httpx.AsyncClient, gateways: list[str], body: list[dict[str, float]]) -> dict[str, float]:
    began = time.perf_counter()
    while True:  # wait until both gateways applied the policy
        views = [(await http.get(f"{g}/models")).json()["models"][MODEL]["weights"] for g in gateways]
        if all(v == {"champion": 90, "challenger": 10} for v in views):
            break
        if time.perf_counter() - began > DEADLINE_S:
            raise RuntimeError(f"the A/B policy did not reach the gateways: {views}")
        await asyncio.sleep(POLL_S)
    counts: dict[str, int] = {}
    for index in range(2000):
        response = await http.post(
            f"{gateways[index % 2]}/predict/{MODEL}", json=body, headers={"X-Client-Id": f"customer-{index}"}
        )
        alias = response.headers.get("x-model-alias", "?")
        counts[alias] = counts.get(alias, 0) + 1
    return {alias: 100 * n / 2000 for alias, n in sorted(counts.items())}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally`: all processes are stopped


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.perf_counter()
    run_dir = Path(tempfile.mkdtemp(prefix="demo-", dir=Path(".stack").resolve() if Path(".stack").is_dir() else None))
    summary: dict[str, Any] = {"alias_to_serving_s": [], "failed_requests": None}
    say("model-promoter demo: starting tansu, mlflow server and tritonserver ...")
    try:
        with LocalStack(run_dir / "stack") as stack:
            say(f"  local stack ready in {stack.startup_s:.1f} s; logs in {stack.logs_dir}")
            services = start_services(stack, secrets.token_hex(24), env_overrides=DEMO_ENV)
            say("  worker, ingress and gateways A and B are ready")
            say("  MLflow webhook registered: registry events -> ingress (HMAC signed)")
            asyncio.run(story(stack, services, summary))
    except KeyboardInterrupt:
        say("\ninterrupted: every process was stopped")
        return 130
    summary["total_s"] = round(time.perf_counter() - began, 1)
    timings = summary["alias_to_serving_s"]
    summary["alias_to_serving_p50_s"] = round(statistics.median(timings), 3)
    BENCH.mkdir(exist_ok=True)
    (BENCH / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    say("\n[6/6] summary")
    shown = ", ".join(f"{t:.2f} s" for t in timings)
    say(f"  alias set -> every gateway serving: {shown} (p50 {summary['alias_to_serving_p50_s']:.2f} s)")
    say(f"  failed requests during the swap: {summary['failed_requests']} of {summary['requests_during_swap']}")
    say(f"  predictions equal to scikit-learn: {summary['prediction_agreement']}")
    say(f"  broken model: rejected ({summary['broken_model_rejected']}), old version kept serving")
    say(f"  A/B split measured: {summary['ab_split_percent']}")
    say(f"  total {summary['total_s']} s; wrote {BENCH / 'demo.json'}; every process stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
