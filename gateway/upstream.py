"""The Triton upstream: keep-alive connections to every endpoint, failures mapped to HTTP statuses.

Which endpoint: :class:`gateway.endpoint_rotation.EndpointRotation`. An inference that fails on one
endpoint before Triton ran it (no connection, the connection dropped before any answer byte, HTTP 503,
or Triton answering that it does not have the routed model ready) is sent once more to another endpoint,
within the same deadline; never after Triton may have run it (a timeout, a partial answer, a 4xx about
the caller's input, a 5xx from the model). One exception, bounded: a request sent to an ejected endpoint
as its trial that gets no answer within half its deadline is sent elsewhere with the other half (the
endpoint failed before; a caller must not pay for trying it).

Mapping (never a stack trace to a client): Triton unreachable or 503 -> 503, timeout -> 504, a Triton
5xx -> 502 with its message, a Triton 4xx about the request (or a 5xx naming the caller's data) -> 400
with its message, a Triton 404 or "unknown model" -> 502 (the gateway routed to it, so it is an upstream
fault, not the caller's).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from gateway.endpoint_rotation import ENDPOINT_SCOPE, MODEL_SCOPE, Backoff, Choice, EndpointRotation
from gateway.metrics import GatewayMetrics
from gateway.triton_connections import ConnectionPool, Endpoint, ProtocolError, UnansweredError, UnreachableError
from runtime.settings import TritonSettings

INFER_HEADER_LENGTH = "inference-header-content-length"
# Triton answers HTTP 500 to some requests it cannot parse, and a python-backend model that fails a request
# without an error code (TritonError's default, INTERNAL) gets a 500 too, e.g. scikit-learn's "Input X contains
# NaN." for a caller's NaN row: those are the caller's fault, not Triton's. Every such message seen names the
# request's JSON, its parsing, or values no model accepts.
CALLER_FAULTS = (
    "json",
    "failed to parse",
    "unable to parse",
    "unexpected inference input",
    "contains nan",
    "contains infinity",
)
#: The share of a request's deadline it may spend as the trial of an ejected endpoint (the rest is for the retry).
TRIAL_SHARE = 0.5
# Answers are always asked uncompressed (no Accept-Encoding): the gateway rewrites their JSON header.
_FORWARDED_REQUEST_HEADERS = ("content-type", INFER_HEADER_LENGTH, "content-encoding")


class UpstreamError(Exception):
    """Triton could not answer; ``status`` is what the gateway answers, ``outcome`` a bounded metric label,
    ``retry_reason`` set when it failed before Triton ran the request (another endpoint may answer it)."""

    def __init__(self, status: int, message: str, outcome: str, retry_reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome
        self.retry_reason = retry_reason


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    body: bytes
    headers: dict[str, str]


def _http_error(status: int, body: bytes) -> UpstreamError:
    """What Triton's error answer (``status`` >= 400) means for the caller."""
    message = _error_text(status, body)
    lowered = message.lower()
    if status == 404 or "unknown model" in lowered:  # not loaded there, or no version ready
        return UpstreamError(
            502, f"Triton does not serve the routed model: {message}", "triton_error", retry_reason="unknown_model"
        )
    if status == 503:
        return UpstreamError(503, f"Triton is unavailable: {message}", "unavailable", retry_reason="unavailable")
    if status < 500 or any(fault in lowered for fault in CALLER_FAULTS):
        return UpstreamError(400, message, "bad_request")
    return UpstreamError(502, f"Triton error: {message}", "triton_error")


def _error_text(status: int, body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return body[:2000].decode(errors="replace") or f"HTTP {status}"
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])[:2000]
    return body[:2000].decode(errors="replace")


class TritonUpstream:
    """Sends inference requests to the Triton endpoints over keep-alive connections: round robin over the
    endpoints in rotation, one retry elsewhere for a request that failed before Triton ran it.

    ``start`` must run on the serving event loop.
    """

    def __init__(
        self,
        settings: TritonSettings,
        *,
        connect_timeout_s: float,
        max_connections: int = 256,
        backoff: Backoff | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.endpoints = [Endpoint.parse(endpoint) for endpoint in settings.endpoints]
        self.metrics = metrics or GatewayMetrics()
        self.rotation = EndpointRotation(
            [endpoint.authority for endpoint in self.endpoints], backoff or Backoff(), self.metrics
        )
        self._timeout_s = settings.request_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        self._pools: list[ConnectionPool] = []

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

    async def infer(
        self, triton_model: str, body: bytes, headers: Mapping[str, str], *, within_s: float | None = None
    ) -> UpstreamResponse:
        """POST ``body`` unchanged to ``/v2/models/<triton_model>/infer``, within the request timeout (or
        ``within_s``, what is left of it for a request that waited), once more on another endpoint when the
        first failed before Triton ran it."""
        if not self._pools:
            raise RuntimeError("TritonUpstream.start() was not awaited")
        forwarded = {name: headers[name] for name in _FORWARDED_REQUEST_HEADERS if name in headers}
        path = _infer_path(triton_model)
        rotation = self.rotation
        deadline_s = self._timeout_s if within_s is None else within_s
        try:
            async with asyncio.timeout(deadline_s):
                choice = rotation.choose(triton_model)
                try:
                    if choice.trials and len(self._pools) > 1:
                        return await self._trial(choice, triton_model, path, body, forwarded, deadline_s)
                    return await self._attempt(choice, triton_model, path, body, forwarded)
                except UpstreamError as error:
                    if error.retry_reason is None:
                        raise
                    again = rotation.choose_other(triton_model, choice.index)
                    if again is None:
                        raise
                    self.metrics.upstream_retry(error.retry_reason)
                return await self._attempt(again, triton_model, path, body, forwarded)
        except TimeoutError:
            raise self.deadline_error() from None

    async def _trial(
        self, choice: Choice, triton_model: str, path: str, body: bytes, forwarded: dict[str, str], deadline_s: float
    ) -> UpstreamResponse:
        """A caller's request sent to an ejected endpoint as its trial. It gets only ``TRIAL_SHARE`` of the deadline:
        an endpoint that failed before and now does not answer in time (a Triton busy loading models, half up)
        fails its trial, and the request goes to an endpoint in rotation with the rest of its deadline."""
        budget = asyncio.timeout(deadline_s * TRIAL_SHARE)
        try:
            async with budget:
                return await self._attempt(choice, triton_model, path, body, forwarded)
        except TimeoutError:
            if not budget.expired():
                raise
        scope = ENDPOINT_SCOPE if (choice.index, None) in choice.trials else MODEL_SCOPE
        self.rotation.failed(choice, triton_model, scope=scope, reason="trial_timeout")
        message = f"Triton {self._pools[choice.index].endpoint.authority} did not answer a trial request in time"
        raise UpstreamError(504, message, "timeout", retry_reason="trial_timeout")

    async def _attempt(
        self, choice: Choice, triton_model: str, path: str, body: bytes, forwarded: dict[str, str]
    ) -> UpstreamResponse:
        """One try on ``choice``'s endpoint; what happened is told to the rotation."""
        rotation = self.rotation
        pool = self._pools[choice.index]
        try:
            answer = await pool.post(path, body, forwarded)
        except UnreachableError as error:
            rotation.failed(choice, triton_model, scope=ENDPOINT_SCOPE, reason="unreachable")
            message = f"Triton is unavailable: {pool.endpoint.authority}: {error}"
            raise UpstreamError(503, message, "unavailable", retry_reason="unreachable") from None
        except UnansweredError as error:
            rotation.failed(choice, triton_model, scope=ENDPOINT_SCOPE, reason="reset")
            message = f"Triton is unavailable: {pool.endpoint.authority}: {error}"
            raise UpstreamError(503, message, "unavailable", retry_reason="reset") from None
        except ProtocolError as error:
            rotation.released(choice)
            raise UpstreamError(502, f"Triton answered badly: {error}", "bad_gateway") from None
        except OSError as error:  # reset after part of the answer came: Triton may have run it
            rotation.released(choice)
            reason = error.strerror or str(error) or type(error).__name__
            raise UpstreamError(503, f"Triton is unavailable: {reason}", "unavailable") from None
        except ValueError as error:  # a forwarded header that cannot be sent
            rotation.released(choice)
            raise UpstreamError(400, str(error), "bad_request") from None
        except BaseException:  # the deadline, or the caller went away
            rotation.released(choice)
            raise
        if answer.status < 400:
            rotation.answered(choice, triton_model)
            return UpstreamResponse(answer.status, answer.body, answer.headers)
        refusal = _http_error(answer.status, answer.body)
        if refusal.retry_reason is None:
            rotation.answered(choice, triton_model)
        else:
            rotation.failed(choice, triton_model, scope=MODEL_SCOPE, reason=refusal.retry_reason)
        raise refusal

    async def close(self) -> None:
        for pool in self._pools:
            await pool.close()


@functools.lru_cache(maxsize=4096)
def _infer_path(triton_model: str) -> str:
    return f"/v2/models/{quote(triton_model, safe='')}/infer"
