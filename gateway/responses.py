"""Response helpers shared by the APIs: error bodies, which version answered, v2 body rewriting."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import Send

from gateway.routing_table import Route
from gateway.upstream import INFER_HEADER_LENGTH, UpstreamResponse
from runtime.http_errors import JSON_CONTENT_TYPE, error_json

if TYPE_CHECKING:
    from starlette.responses import Response

VERSION_RESPONSE_HEADER = "X-Model-Version"
ALIAS_RESPONSE_HEADER = "X-Model-Alias"
JSON = JSON_CONTENT_TYPE


def route_headers(route: Route) -> dict[str, str]:
    return {VERSION_RESPONSE_HEADER: str(route.version), ALIAS_RESPONSE_HEADER: route.alias}


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer as plain data: a Starlette ``Response`` for the routes, raw ASGI messages for the fast path."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # content-type included

    def response(self) -> Response:
        # Imported here: only the documented HTTP API (built after the replay) asks for a Response; starlette's
        # responses import its request parsing (anyio, multipart), which the fast paths never need.
        from starlette.responses import Response  # noqa: PLC0415

        return Response(self.body, status_code=self.status, headers=self.headers)

    async def send(self, send: Send) -> None:
        headers = [(b"content-length", str(len(self.body)).encode())]
        headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def error_answer(status: int, message: str, route: Route | None = None) -> Answer:
    """``{"error": message}``: the Open Inference Protocol's error shape (tritonclient reads it)."""
    headers = {"content-type": JSON, **(route_headers(route) if route else {})}
    return Answer(status, error_json(message), headers)


def error_response(status: int, message: str, route: Route | None = None) -> Response:
    return error_answer(status, message, route).response()


def v2_infer_answer(upstream: UpstreamResponse, route: Route) -> Answer:
    """Triton's answer with the registered model name, its MLflow version and the alias in the JSON header.

    A binary-tensor answer keeps its tensor bytes; only its JSON header part is rewritten (and its
    ``Inference-Header-Content-Length`` updated).
    """
    headers = {"content-type": upstream.headers.get("content-type", JSON), **route_headers(route)}
    header_length = upstream.headers.get(INFER_HEADER_LENGTH)
    split = int(header_length) if header_length and header_length.isdigit() else len(upstream.body)
    head, tensors = upstream.body[:split], upstream.body[split:]
    head = _spliced_head(head, route) or _rewritten_head(head, route)
    if header_length:
        headers[INFER_HEADER_LENGTH] = str(len(head))
    return Answer(upstream.status, head + tensors, headers)


def _who_answered(model_name: str, version: int, alias: str, triton_model_name: str) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "model_version": str(version),
        "parameters": {"alias": alias, "triton_model_name": triton_model_name},
    }


def _spliced_head(head: bytes, route: Route) -> bytes | None:
    """The common case without parsing the outputs: Triton wrote ``{"model_name":"<triton model>",
    "model_version":"<n>",`` first and no parameters of its own, so only that prefix is replaced.
    None when the answer looks any different (then it is parsed and rewritten whole)."""
    prefix, replacement = _splice_parts(route.model_name, route.version, route.alias, route.triton_model_name)
    end = head.find(b'",', len(prefix)) if head.startswith(prefix) else -1
    if end < 0 or not head[len(prefix) : end].isdigit() or b'"parameters"' in head:
        return None
    return replacement + head[end + 2 :]


@functools.lru_cache(maxsize=4096)
def _splice_parts(model_name: str, version: int, alias: str, triton_model_name: str) -> tuple[bytes, bytes]:
    """What Triton's answer starts with for this route, and what replaces it (an open JSON object)."""
    who = _who_answered(model_name, version, alias, triton_model_name)
    prefix = b'{"model_name":"%s","model_version":"' % triton_model_name.encode()
    return prefix, json.dumps(who, separators=(",", ":")).encode()[:-1] + b","


def _rewritten_head(head: bytes, route: Route) -> bytes:
    try:
        document: Any = json.loads(head)
    except ValueError:
        return head
    if not isinstance(document, dict):
        return head
    who = _who_answered(route.model_name, route.version, route.alias, route.triton_model_name)
    parameters = document.get("parameters")
    who["parameters"] = {**(parameters if isinstance(parameters, dict) else {}), **who["parameters"]}
    return json.dumps({**document, **who}, separators=(",", ":")).encode()


#: The failures every inference endpoint can answer, for the OpenAPI document.
UPSTREAM_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Triton refused the request (its message)."},
    404: {"description": "Unknown model, or the pinned alias/version is not served."},
    502: {"description": "Triton failed (its message)."},
    503: {"description": "Known model but no alias served, or Triton unreachable."},
    504: {"description": "Triton did not answer in time."},
}
