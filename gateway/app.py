"""A gateway replica: FastAPI app served by uvicorn (``promoter-gateway``).

Start-up: connect the status producer, start replaying ``model.ready`` + ``routing.updated`` in the
background (``/health`` answers at once, ``/ready`` only once the replay caught up), heartbeat on
``gateway.status``, open the gRPC API (``gateway.grpc_api``). The replica never asks MLflow or Triton what
to serve: the log is the only source.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp

from gateway.acks import StatusPublisher
from gateway.endpoint_rotation import Backoff
from gateway.grpc_api import GatewayServicer
from gateway.grpc_front import GrpcFront
from gateway.inference import InferenceService
from gateway.log_follower import LogFollower
from gateway.metrics import GatewayMetrics
from gateway.online_features import FeatureMetrics, OnlineFeatures, close_online_features
from gateway.predict_api import build_predict_router
from gateway.routing_table import RoutingState
from gateway.settings import GatewaySettings
from gateway.triton_grpc import TritonGrpcUpstream
from gateway.upstream import TritonUpstream
from gateway.v2_api import InferFastPath, build_v2_router
from runtime.http_errors import answer_errors_in_one_shape
from runtime.kafka_access import require_kafka_access
from runtime.kafka_topics import ensure_service_topics
from runtime.logging import configure_logging, get_logger
from runtime.metrics import METRICS_CONTENT_TYPE, render
from runtime.service_help import parse_service_args, settings_classes_of
from runtime.settings import KafkaSettings, LogSettings, TopicSettings, TritonSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    """Every setting a gateway replica reads, loaded once from the environment."""

    kafka: KafkaSettings
    topics: TopicSettings
    triton: TritonSettings
    gateway: GatewaySettings

    @classmethod
    def from_env(cls) -> GatewayConfig:
        return cls(KafkaSettings(), TopicSettings(), TritonSettings(), GatewaySettings())


def _models_view(state: RoutingState, default_alias: str) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name, model in sorted(state.table.models.items()):
        policy = model.policy
        models[name] = {
            "default_alias": default_alias,
            "aliases": {
                alias: {
                    "version": route.version,
                    "triton_model_name": route.triton_model_name,
                    "mlflow_run_id": route.ready.mlflow_run_id,
                    "generation": route.generation,
                    "since": datetime.fromtimestamp(route.since, UTC).isoformat(),
                    "features": [column.name for column in route.ready.signature.columns],
                }
                for alias, route in sorted(model.routes.items())
            },
            "weights": dict(policy.weights) if policy else None,
            "shadow_alias": policy.shadow_alias if policy else None,
            "shadow_sample_percent": policy.shadow_sample_percent if policy else 0.0,
        }
    return {"models": models}


def build_app(config: GatewayConfig | None = None) -> ASGIApp:
    """The gateway's ASGI app: the inference fast path in front of the FastAPI app (lifespan, docs, the rest)."""
    config = config or GatewayConfig.from_env()
    settings = config.gateway
    metrics = GatewayMetrics()
    state = RoutingState()
    upstream = TritonUpstream(
        config.triton,
        connect_timeout_s=settings.triton_connect_timeout_s,
        backoff=Backoff(settings.ejection_backoff_initial_s, settings.ejection_backoff_max_s),
        metrics=metrics,
    )
    status = StatusPublisher(
        config.kafka, config.topics.gateway_status, settings.gateway_id, settings.heartbeat_interval_s
    )
    follower = LogFollower(
        config.kafka, [config.topics.model_ready, config.topics.routing_updated], state, metrics, status
    )
    grpc_upstream = TritonGrpcUpstream(
        settings.triton_grpc_targets(config.triton.endpoints),
        timeout_s=config.triton.request_timeout_s,
        backoff=Backoff(settings.ejection_backoff_initial_s, settings.ejection_backoff_max_s),
        metrics=metrics,
    )
    service = InferenceService(settings, state, upstream, metrics, grpc_upstream)
    online_features = _online_features(settings, metrics)
    grpc_server = GrpcFront(
        settings,
        GatewayServicer(service, follower.healthy),
        state,
        grpc_upstream.rotation,
        metrics,
        timeout_s=config.triton.request_timeout_s,
    )
    background: list[asyncio.Task[None]] = []

    async def start_following() -> None:
        try:
            await follower.start(settings.replay_timeout_s)
        except Exception:
            log.exception("replay of the serving-state log failed")
            raise
        await status.heartbeat(state, ready=True)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        topics = config.topics
        await require_kafka_access(config.kafka)  # refused credentials or TLS: exit now, saying which
        await ensure_service_topics(
            config.kafka, topics, {topics.model_ready, topics.routing_updated, topics.gateway_status}
        )
        await upstream.start()
        await grpc_upstream.start()
        await status.start()
        background.append(asyncio.create_task(start_following(), name="follow the serving-state log"))
        status.start_heartbeats(state, follower.ready)
        await grpc_server.start()
        log.info("gateway started", gateway_id=settings.gateway_id, port=settings.port, grpc_port=grpc_server.port)
        try:
            yield
        finally:
            await grpc_server.stop()
            for task in background:
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task
            await follower.stop()
            await service.close()
            await close_online_features(online_features)
            await status.stop()
            await upstream.close()
            await grpc_upstream.close()

    app = FastAPI(
        title="model-promoter gateway",
        version="1",
        description=(
            "Serves predictions from the model versions announced on model.ready, through Triton. "
            "Every inference answer names the version and alias that made it (X-Model-Version, X-Model-Alias)."
        ),
        lifespan=lifespan,
        max_body_size=settings.max_request_bytes,
    )

    answer_errors_in_one_shape(app)

    app.include_router(build_v2_router(service, follower.healthy))
    app.include_router(build_predict_router(service, online_features))

    _add_operation_routes(app, settings, state, follower, metrics, grpc_server)

    return InferFastPath(app, service, max_body_bytes=settings.max_request_bytes)


def _online_features(settings: GatewaySettings, metrics: GatewayMetrics) -> OnlineFeatures | None:
    """The Feast lookup of /predict, when a feature server is configured (README "Feast online features")."""
    if not settings.feast_server_url:
        return None
    return OnlineFeatures(
        settings.feast_server_url, settings.feast_models, settings.feast_timeout_s, FeatureMetrics(metrics.registry)
    )


def _add_operation_routes(
    app: FastAPI,
    settings: GatewaySettings,
    state: RoutingState,
    follower: LogFollower,
    metrics: GatewayMetrics,
    grpc_front: GrpcFront,
) -> None:
    """``/health``, ``/ready``, ``/models`` and ``/metrics``."""

    @app.get("/health", tags=["Operations"], summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok", "gateway_id": settings.gateway_id}

    @app.get("/ready", tags=["Operations"], summary="Readiness: the serving-state log is replayed")
    async def ready() -> JSONResponse:
        if follower.healthy():
            return JSONResponse({"ready": True, "routes": state.table.route_count})
        return JSONResponse({"ready": False, "reason": "replaying the serving-state log"}, status_code=503)

    @app.get("/models", tags=["Operations"], summary="What this replica serves")
    async def models() -> dict[str, Any]:
        return {
            "gateway_id": settings.gateway_id,
            "ready": follower.healthy(),
            **_models_view(state, settings.default_alias),
        }

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        await grpc_front.refresh_metrics()  # the native gRPC front's counts, merged into the gRPC series
        return Response(render(metrics.registry), media_type=METRICS_CONTENT_TYPE)


def main(argv: Sequence[str] | None = None) -> None:
    parse_service_args(
        "promoter-gateway",
        "A model-promoter gateway replica: serves predictions (HTTP /predict and the Open Inference Protocol, "
        "HTTP and gRPC) from the model versions announced on model.ready, through Triton.",
        [*settings_classes_of(GatewayConfig), LogSettings],
        argv,
    )
    import uvicorn  # noqa: PLC0415

    configure_logging("gateway", LogSettings())
    config = GatewayConfig.from_env()
    uvicorn.run(
        build_app(config),
        host=config.gateway.host,
        port=config.gateway.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
