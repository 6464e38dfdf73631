"""Follow ``model.ready`` and ``routing.updated`` from offset 0: rebuild the routing table, then keep it current.

Before the replay caught up, events only build the table (no acks, no per-event logs: a 10,000
event log must replay in well under two seconds). Afterwards every applied change is acked on
``gateway.status``, counted, and logged.
"""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord

from gateway.acks import StatusPublisher
from gateway.metrics import GatewayMetrics
from gateway.routing_table import RoutingState
from runtime.logging import get_logger
from runtime.settings import KafkaSettings
from runtime.topic_replay import TopicReplayer
from schemas.catalog import InvalidEventError, parse_any_event
from schemas.model_ready import ModelReady, ServingStopped
from schemas.prepared_version import ModelPrepared
from schemas.routing_updated import RoutingUpdated

log = get_logger(__name__)

_LOG_EVENTS = (ModelReady, ServingStopped, RoutingUpdated, ModelPrepared)


class LogFollower:
    def __init__(
        self,
        kafka: KafkaSettings,
        topics: list[str],
        state: RoutingState,
        metrics: GatewayMetrics,
        status: StatusPublisher | None,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.status = status
        self.replayer = TopicReplayer(kafka, topics, self.apply)
        self.ready = asyncio.Event()

    async def apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.metrics.log_records.inc()
        try:
            event = parse_any_event(record.value or b"", _LOG_EVENTS)
        except InvalidEventError as error:
            log.warning("unreadable record on the serving-state log", topic=record.topic, error=error.message)
            return
        if isinstance(event, ModelPrepared):
            return  # loaded for the workers, routed by no alias: never a route
        assert isinstance(event, ModelReady | ServingStopped | RoutingUpdated)  # noqa: S101 - narrowed by allowed
        change = self.state.apply(event.data)
        if change is None:
            self.metrics.stale_events.inc()
            if self.ready.is_set():
                log.info("stale event ignored", model=event.data.model_name, generation=event.data.generation)
            return
        if not self.ready.is_set():
            return
        self.metrics.swaps.labels(change.model_name, change.kind).inc()
        self.metrics.routes.set(len(self.state.table.routes()))
        log.info(
            "routing changed",
            kind=change.kind,
            model=change.model_name,
            alias=change.alias,
            version=change.route.version if change.route else None,
            previous_version=change.previous_version,
            generation=event.data.generation,
        )
        if self.status is not None:
            try:
                await self.status.ack(change)
            except Exception as error:  # an ack lost is repaired by the next heartbeat
                log.warning("swap ack not sent", error=str(error))

    async def start(self, timeout_s: float) -> None:
        await self.replayer.start()
        await self.replayer.wait_caught_up(timeout_s)
        self.ready.set()
        self.metrics.ready.set(1)
        self.metrics.routes.set(len(self.state.table.routes()))
        log.info("gateway caught up", records=self.replayer.records_seen, routes=len(self.state.table.routes()))

    def healthy(self) -> bool:
        return self.ready.is_set() and self.replayer.failed is None

    async def stop(self) -> None:
        await self.replayer.stop()
