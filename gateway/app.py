"""A gateway replica's ASGI app, served by uvicorn (``promoter-gateway``, started by ``gateway.start``).

Start-up: connect the status producer, start replaying ``model.ready`` + ``routing.updated`` in the
background (``gateway.replica``: ``/health`` answers at once, ``/ready`` only once the replay caught up),
heartbeat on ``gateway.status``, open the gRPC API (``gateway.grpc_api``); the documented HTTP API
(FastAPI, ``gateway.http_api``) is built once the replay is over (``gateway.front``). The replica never
asks MLflow or Triton what to serve: the log is the only source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.types import ASGIApp

from gateway.endpoint_rotation import Backoff
from gateway.front import GatewayFront, ProbeAnswer
from gateway.grpc_api import GatewayServicer
from gateway.grpc_front import GrpcFront
from gateway.inference import InferenceService
from gateway.log_follower import LogFollower
from gateway.replica import GatewayReplica
from gateway.routing_table import RoutingState
from gateway.settings import GatewayConfig, GatewaySettings
from gateway.triton_grpc import TritonGrpcUpstream
from gateway.upstream import TritonUpstream
from gateway.v2_api import InferFastPath
from runtime.logging import get_logger

if TYPE_CHECKING:
    from gateway.online_features import OnlineFeatures

__all__ = ["GatewayConfig", "build_app"]

log = get_logger(__name__)


def build_app(config: GatewayConfig | None = None, replica: GatewayReplica | None = None) -> ASGIApp:
    """The gateway's ASGI app: the inference fast path in front of the lifespan, the probes and the documented HTTP
    API. ``replica``: its replay side, when already started (``gateway.start``)."""
    config = config or GatewayConfig.from_env()
    settings = config.gateway
    replica = replica or GatewayReplica(config)
    metrics, state, follower = replica.metrics, replica.state, replica.follower
    upstream = TritonUpstream(
        config.triton,
        connect_timeout_s=settings.triton_connect_timeout_s,
        backoff=Backoff(settings.ejection_backoff_initial_s, settings.ejection_backoff_max_s),
        metrics=metrics,
    )
    grpc_upstream = TritonGrpcUpstream(
        settings.triton_grpc_targets(config.triton.endpoints),
        timeout_s=config.triton.request_timeout_s,
        backoff=Backoff(settings.ejection_backoff_initial_s, settings.ejection_backoff_max_s),
        metrics=metrics,
    )
    service = InferenceService(settings, state, upstream, metrics, grpc_upstream)
    online_features: list[OnlineFeatures] = []  # the Feast lookup of /predict, made with the HTTP API
    grpc_server = GrpcFront(
        settings,
        GatewayServicer(service, follower.healthy),
        state,
        grpc_upstream.rotation,
        metrics,
        timeout_s=config.triton.request_timeout_s,
    )

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await replica.started()
        await upstream.start()
        await grpc_upstream.start()
        replica.start_heartbeats()
        await grpc_server.start()
        log.info("gateway started", gateway_id=settings.gateway_id, port=settings.port, grpc_port=grpc_server.port)
        try:
            yield
        finally:
            await grpc_server.stop()
            await replica.stop_following()
            await service.close()
            for features in online_features:
                await features.close()
            await replica.stop_status()
            await upstream.close()
            await grpc_upstream.close()

    probes = _probes(settings, state, follower)

    def build_api() -> ASGIApp:
        from gateway.http_api import build_http_api, online_features_of  # noqa: PLC0415 - off the start-up path

        features = online_features_of(settings, metrics)
        online_features.extend([features] if features else [])
        return build_http_api(
            settings, service, features, metrics, follower.healthy, probes, refresh_metrics=grpc_server.refresh_metrics
        )

    front = GatewayFront(lifespan, probes, build_api, build_after=replica.replay_over)
    return InferFastPath(front, service, max_body_bytes=settings.max_request_bytes)


def _probes(
    settings: GatewaySettings, state: RoutingState, follower: LogFollower
) -> dict[str, Callable[[], ProbeAnswer]]:
    """``GET /health`` (liveness: the process answers) and ``GET /ready`` (the serving-state log is replayed)."""

    def health() -> ProbeAnswer:
        return 200, {"status": "ok", "gateway_id": settings.gateway_id}

    def ready() -> ProbeAnswer:
        if follower.healthy():
            return 200, {"ready": True, "routes": state.table.route_count}
        return 503, {"ready": False, "reason": "replaying the serving-state log"}

    return {"/health": health, "/ready": ready}
