"""The Open Inference Protocol (KServe v2) in front of Triton, by registered model name.

``tritonclient.http`` and KServe clients work against the gateway unchanged: the gateway maps
the registered model name (and an optional alias or MLflow version pin) to the Triton model of the
routed version and proxies the request body as is (JSON or binary tensors). This module is the inference fast path
(and what the gRPC API shares with it); the documented FastAPI routes of the same API are ``gateway.v2_routes``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.inference import InferenceService
from gateway.responses import Answer, error_answer, v2_infer_answer
from gateway.routing_policy import RouteError
from gateway.routing_table import ModelRoutes
from gateway.upstream import UpstreamError
from runtime.logging import get_logger

log = get_logger(__name__)

API = "v2"

SERVER_NAME = "model-promoter-gateway"
SERVER_VERSION = "1"
MAX_ALIAS_LENGTH = 255


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
