"""The Triton upstream: keep-alive connections to every endpoint, failures mapped to HTTP statuses.

Mapping (never a stack trace to a client): Triton unreachable -> 503, timeout -> 504, a Triton 5xx
-> 502 with its message, a Triton 4xx about the request -> 400 with its message, a Triton 4xx about a
model it does not have -> 502 (the gateway routed to it, so it is an upstream fault, not the caller's).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from gateway.triton_connections import ConnectionPool, ConnectTimeoutError, Endpoint, ProtocolError
from runtime.settings import TritonSettings

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
    """Sends inference requests to the Triton endpoints, round robin, over keep-alive connections.

    ``start`` must run on the serving event loop.
    """

    def __init__(self, settings: TritonSettings, *, connect_timeout_s: float, max_connections: int = 256) -> None:
        self.endpoints = [Endpoint.parse(endpoint) for endpoint in settings.endpoints]
        self._timeout_s = settings.request_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        self._pools: list[ConnectionPool] = []
        self._next: Iterator[ConnectionPool] = iter(())

    @property
    def timeout_s(self) -> float:
        """The deadline of one inference."""
        return self._timeout_s

    def deadline_error(self) -> UpstreamError:
        """What a caller gets once the request timeout passed."""
        return UpstreamError(504, f"Triton did not answer within {self._timeout_s} s", "timeout")

    async def start(self) -> None:
        self._pools = [
            ConnectionPool(endpoint, max_connections=self._max_connections, connect_timeout_s=self._connect_timeout_s)
            for endpoint in self.endpoints
        ]
        self._next = itertools.cycle(self._pools)

    async def infer(
        self, triton_model: str, body: bytes, headers: Mapping[str, str], *, within_s: float | None = None
    ) -> UpstreamResponse:
        """POST ``body`` unchanged to ``/v2/models/<triton_model>/infer``, within the request timeout (or
        ``within_s``, what is left of it for a request that waited)."""
        forwarded = {name: headers[name] for name in _FORWARDED_REQUEST_HEADERS if name in headers}
        try:
            pool = next(self._next)
        except StopIteration:
            raise RuntimeError("TritonUpstream.start() was not awaited") from None
        try:
            async with asyncio.timeout(self._timeout_s if within_s is None else within_s):
                answer = await pool.post(_infer_path(triton_model), body, forwarded)
        except TimeoutError:
            raise self.deadline_error() from None
        except ConnectTimeoutError as error:
            raise UpstreamError(503, f"Triton is unavailable: {error}", "unavailable") from None
        except ProtocolError as error:
            raise UpstreamError(502, f"Triton answered badly: {error}", "bad_gateway") from None
        except OSError as error:  # refused, reset, unreachable (ConnectionError is an OSError)
            reason = error.strerror or str(error) or type(error).__name__
            raise UpstreamError(503, f"Triton is unavailable: {reason}", "unavailable") from None
        except ValueError as error:  # a forwarded header that cannot be sent
            raise UpstreamError(400, str(error), "bad_request") from None
        status, content = answer.status, answer.body
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
        return UpstreamResponse(status, content, answer.headers)

    async def close(self) -> None:
        for pool in self._pools:
            await pool.close()


@functools.lru_cache(maxsize=4096)
def _infer_path(triton_model: str) -> str:
    return f"/v2/models/{quote(triton_model, safe='')}/infer"
