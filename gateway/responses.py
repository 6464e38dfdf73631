"""Response helpers shared by the APIs: error bodies, which version answered, v2 body rewriting."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse, Response

from gateway.routing_table import Route
from gateway.upstream import INFER_HEADER_LENGTH, UpstreamResponse

VERSION_RESPONSE_HEADER = "X-Model-Version"
ALIAS_RESPONSE_HEADER = "X-Model-Alias"


def route_headers(route: Route) -> dict[str, str]:
    return {VERSION_RESPONSE_HEADER: str(route.version), ALIAS_RESPONSE_HEADER: route.alias}


def error_response(status: int, message: str, route: Route | None = None) -> JSONResponse:
    """``{"error": message}``: the Open Inference Protocol's error shape (tritonclient reads it)."""
    return JSONResponse({"error": message}, status_code=status, headers=route_headers(route) if route else None)


def v2_infer_response(upstream: UpstreamResponse, route: Route) -> Response:
    """Triton's answer with the registered model name, its MLflow version and the alias in the JSON header.

    A binary-tensor answer keeps its tensor bytes; only its JSON header part is rewritten (and its
    ``Inference-Header-Content-Length`` updated).
    """
    headers = route_headers(route)
    header_length = upstream.headers.get(INFER_HEADER_LENGTH)
    split = int(header_length) if header_length and header_length.isdigit() else len(upstream.body)
    head, tensors = upstream.body[:split], upstream.body[split:]
    try:
        document: Any = json.loads(head)
    except ValueError:
        document = None
    if isinstance(document, dict):
        document["model_name"] = route.model_name
        document["model_version"] = str(route.version)
        parameters = document.get("parameters")
        document["parameters"] = {
            **(parameters if isinstance(parameters, dict) else {}),
            "alias": route.alias,
            "triton_model_name": route.triton_model_name,
        }
        head = json.dumps(document, separators=(",", ":")).encode()
    if header_length:
        headers[INFER_HEADER_LENGTH] = str(len(head))
    media_type = upstream.headers.get("content-type", "application/json")
    return Response(head + tensors, status_code=upstream.status, headers=headers, media_type=media_type)


#: The failures every inference endpoint can answer, for the OpenAPI document.
UPSTREAM_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Triton refused the request (its message)."},
    404: {"description": "Unknown model, or the pinned alias/version is not served."},
    502: {"description": "Triton failed (its message)."},
    503: {"description": "Known model but no alias served, or Triton unreachable."},
    504: {"description": "Triton did not answer in time."},
}
