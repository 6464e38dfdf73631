"""The ASGI app under the gateway's inference fast path: the lifespan, the probes, then the documented HTTP API.

FastAPI (the OpenAPI docs, ``/predict``, ``/models``, ``/metrics``, the documented v2 routes) costs more CPU to
import and build than the whole replay of a 1,000-model serving-state log (``fastapi.openapi.models`` alone builds
dozens of pydantic models). None of it is needed to replay the log or to serve inferences (the fast path in front of
this app and the gRPC API), so it is built in a worker thread once the start-up asked for it (``build_after``:
the replay over), while the event loop already serves. A request for it that comes earlier waits for the build; a
failed build answers 500 and is logged. ``/health`` and ``/ready`` are answered here, before and without it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.http_errors import JSON_CONTENT_TYPE, error_json
from runtime.logging import get_logger

log = get_logger(__name__)

ProbeAnswer = tuple[int, dict[str, Any]]
"""A probe's status code and JSON document."""


class GatewayFront:
    """Serves ASGI ``lifespan`` (``lifespan()`` entered at start-up, left at shutdown), answers the ``GET`` probes
    in ``probes`` (path -> answer) from the raw scope, and hands every other request to the app ``build_api`` makes
    (in a worker thread, once ``build_after`` returned)."""

    def __init__(
        self,
        lifespan: Callable[[], AbstractAsyncContextManager[None]],
        probes: Mapping[str, Callable[[], ProbeAnswer]],
        build_api: Callable[[], ASGIApp],
        build_after: Callable[[], Awaitable[None]],
    ) -> None:
        self.lifespan = lifespan
        self.probes = dict(probes)
        self.build_api = build_api
        self.build_after = build_after
        self._api: asyncio.Future[ASGIApp] | None = None
        self._build_task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._serve_lifespan(receive, send)
            return
        probe = self.probes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if probe is not None:
            status, document = probe()
            await _send_json(send, status, json.dumps(document, separators=(",", ":")).encode())  # as JSONResponse
            return
        try:
            api = await self.api()
        except Exception as error:  # the build failed (logged once): no stack trace to a client
            if scope["type"] == "http":
                await _send_json(send, 500, error_json(f"internal error: the HTTP API failed to build ({error})"))
            return
        await api(scope, receive, send)

    async def api(self) -> ASGIApp:
        """The documented HTTP API; waits for its build (started with the lifespan, or now when there was none)."""
        if self._api is None:
            self.start_build()
        assert self._api is not None  # noqa: S101 - set by start_build
        return await asyncio.shield(self._api)

    def start_build(self) -> None:
        """Build the API in a worker thread once ``build_after`` returned (idempotent)."""
        if self._api is None:
            self._api = asyncio.get_running_loop().create_future()
            self._build_task = asyncio.create_task(self._build(self._api), name="build the documented HTTP API")

    async def _build(self, api: asyncio.Future[ASGIApp]) -> None:
        try:
            await self.build_after()
            built = await asyncio.to_thread(self.build_api)
        except asyncio.CancelledError:  # shutting down: whoever waits for the API gets cancelled too
            api.cancel()
            raise
        except Exception as error:
            log.exception("the documented HTTP API failed to build")
            api.set_exception(error)
            api.exception()  # retrieved: requests re-raise it; no "never retrieved" warning
        else:
            api.set_result(built)

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        context = self.lifespan()
        try:
            await context.__aenter__()
        except BaseException as error:
            await send({"type": "lifespan.startup.failed", "message": f"{type(error).__name__}: {error}"})
            raise
        self.start_build()
        await send({"type": "lifespan.startup.complete"})
        message = await receive()  # lifespan.shutdown
        try:
            if self._build_task is not None:
                self._build_task.cancel()  # a build in its thread runs to its end; nobody waits for it
            await context.__aexit__(None, None, None)
        except BaseException as error:
            await send({"type": "lifespan.shutdown.failed", "message": f"{type(error).__name__}: {error}"})
            raise
        await send({"type": "lifespan.shutdown.complete"})


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", JSON_CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
