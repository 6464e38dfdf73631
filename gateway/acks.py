"""Swap acks and heartbeats on ``gateway.status`` (key = gateway id), so the worker retires old
versions only when no live gateway routes to them, and operators see "3/3 gateways on v7"."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from gateway.routing_table import Change, Route, RoutingState
from runtime.logging import get_logger
from runtime.settings import KafkaSettings
from schemas.envelope import KAFKA_HEADERS
from schemas.gateway_status import (
    GatewayHeartbeat,
    GatewayHeartbeatData,
    GatewaySwapAcked,
    GatewaySwapAckedData,
    ServedRoute,
)

log = get_logger(__name__)


def served_route(route: Route) -> ServedRoute:
    return ServedRoute(
        model_name=route.model_name,
        alias=route.alias,
        version=route.version,
        triton_model_name=route.triton_model_name,
        generation=route.generation,
    )


class StatusPublisher:
    def __init__(self, kafka: KafkaSettings, topic: str, gateway_id: str, interval_s: float) -> None:
        self._kafka = kafka
        self._producer: AIOKafkaProducer | None = None
        self.topic = topic
        self.gateway_id = gateway_id
        self.interval_s = interval_s
        self.source = f"/model-promoter/gateway/{gateway_id}"
        self.started_at = datetime.now(UTC)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(**self._kafka.producer_kwargs())  # needs the running loop
        await producer.start()
        self._producer = producer

    async def _send(self, value: bytes) -> None:
        if self._producer is None:
            raise RuntimeError("status publisher not started")
        # Enqueued, not awaited to the broker: an ack never holds up the log follower.
        future = await self._producer.send(
            self.topic,
            value=value,
            key=self.gateway_id.encode(),
            headers=KAFKA_HEADERS,
        )
        future.add_done_callback(_log_failure)

    async def ack(self, change: Change) -> None:
        if change.route is None:
            return
        data = GatewaySwapAckedData(
            gateway_id=self.gateway_id, route=served_route(change.route), previous_version=change.previous_version
        )
        await self._send(GatewaySwapAcked(source=self.source, data=data).to_json_bytes())

    async def heartbeat(self, state: RoutingState, ready: bool) -> None:
        data = GatewayHeartbeatData(
            gateway_id=self.gateway_id,
            ready=ready,
            started_at=self.started_at,
            interval_s=self.interval_s,
            routes=[served_route(route) for route in state.table.routes()],
        )
        await self._send(GatewayHeartbeat(source=self.source, data=data).to_json_bytes())

    def start_heartbeats(self, state: RoutingState, ready: asyncio.Event) -> None:
        async def beat() -> None:
            while True:
                try:
                    await self.heartbeat(state, ready.is_set())
                except Exception as error:  # the broker may be away for a while: keep beating
                    log.warning("heartbeat not sent", error=str(error))
                await asyncio.sleep(self.interval_s)  # the heartbeat period itself, not a wait for a condition

        self._task = asyncio.create_task(beat(), name="gateway heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()


def _log_failure(future: asyncio.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("gateway status not delivered", error=str(future.exception()))
