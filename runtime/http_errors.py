"""One error body for every HTTP service: ``{"error": "<what went wrong, for people>"}``.

It is the Open Inference Protocol's error shape (tritonclient reads it from the gateway); the
ingress and the worker's probes answer the same, so a client or a probe reads one key everywhere.
:func:`answer_errors_in_one_shape` makes FastAPI's own answers (unknown path, wrong method,
invalid request, an unexpected error: logged, answered without a trace) take it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runtime.logging import get_logger
from schemas.field_problems import describe, field_problems

if TYPE_CHECKING:  # FastAPI is imported by the apps that use it, not by every user of the error shape
    from fastapi import FastAPI, Request
    from starlette.responses import JSONResponse

log = get_logger(__name__)

JSON_CONTENT_TYPE = "application/json"
MAX_MESSAGE_CHARS = 2000


def error_body(message: str) -> dict[str, str]:
    return {"error": message}


def error_json(message: str) -> bytes:
    """The error body as bytes, for the ASGI fast paths that build their answers by hand."""
    return json.dumps(error_body(message)).encode()


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    # Imported here: the ASGI fast paths use error_json alone, and starlette's responses import its request
    # parsing (anyio, multipart): a twentieth of a new gateway's imports before /ready.
    from starlette.responses import JSONResponse  # noqa: PLC0415

    return JSONResponse(error_body(message), status_code=status, headers=headers)


def invalid_fields(errors: Sequence[Mapping[str, Any]]) -> str:
    """``body.alias: Field required; query.n: ...``: every invalid field and what is wrong with it."""
    return describe(field_problems(errors, root="request"))[:MAX_MESSAGE_CHARS]


def answer_errors_in_one_shape(app: FastAPI) -> None:
    """FastAPI's own answers (404 unknown path, 405 wrong method, 422 invalid request, 500) as ``{"error": ...}``."""
    from fastapi.exceptions import RequestValidationError  # noqa: PLC0415 - see the imports
    from starlette.exceptions import HTTPException  # noqa: PLC0415 - see error_response

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, invalid_fields(error.errors()))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error answering a request")
        return error_response(500, f"internal error: {type(error).__name__}")
