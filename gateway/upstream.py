"""The Triton upstream: one persistent keep-alive HTTP session for every endpoint, failures mapped to HTTP statuses.

Mapping (never a stack trace to a client): Triton unreachable -> 503, timeout -> 504, a Triton 5xx
-> 502 with its message, a Triton 4xx about the request -> 400 with its message, a Triton 4xx about a
model it does not have -> 502 (the gateway routed to it, so it is an upstream fault, not the caller's).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from promoter.settings import TritonSettings

INFER_HEADER_LENGTH = "inference-header-content-length"
# Triton answers HTTP 500 to some requests it cannot parse; those are the caller's fault, not Triton's.
# Every such message seen names the request's JSON or its parsing.
_CALLER_FAULTS = ("json", "failed to parse", "unable to parse", "unexpected inference input")
# Answers are always asked uncompressed (no Accept-Encoding): the gateway rewrites their JSON header.
_FORWARDED_REQUEST_HEADERS = ("content-type", INFER_HEADER_LENGTH, "content-encoding")


class UpstreamError(Exception):
    """Triton could not answer; ``status`` is what the gateway answers, ``outcome`` a bounded metric label."""

    def __init__(self, status: int, message: str, outcome: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    body: bytes
    headers: dict[str, str]


def _error_text(status: int, body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return body[:2000].decode(errors="replace") or f"HTTP {status}"
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])[:2000]
    return body[:2000].decode(errors="replace")


class TritonUpstream:
    """Sends inference requests to the Triton endpoints, round robin, over one keep-alive aiohttp session.

    aiohttp rather than httpx on this path: about 0.8 ms less per request measured here, which is
    most of the gateway's overhead budget. ``start`` must run on the serving event loop.
    """

    def __init__(self, settings: TritonSettings, *, connect_timeout_s: float, max_connections: int = 256) -> None:
        self.base_urls = [_base_url(endpoint) for endpoint in settings.endpoints]
        self._timeout = aiohttp.ClientTimeout(total=settings.request_timeout_s, connect=connect_timeout_s)
        self._max_connections = max_connections
        self._next = itertools.cycle(self.base_urls)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("TritonUpstream.start() was not awaited")
        return self._session

    async def infer(self, triton_model: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST ``body`` unchanged to ``/v2/models/<triton_model>/infer``."""
        forwarded = {name: headers[name] for name in _FORWARDED_REQUEST_HEADERS if name in headers}
        url = f"{next(self._next)}/v2/models/{triton_model}/infer"
        try:
            async with self.session.post(url, data=body, headers=forwarded) as response:
                status = response.status
                content = await response.read()
                answer_headers = {name.lower(): value for name, value in response.headers.items()}
        except TimeoutError as error:
            raise UpstreamError(504, f"Triton did not answer in time: {type(error).__name__}", "timeout") from None
        except (aiohttp.ClientConnectionError, OSError) as error:
            raise UpstreamError(503, f"Triton is unavailable: {type(error).__name__}", "unavailable") from None
        except aiohttp.ClientError as error:
            raise UpstreamError(502, f"Triton answered badly: {type(error).__name__}", "bad_gateway") from None
        if status >= 500:
            message = _error_text(status, content)
            if any(fault in message.lower() for fault in _CALLER_FAULTS):
                raise UpstreamError(400, message, "bad_request")
            raise UpstreamError(502, f"Triton error: {message}", "triton_error")
        if status >= 400:
            message = _error_text(status, content)
            if "unknown model" in message.lower() or status == 404:
                raise UpstreamError(502, f"Triton does not serve the routed model: {message}", "triton_error")
            raise UpstreamError(400, message, "bad_request")
        return UpstreamResponse(status, content, answer_headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _base_url(endpoint: str) -> str:
    return endpoint if endpoint.startswith(("http://", "https://")) else f"http://{endpoint}"
