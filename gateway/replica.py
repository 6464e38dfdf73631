"""The replay side of a gateway replica: the routing state, the status publisher and the follower of the serving-state
log, startable before anything that serves is imported.

A new replica's readiness is mostly start-up work, and the replay's share of it waits on the network (connections,
metadata, fetches): ``gateway.start`` starts this first, and imports and builds the serving side (HTTP, gRPC, the
Triton clients) meanwhile. Its imports are the Kafka client, the event schemas and the metrics, nothing else.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from gateway.acks import StatusPublisher
from gateway.log_follower import LogFollower
from gateway.metrics import GatewayMetrics
from gateway.routing_table import RoutingState
from gateway.settings import GatewayConfig
from runtime.kafka_access import require_kafka_access
from runtime.kafka_topics import ensure_service_topics
from runtime.logging import get_logger

log = get_logger(__name__)


class GatewayReplica:
    """Connects to Kafka (exits at once on refused credentials or TLS), makes sure its topics exist, starts the
    status publisher, then replays ``model.ready`` + ``routing.updated`` in the background and follows them."""

    def __init__(self, config: GatewayConfig) -> None:
        settings = config.gateway
        self.config = config
        self.metrics = GatewayMetrics()
        self.state = RoutingState()
        self.status = StatusPublisher(
            config.kafka, config.topics.gateway_status, settings.gateway_id, settings.heartbeat_interval_s
        )
        self.follower = LogFollower(
            config.kafka,
            [config.topics.model_ready, config.topics.routing_updated],
            self.state,
            self.metrics,
            self.status,
        )
        self._connected: asyncio.Task[None] | None = None
        self._replay: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Connect and start the replay in the background (once)."""
        if self._connected is None:
            self._connected = asyncio.create_task(self._connect(), name="connect the gateway to Kafka")

    async def started(self) -> None:
        """Starts if not started yet; returns once connected and replaying (raises what the connection raised)."""
        self.start()
        assert self._connected is not None  # noqa: S101 - set by start
        await asyncio.shield(self._connected)

    async def _connect(self) -> None:
        config = self.config
        topics = config.topics
        await require_kafka_access(config.kafka)  # refused credentials or TLS: exit now, saying which
        await ensure_service_topics(
            config.kafka, topics, {topics.model_ready, topics.routing_updated, topics.gateway_status}
        )
        await self.status.start()
        self._replay = asyncio.create_task(self._follow(), name="follow the serving-state log")
        log.info("replaying the serving-state log", topics=[topics.model_ready, topics.routing_updated])

    async def _follow(self) -> None:
        try:
            await self.follower.start(self.config.gateway.replay_timeout_s)
        except Exception:
            log.exception("replay of the serving-state log failed")
            raise
        await self.status.heartbeat(self.state, ready=True)

    async def replay_over(self) -> None:
        """Returns once the replay caught up or failed (or the start failed)."""
        with suppress(Exception):
            await self.started()
        if self._replay is not None:
            await asyncio.wait([self._replay])

    def start_heartbeats(self) -> None:
        self.status.start_heartbeats(self.state, self.follower.ready)

    async def stop_following(self) -> None:
        for task in (self._connected, self._replay):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task
        await self.follower.stop()

    async def stop_status(self) -> None:
        await self.status.stop()

    async def stop(self) -> None:
        await self.stop_following()
        await self.stop_status()
