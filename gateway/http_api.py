"""The gateway's documented HTTP API (FastAPI): the OpenAPI docs, ``/predict``, the v2 routes, ``/models``, metrics.

Built off the start-up path, once the replay is over (``gateway.front``): importing and building it costs more
than the replay. ``/health`` and ``/ready`` are answered in front of it (the same answers; listed here for the docs),
and ``POST /v2/models/{name}/infer`` normally by the fast path (``gateway.v2_api.InferFastPath``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from gateway.front import ProbeAnswer
from gateway.inference import InferenceService
from gateway.metrics import GatewayMetrics
from gateway.online_features import FeatureMetrics, OnlineFeatures
from gateway.predict_api import build_predict_router
from gateway.routing_table import RoutingState
from gateway.settings import GatewaySettings
from gateway.v2_routes import build_v2_router
from runtime.http_errors import answer_errors_in_one_shape
from runtime.metrics import METRICS_CONTENT_TYPE, render


def build_http_api(
    settings: GatewaySettings,
    service: InferenceService,
    online_features: OnlineFeatures | None,
    metrics: GatewayMetrics,
    is_ready: Callable[[], bool],
    probes: dict[str, Callable[[], ProbeAnswer]],
    *,
    refresh_metrics: Callable[[], Awaitable[None]],
) -> FastAPI:
    app = FastAPI(
        title="model-promoter gateway",
        version="1",
        description=(
            "Serves predictions from the model versions announced on model.ready, through Triton. "
            "Every inference answer names the version and alias that made it (X-Model-Version, X-Model-Alias)."
        ),
        max_body_size=settings.max_request_bytes,
    )

    answer_errors_in_one_shape(app)

    app.include_router(build_v2_router(service, is_ready))
    app.include_router(build_predict_router(service, online_features))

    _add_operation_routes(app, settings, service.state, is_ready, metrics, probes, refresh_metrics)
    return app


def online_features_of(settings: GatewaySettings, metrics: GatewayMetrics) -> OnlineFeatures | None:
    """The Feast lookup of /predict, when a feature server is configured (README "Feast online features")."""
    if not settings.feast_server_url:
        return None
    return OnlineFeatures(
        settings.feast_server_url, settings.feast_models, settings.feast_timeout_s, FeatureMetrics(metrics.registry)
    )


def models_view(state: RoutingState, default_alias: str) -> dict[str, Any]:
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


def _add_operation_routes(
    app: FastAPI,
    settings: GatewaySettings,
    state: RoutingState,
    is_ready: Callable[[], bool],
    metrics: GatewayMetrics,
    probes: dict[str, Callable[[], ProbeAnswer]],
    refresh_metrics: Callable[[], Awaitable[None]],
) -> None:
    """``/health``, ``/ready`` (answered by ``gateway.front``; here for the docs), ``/models`` and ``/metrics``."""

    @app.get("/health", tags=["Operations"], summary="Liveness: the process answers")
    async def health() -> JSONResponse:
        status, document = probes["/health"]()
        return JSONResponse(document, status_code=status)

    @app.get("/ready", tags=["Operations"], summary="Readiness: the serving-state log is replayed")
    async def ready() -> JSONResponse:
        status, document = probes["/ready"]()
        return JSONResponse(document, status_code=status)

    @app.get("/models", tags=["Operations"], summary="What this replica serves")
    async def models() -> dict[str, Any]:
        return {
            "gateway_id": settings.gateway_id,
            "ready": is_ready(),
            **models_view(state, settings.default_alias),
        }

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        await refresh_metrics()  # the native gRPC front's counts, merged into the gRPC series
        return Response(render(metrics.registry), media_type=METRICS_CONTENT_TYPE)
