"""The worker process: a FastStream Kafka app, plus ``/health``, ``/ready`` and ``/metrics`` over ASGI.

Start-up order: take this process's staging lease and remove the staging directories dead
workers left in the (shared) model repository, create missing topics, rebuild the serving state
by replaying ``model.ready`` to its end, then join the consumer group on
``model.promotion.requested``. The replay keeps following the log afterwards, so promotions
announced by other replicas are known here too.
In the background: retirement of old versions, the shared sklearn runtime loaded on every Triton
endpoint (never delaying readiness) and older releases' runtimes removed once unused, the fleet
repair loop (every Triton endpoint holds what it should) with its status reports, and the
registry reconcile loop.
Run it with ``promoter-worker`` (uvicorn) or ``faststream run worker.app:app``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.handlers import GetHandler
from faststream.asgi.types import Scope
from faststream.kafka import KafkaBroker, KafkaMessage, Topic
from pydantic_settings import BaseSettings

from runtime.http_errors import JSON_CONTENT_TYPE, error_json
from runtime.kafka_access import require_kafka_access
from runtime.kafka_broker import faststream_logger, kafka_broker
from runtime.kafka_topics import ensure_service_topics
from runtime.logging import configure_logging, get_logger
from runtime.metrics import METRICS_CONTENT_TYPE, render
from runtime.service_help import parse_service_args, settings_classes_of, valid_settings
from runtime.settings import KafkaSettings, LogSettings, MLflowSettings, TopicSettings, TritonSettings
from runtime.topic_replay import TopicReplayer
from schemas.fleet_status import FLEET_STATUS_KEY_PREFIX, WorkerFleetStatus
from schemas.model_ready import ModelReady
from schemas.promotion_rejected import PromotionRejected
from schemas.promotion_requested import PromotionRequested
from worker.concurrent_batches import ConcurrentBatches, Consumer, RevocationListener
from worker.fleet_repair import FleetRepairer
from worker.fleet_report import FleetStatusReporter
from worker.gateway_view import GatewayView
from worker.metrics import WorkerMetrics
from worker.model_loads import ModelLoads
from worker.parity import warm_up_model_libraries
from worker.promotion import Promoter
from worker.registry import Registry
from worker.registry_priority import PromotionsFirst
from worker.registry_reconcile import RegistryReconciler
from worker.registry_writeback import RegistryWriteback
from worker.request_fetch import fetch_without_idle_sleep
from worker.retirement import RetirementPlanner, Retirer
from worker.runtime_upkeep import preload_runtime, remove_unused_runtimes_forever
from worker.service import PromotionService, Publisher
from worker.serving_state import ServingState
from worker.settings import WorkerSettings
from worker.staging import StagingLease, remove_leftover_staging_dirs
from worker.triton_fleet import TritonFleet

log = get_logger(__name__)

REPLAY_TIMEOUT_S = 120.0
MAX_BATCH_RECORDS = 100
REBALANCE_TIMEOUT_MS = 300_000  # Kafka's own consumers use max.poll.interval.ms (5 minutes) for it
RETIREMENT_SWEEP_S = 1.0
RUNTIME_SWEEP_S = 60.0  # an old sklearn runtime becomes unused when the last version of its release retires
HEALTH_PING_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WorkerConfig:
    """Every setting the worker reads, loaded once from the environment."""

    kafka: KafkaSettings
    topics: TopicSettings
    mlflow: MLflowSettings
    triton: TritonSettings
    worker: WorkerSettings

    @classmethod
    def from_env(cls) -> WorkerConfig:
        return cls(KafkaSettings(), TopicSettings(), MLflowSettings(), TritonSettings(), WorkerSettings())


def _error(status: int, message: str) -> AsgiResponse:
    return AsgiResponse(error_json(message), status, headers={"content-type": JSON_CONTENT_TYPE})


def _health(broker: KafkaBroker) -> GetHandler:
    """``/health``: 204 while the broker answers a ping, else 500 saying so."""

    @get
    async def health(scope: Scope) -> AsgiResponse:
        if await broker.ping(HEALTH_PING_TIMEOUT_S):
            return AsgiResponse(b"", 204)
        return _error(500, f"the Kafka broker did not answer a ping within {HEALTH_PING_TIMEOUT_S:g} s")

    return health


def _without_fleet_reports(
    apply: Callable[[ConsumerRecord[bytes, bytes]], None],
) -> Callable[[ConsumerRecord[bytes, bytes]], None]:
    """``gateway.status`` also carries the workers' fleet reports (keyed ``worker/<id>``): skip those."""
    prefix = FLEET_STATUS_KEY_PREFIX.encode()

    def apply_gateway_record(record: ConsumerRecord[bytes, bytes]) -> None:
        if not (record.key or b"").startswith(prefix):
            apply(record)

    return apply_gateway_record


@dataclass
class Upkeep:
    """The loops that keep the fleet and the aliases right: the shared runtime's preload and old runtimes'
    removal, fleet repair, its status reports, registry reconcile."""

    settings: WorkerSettings
    promoter: Promoter
    repairer: FleetRepairer
    reporter: FleetStatusReporter
    reconciler: RegistryReconciler
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        config: WorkerConfig,
        promoter: Promoter,
        publisher: Publisher,
        metrics: WorkerMetrics,
    ) -> Upkeep:
        settings = config.worker
        repairer = FleetRepairer(
            promoter.fleet, promoter.state, promoter.loads, config.triton.model_repository, settings, metrics
        )
        reporter = FleetStatusReporter(
            repairer,
            publisher,
            config.topics.gateway_status,
            settings.replica_id,
            settings.fleet_status_interval_s,
            max_prepared_versions=settings.max_prepared_versions,
        )
        repairer.on_change = reporter.changed
        requests = config.topics.promotion_requested
        reconciler = RegistryReconciler(
            promoter.registry, promoter.state, publisher, requests, settings.replica_id, metrics
        )
        return cls(settings, promoter, repairer, reporter, reconciler)

    async def start(self) -> None:
        """Call once the broker is connected: these loops publish."""
        self.tasks += self._runtime_upkeep()
        await self.repairer.check_once()  # a Triton down at start-up is reported down, not fatal
        self.tasks += [
            asyncio.create_task(self.repairer.run_forever(self.settings.fleet_check_interval_s), name="fleet repair"),
            asyncio.create_task(self.reporter.run_forever(), name="fleet status"),
        ]
        if self.settings.reconcile_interval_s > 0:
            interval_s = self.settings.reconcile_interval_s
            self.tasks.append(asyncio.create_task(self.reconciler.run_forever(interval_s), name="registry reconcile"))

    def _runtime_upkeep(self) -> list[asyncio.Task[None]]:
        """The shared sklearn runtime loaded everywhere now (not on the first promotion); older runtimes removed."""
        fleet, repository, loads, lease = (
            self.promoter.fleet,
            self.promoter.repository,
            self.promoter.loads,
            self.promoter.lease,
        )
        preload = preload_runtime(
            fleet.endpoints,
            repository,
            loads,
            lease,
            max_attempts=self.settings.max_attempts,
            backoff_initial_s=self.settings.backoff_initial_s,
            backoff_max_s=self.settings.backoff_max_s,
        )
        removal = remove_unused_runtimes_forever(fleet, repository, loads, lease, RUNTIME_SWEEP_S)
        return [
            asyncio.create_task(preload, name="shared runtime preload"),
            asyncio.create_task(removal, name="old runtimes removal"),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.repairer.close()


def _writeback(
    settings: WorkerSettings, registry: Registry, metrics: WorkerMetrics, promotions_first: PromotionsFirst
) -> RegistryWriteback | None:
    if not settings.registry_writeback:
        log.info("registry write-back is off (PROMOTER_WORKER_REGISTRY_WRITEBACK=false)")
        return None
    return RegistryWriteback(
        registry,
        metrics,
        history_size=settings.alias_history_size,
        backoff_initial_s=settings.backoff_initial_s,
        backoff_max_s=settings.backoff_max_s,
        promotions_first=promotions_first,
    )


def take_staging_lease(lease: StagingLease) -> None:
    """Blocking: hold this process's lease, then remove what dead workers left in the repository."""
    lease.acquire()
    remove_leftover_staging_dirs(lease.repository, lease)


def _declare_publishers(broker: KafkaBroker, topics: TopicSettings) -> None:
    """What the worker publishes, and where: for the AsyncAPI document (/docs/asyncapi) and the Kafka ACLs' test."""
    for topic, schema, title in (
        (topics.model_ready, ModelReady, "model.ready: a version is served (or ServingStopped, or ModelPrepared)"),
        (topics.model_rejected, PromotionRejected, "model.rejected: a promotion failed for good"),
        (topics.promotion_dlq, bytes, "DLQ: the original record plus x-dlq-* headers"),
    ):
        broker.publisher(topic, schema=schema, title=title, description="keyed by registered model name")
    broker.publisher(
        topics.promotion_requested,
        schema=PromotionRequested,
        title="promotion requests: the registry reconciler's corrections (drift between MLflow and what is served)",
        description="keyed by registered model name",
    )
    broker.publisher(
        topics.gateway_status,
        schema=WorkerFleetStatus,
        title="gateway.status: this worker's view of every Triton endpoint",
        description="keyed worker/<replica id>; on change and every PROMOTER_WORKER_FLEET_STATUS_INTERVAL_S",
    )


def build_app(config: WorkerConfig | None = None) -> AsgiFastStream:
    config = config or WorkerConfig.from_env()
    kafka, topics = config.kafka, config.topics
    if config.worker.concurrency > 1 and config.triton.protocol == "http":
        log.warning(
            "Triton's HTTP server holds a thread for the whole of a model load, and loads whose connections "
            "share a thread run one after another: set PROMOTER_TRITON_PROTOCOL=grpc (and the gRPC ports in "
            "PROMOTER_TRITON_ENDPOINTS) for PROMOTER_WORKER_CONCURRENCY above 1 to load several models at once",
            concurrency=config.worker.concurrency,
        )
    broker = kafka_broker(kafka, description="model-promoter worker: promotion requests in, outcomes out")
    metrics = WorkerMetrics()
    state = ServingState(max_prepared_per_model=config.worker.max_prepared_versions)
    metrics.prepared_versions.set_function(lambda: len(state.prepared_to_hold()))
    fleet = TritonFleet(config.triton)
    registry = Registry(config.mlflow, concurrent_promotions=config.worker.concurrency)
    lease = StagingLease(config.triton.model_repository, config.worker.replica_id)
    promoter = Promoter(config.worker, config.triton, registry, fleet, state, ModelLoads(), lease)
    writeback = _writeback(config.worker, registry, metrics, promoter.promotions_first)  # waits for promotions
    service = PromotionService(config.worker, topics, promoter, state, broker, metrics, writeback)
    replayer = TopicReplayer(kafka, [topics.model_ready], service.apply_log_record, catches_up=True)
    batches = ConcurrentBatches(
        service, config.worker.concurrency, max_records=MAX_BATCH_RECORDS, catch_up=replayer.catch_up
    )
    gateways = GatewayView()
    gateway_status = TopicReplayer(kafka, [topics.gateway_status], _without_fleet_reports(gateways.apply))
    planner = RetirementPlanner(
        state,
        gateways,
        keep_loaded_versions=config.worker.keep_loaded_versions,
        grace_s=config.worker.retire_grace_s,
        loads=promoter.loads,
    )
    retirer = Retirer(planner, fleet, config.triton.model_repository, metrics, lease)
    upkeep = Upkeep.build(config, promoter, broker, metrics)
    background: list[asyncio.Task[None]] = []

    requests = broker.subscriber(
        # Created by ensure_project_topics with its declared config, or by the topic operator: FastStream's
        # own create would be denied by the deployed ACLs (a warning at every start).
        Topic(topics.promotion_requested, declare=False),
        group_id=config.worker.group_id,
        batch=True,
        max_records=MAX_BATCH_RECORDS,
        batch_timeout_ms=kafka.fetch_max_wait_ms,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        # How long the group waits for this member to re-join: the revocation waits for the promotions in
        # flight first. aiokafka's default is the session timeout (10 s): a member whose promotions took
        # longer was evicted, its partitions went to the other member, and both served the same requests
        # (15 duplicate decisions of 64 with the machine's load average at 15).
        rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
        listener=RevocationListener(batches),  # a rebalance waits for the promotions in flight, then commits
        title="promotion requests",
        description=(
            "CloudEvents io.modelpromoter.promotion.requested.v1 and io.modelpromoter.prepare.requested.v1, "
            "keyed by registered model name."
        ),
    )
    fetch_without_idle_sleep(requests)  # a request arriving while the worker idles is fetched at once

    @requests
    async def on_promotion_requests(msg: KafkaMessage) -> None:
        # The raw records are parsed by the service, so that malformed ones reach the DLQ with a
        # reason instead of failing the whole batch in a decoder. Offsets are committed by `batches`,
        # per partition up to the oldest record whose outcome the broker has not confirmed; on a
        # failure it rewinds there: unconfirmed answers are re-announced, nothing is lost.
        await batches.handle(list(msg.raw_message), cast("Consumer", msg.consumer))  # aiokafka's consumer
        retirer.nudge()  # retire what this batch replaced, off the consume path: the next request is not held up

    _declare_publishers(broker, topics)

    async def start_state() -> None:
        await require_kafka_access(kafka)  # refused credentials or TLS: exit now, saying which
        await ensure_service_topics(kafka, topics)
        # The first promotion pays no import time; the imports run while the state topics are replayed.
        warm_up = asyncio.create_task(asyncio.to_thread(warm_up_model_libraries), name="model libraries warm-up")
        await replayer.start()
        await gateway_status.start()
        await replayer.wait_caught_up(REPLAY_TIMEOUT_S)
        await gateway_status.wait_caught_up(REPLAY_TIMEOUT_S)
        await warm_up
        background.append(asyncio.create_task(retirer.run_forever(RETIREMENT_SWEEP_S), name="retirement"))
        if writeback is not None:
            background.append(asyncio.create_task(writeback.run_forever(), name="registry write-back"))
        log.info("worker ready", served_aliases=len(state.routes), log_records=replayer.records_seen)

    async def stop_state() -> None:
        for task in background:
            task.cancel()
        await upkeep.stop()
        await gateway_status.stop()
        await replayer.stop()
        await fleet.close()

    @get
    async def ready(scope: Scope) -> AsgiResponse:
        if replayer.caught_up.is_set() and replayer.failed is None:
            return AsgiResponse(b"ready", 200)
        return _error(503, "replaying the serving-state log")

    @get
    async def prometheus(scope: Scope) -> AsgiResponse:
        return AsgiResponse(render(metrics.registry), 200, headers={"content-type": METRICS_CONTENT_TYPE})

    return AsgiFastStream(
        broker,
        asgi_routes=[
            ("/health", _health(broker)),
            ("/ready", ready),
            ("/metrics", prometheus),
        ],
        # Before the broker consumes anything. FastStream runs a sync hook in a thread; a lambda, as it
        # validates a hook's annotated return value.
        on_startup=[lambda: take_staging_lease(lease), start_state],
        after_startup=[upkeep.start],
        on_shutdown=[stop_state, lambda: lease.release()],  # noqa: PLW0108 - a lambda, as for on_startup
        asyncapi_path="/docs/asyncapi",
        logger=faststream_logger("faststream.app"),
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings_classes: list[type[BaseSettings]] = [*settings_classes_of(WorkerConfig), LogSettings]
    parse_service_args(
        "promoter-worker",
        "model-promoter's promotion worker: turns promotion requests into served Triton models "
        "(or rejections and dead letters), with /health, /ready and /metrics over HTTP.",
        settings_classes,
        argv,
    )
    import uvicorn  # noqa: PLC0415

    with valid_settings("worker", settings_classes):
        configure_logging("worker", LogSettings())
        config = WorkerConfig.from_env()
    uvicorn.run(
        build_app(config),
        host=config.worker.health_host,
        port=config.worker.health_port,
        log_config=None,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
