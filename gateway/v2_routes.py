"""The documented FastAPI routes of the Open Inference Protocol (KServe v2): health, metadata, readiness, inference.

Part of the HTTP API built after the start-up (``gateway.front``); ``POST .../infer`` is normally answered by the
fast path in front of it (``gateway.v2_api.InferFastPath``), with the same answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway.inference import InferenceService
from gateway.responses import UPSTREAM_ERROR_RESPONSES, error_response, route_headers
from gateway.routing_policy import RouteError
from gateway.routing_table import ModelRoutes
from gateway.v2_api import MAX_ALIAS_LENGTH, SERVER_NAME, SERVER_VERSION, infer_answer, metadata_document

_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "examples": ["FP64"]},
        "data": {"type": "array", "items": {}},
        "parameters": {"type": "object"},
    },
}
INFER_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A v2 inference request (JSON, or JSON header + binary tensors).",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "items": _TENSOR_SCHEMA, "minItems": 1},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                        "parameters": {"type": "object"},
                    },
                }
            }
        },
    }
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Triton's answer; model_version and parameters.alias say who answered."},
    422: {"description": "Invalid alias or version parameter."},
    **UPSTREAM_ERROR_RESPONSES,
}

ModelName = Path(..., description="Registered (MLflow) model name.")
AliasPin = Query(None, description="Pin an alias (also the X-Model-Alias header).", max_length=MAX_ALIAS_LENGTH)


def build_v2_router(service: InferenceService, is_ready: Callable[[], bool]) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

    @router.get("/health/live", summary="Server liveness")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready", summary="Server readiness: the serving-state log is replayed")
    async def ready() -> JSONResponse:
        ok = is_ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @router.get("", summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": []}

    def _model(name: str) -> ModelRoutes | Response:
        model = service.state.table.model(name)
        if model is None:
            return error_response(404, f"model {name!r} is not served by this gateway")
        return model

    @router.get("/models/{name}", summary="Model metadata (from the served signature)", responses=INFER_RESPONSES)
    async def model_metadata(name: str = ModelName) -> Response:
        model = _model(name)
        if isinstance(model, Response):
            return model
        return JSONResponse(metadata_document(model, None))

    @router.get("/models/{name}/versions/{version}", summary="Model version metadata", responses=INFER_RESPONSES)
    async def version_metadata(name: str = ModelName, version: int = Path(..., ge=1)) -> Response:
        model = _model(name)
        if isinstance(model, Response):
            return model
        if model.by_version(version) is None:
            return error_response(404, f"version {version} of model {name!r} is not served")
        return JSONResponse(metadata_document(model, version))

    async def _ready(request: Request, name: str, alias: str | None, version: int | None) -> Response:
        try:
            decision = service.decide(name, request.headers, alias=alias, version=version)
        except RouteError as error:
            return error_response(error.status, error.message)
        return JSONResponse({"ready": True}, headers=route_headers(decision.route))

    @router.get("/models/{name}/ready", summary="Model readiness", responses=INFER_RESPONSES)
    async def model_ready(request: Request, name: str = ModelName, alias: str | None = AliasPin) -> Response:
        return await _ready(request, name, alias, None)

    @router.get("/models/{name}/versions/{version}/ready", summary="Model version readiness", responses=INFER_RESPONSES)
    async def version_ready(request: Request, name: str = ModelName, version: int = Path(..., ge=1)) -> Response:
        return await _ready(request, name, None, version)

    async def _infer(request: Request, name: str, alias: str | None, version: int | None) -> Response:
        answer = await infer_answer(service, name, request.headers, await request.body(), alias, version)
        return answer.response()

    @router.post(
        "/models/{name}/infer",
        summary="Inference through the routed version",
        openapi_extra=INFER_REQUEST_BODY,
        responses=INFER_RESPONSES,
    )
    async def infer(
        request: Request,
        name: str = ModelName,
        alias: str | None = AliasPin,
        version: int | None = Query(None, ge=1, description="Pin an MLflow version."),
    ) -> Response:
        return await _infer(request, name, alias, version)

    @router.post(
        "/models/{name}/versions/{version}/infer",
        summary="Inference pinned to one MLflow version",
        openapi_extra=INFER_REQUEST_BODY,
        responses=INFER_RESPONSES,
    )
    async def infer_version(request: Request, name: str = ModelName, version: int = Path(..., ge=1)) -> Response:
        return await _infer(request, name, None, version)

    return router
