"""Follow ``model.ready`` and ``routing.updated`` from offset 0: rebuild the routing table, then keep it current.

Records come in fetched batches, each applied as one new snapshot of the routing table (one copy of
the model index per batch, not per record). Before the replay caught up, events only build the
table (no acks, no per-event logs: a 10,000 event log must replay in well under two seconds).
Afterwards every applied change is acked on ``gateway.status``, counted, and logged.
"""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord

from gateway.acks import StatusPublisher
from gateway.metrics import GatewayMetrics
from gateway.routing_table import Change, RoutingState
from runtime.logging import get_logger
from runtime.settings import KafkaSettings
from runtime.topic_replay import TopicReplayer
from schemas.catalog import InvalidEventError, parse_any_event
from schemas.model_ready import ModelReady, ServingStopped
from schemas.prepared_version import ModelPrepared
from schemas.routing_updated import RoutingUpdated
from schemas.topics import MODEL_READY, ROUTING_UPDATED

log = get_logger(__name__)

_LOG_EVENTS = MODEL_READY.event_types + ROUTING_UPDATED.event_types


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
        self.replayer = TopicReplayer(kafka, topics, batch_handler=self.apply_batch)
        self.ready = asyncio.Event()

    async def apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one record (see :meth:`apply_batch`)."""
        await self.apply_batch([record])

    async def apply_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply one fetched batch of records as one new routing snapshot; once caught up, ack, count and log
        each change."""
        self.metrics.log_records.inc(len(records))
        events: list[ModelReady | ServingStopped | RoutingUpdated] = []
        for record in records:
            try:
                event = parse_any_event(record.value or b"", _LOG_EVENTS)
            except InvalidEventError as error:
                log.warning("unreadable record on the serving-state log", topic=record.topic, error=error.message)
                continue
            if isinstance(event, ModelPrepared):
                continue  # loaded for the workers, routed by no alias: never a route
            assert isinstance(event, ModelReady | ServingStopped | RoutingUpdated)  # noqa: S101 - narrowed by allowed
            events.append(event)
        changes = self.state.apply_all([event.data for event in events])
        following = self.ready.is_set()
        for event, change in zip(events, changes, strict=True):
            if change is None:
                self.metrics.stale_events.inc()
                if following:
                    log.info("stale event ignored", model=event.data.model_name, generation=event.data.generation)
            elif following:
                await self._announce(change, event.data.generation)

    async def _announce(self, change: Change, generation: int) -> None:
        self.metrics.swaps.labels(change.model_name, change.kind).inc()
        self.metrics.routes.set(self.state.table.route_count)
        log.info(
            "routing changed",
            kind=change.kind,
            model=change.model_name,
            alias=change.alias,
            version=change.route.version if change.route else None,
            previous_version=change.previous_version,
            generation=generation,
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
        self.metrics.routes.set(self.state.table.route_count)
        log.info("gateway caught up", records=self.replayer.records_seen, routes=self.state.table.route_count)

    def healthy(self) -> bool:
        return self.ready.is_set() and self.replayer.failed is None

    async def stop(self) -> None:
        await self.replayer.stop()
