"""The Open Inference Protocol (KServe v2) in front of Triton, by registered model name.

``tritonclient.http`` and KServe clients work against the gateway unchanged: the gateway maps
the registered model name (and an optional alias or MLflow version pin) to the Triton model of the
routed version and proxies the request body as is (JSON or binary tensors).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.inference import InferenceService
from gateway.responses import (
    UPSTREAM_ERROR_RESPONSES,
    Answer,
    error_answer,
    error_response,
    route_headers,
    v2_infer_answer,
)
from gateway.routing_policy import RouteError
from gateway.routing_table import ModelRoutes
from gateway.upstream import UpstreamError
from runtime.logging import get_logger

log = get_logger(__name__)

API = "v2"

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

SERVER_NAME = "model-promoter-gateway"
SERVER_VERSION = "1"
ModelName = Path(..., description="Registered (MLflow) model name.")
MAX_ALIAS_LENGTH = 255
AliasPin = Query(None, description="Pin an alias (also the X-Model-Alias header).", max_length=MAX_ALIAS_LENGTH)


def metadata_document(model: ModelRoutes, version: int | None) -> dict[str, Any]:
    routes = list(model.routes.values())
    chosen = next((r for r in routes if r.version == version), None) if version else None
    source = chosen or (routes[0] if routes else None)
    signature = source.ready.signature if source is not None else None
    document: dict[str, Any] = {
        "name": model.name,
        "versions": sorted({str(r.version) for r in routes}, key=int),
        "platform": SERVER_NAME,
    }
    if signature is not None:
        document["inputs"] = [
            {"name": t.name, "datatype": t.datatype, "shape": [-1, *t.shape]} for t in signature.inputs
        ]
        document["outputs"] = [
            {"name": t.name, "datatype": t.datatype, "shape": [-1, *t.shape]} for t in signature.outputs
        ]
    return document


async def infer_answer(
    service: InferenceService,
    name: str,
    headers: Mapping[str, str],
    body: bytes,
    alias: str | None,
    version: int | None,
) -> Answer:
    """One v2 inference: route once, proxy the body as is, say who answered."""
    try:
        decision = service.decide(name, headers, alias=alias, version=version)
    except RouteError as error:
        service.count_route_error(name, error, API)
        return error_answer(error.status, error.message)
    try:
        upstream = await service.infer(decision, body, headers, API)
    except UpstreamError as error:
        return error_answer(error.status, error.message, decision.route)
    return v2_infer_answer(upstream, decision.route)


_INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")


class InferFastPath:
    """The outermost ASGI app: serves ``POST /v2/models/{name}[/versions/{v}]/infer`` from the raw scope, ahead of
    FastAPI's middleware and parameter machinery (the hot path), and hands everything else to the app.

    Same answers as the documented FastAPI routes, which serve the OpenAPI schema and unusual requests.
    """

    def __init__(self, app: ASGIApp, service: InferenceService, *, max_body_bytes: int) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _INFER_PATH.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive, self.max_body_bytes)
        if isinstance(body, Answer):
            await body.send(send)
        elif body is not None:  # None: the client went away
            await (await self._answer(scope, match, body)).send(send)

    async def _answer(self, scope: Scope, match: re.Match[str], body: bytes) -> Answer:
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"))) if scope["query_string"] else {}
        alias = query.get("alias") or None
        raw_version = match["version"] or query.get("version")
        if raw_version is not None and not (raw_version.isdigit() and int(raw_version) >= 1):
            return error_answer(422, f"version: must be an integer of at least 1, got {raw_version[:50]!r}")
        if alias is not None and len(alias) > MAX_ALIAS_LENGTH:
            return error_answer(422, f"alias: at most {MAX_ALIAS_LENGTH} characters")
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        version = int(raw_version) if raw_version is not None else None
        try:
            return await infer_answer(self.service, match["name"], headers, body, alias, version)
        except Exception as error:  # never a stack trace to a client
            log.exception("unexpected error answering an inference")
            return error_answer(500, f"internal error: {type(error).__name__}")


async def read_body(receive: Receive, limit: int) -> bytes | Answer | None:
    """The whole request body; a 413 answer past ``limit`` bytes; None when the client disconnected."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return error_answer(413, f"body: larger than the gateway's limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
