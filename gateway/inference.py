"""One inference through the gateway: resolve the route once, call Triton, count it, copy to the shadow.

Small inferences for a busy Triton model share a Triton inference (``request_merging`` for HTTP JSON,
``grpc_merging`` for gRPC raw tensors).

The shadow copy runs as its own task after the caller's request was sent upstream: its response and
errors are only counted (``gateway_shadow_requests_total``), never awaited by the caller, and copies
beyond ``shadow_max_in_flight`` are dropped rather than queued.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from prometheus_client import Counter, Histogram

from gateway.grpc_merging import GrpcRequestMerger
from gateway.metrics import GRPC, HTTP, UNKNOWN_MODEL, GatewayMetrics
from gateway.request_merging import RequestMerger
from gateway.routing_policy import Decision, RouteError, resolve
from gateway.routing_table import Route, RoutingState
from gateway.settings import GatewaySettings
from gateway.triton_grpc import TritonGrpcUpstream
from gateway.upstream import TritonUpstream, UpstreamError, UpstreamResponse
from runtime.logging import get_logger

log = get_logger(__name__)

ALIAS_HEADER = "x-model-alias"
_MAX_CACHED_SERIES = 10_000


class InferenceService:
    def __init__(
        self,
        settings: GatewaySettings,
        state: RoutingState,
        upstream: TritonUpstream,
        metrics: GatewayMetrics,
        grpc_upstream: TritonGrpcUpstream | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.upstream = upstream
        self.grpc_upstream = grpc_upstream
        self.metrics = metrics
        per_endpoint = settings.merge_in_flight_per_endpoint
        self.merger = RequestMerger(upstream, per_endpoint * len(upstream.endpoints), metrics)
        self.grpc_merger = (
            GrpcRequestMerger(grpc_upstream, per_endpoint * len(grpc_upstream.endpoints), metrics)
            if grpc_upstream is not None
            else None
        )
        self._client_header = settings.client_id_header.lower()
        self._shadows: set[asyncio.Task[None]] = set()
        self._answered: dict[tuple[str, str, int, str, str], tuple[Counter, Histogram]] = {}

    def decide(
        self,
        model_name: str,
        headers: Mapping[str, str],
        *,
        alias: str | None = None,
        version: int | None = None,
    ) -> Decision:
        """The route of one request from the current snapshot (resolved once, kept to the end)."""
        return resolve(
            self.state.table,
            model_name,
            default_alias=self.settings.default_alias,
            client_id=headers.get(self._client_header),
            alias=alias or headers.get(ALIAS_HEADER) or None,
            version=version,
        )

    def model_label(self, model_name: str) -> str:
        return model_name if self.state.table.model(model_name) is not None else UNKNOWN_MODEL

    def count_route_error(self, model_name: str, error: RouteError, api: str, protocol: str = HTTP) -> None:
        model = self.model_label(model_name)
        self.metrics.requests.labels(model, "", "", api, protocol, str(error.status)).inc()
        self.metrics.errors.labels(model, "", "", "not_served").inc()

    def _count_upstream_error(self, route: Route, error: UpstreamError, api: str, protocol: str) -> None:
        version = str(route.version)
        self.metrics.requests.labels(route.model_name, route.alias, version, api, protocol, str(error.status)).inc()
        self.metrics.errors.labels(route.model_name, route.alias, version, error.outcome).inc()
        log.warning(
            "upstream failure", model=route.model_name, alias=route.alias, protocol=protocol, error=error.message
        )

    def _answered_series(self, route: Route, api: str, protocol: str = HTTP) -> tuple[Counter, Histogram]:
        """The request counter (code 200) and latency histogram of ``route``, looked up once per route, API and
        protocol."""
        key = (route.model_name, route.alias, route.version, api, protocol)
        series = self._answered.get(key)
        if series is None:
            if len(self._answered) > _MAX_CACHED_SERIES:
                self._answered.clear()
            series = self._answered[key] = (
                self.metrics.requests.labels(route.model_name, route.alias, str(route.version), api, protocol, "200"),
                self.metrics.latency.labels(route.model_name, api, protocol),
            )
        return series

    async def infer(self, decision: Decision, body: bytes, headers: Mapping[str, str], api: str) -> UpstreamResponse:
        (response,) = await self.infer_parts(decision, (body,), headers, api)
        return response

    async def infer_parts(
        self, decision: Decision, bodies: Sequence[bytes], headers: Mapping[str, str], api: str
    ) -> list[UpstreamResponse]:
        """One caller request sent upstream as one inference per body, concurrently (a request larger than the
        model's max_batch_size is split); counted once, failed as a whole if any part fails."""
        route = decision.route
        answered, latency = self._answered_series(route, api)
        began = time.perf_counter()
        try:
            if len(bodies) == 1:
                responses = [await self._infer_one(route, bodies[0], headers)]
            else:
                responses = await asyncio.gather(*(self._infer_one(route, body, headers) for body in bodies))
        except UpstreamError as error:
            self._count_upstream_error(route, error, api, HTTP)
            raise
        finally:
            latency.observe(time.perf_counter() - began)
            shadow = decision.shadow
            if shadow is not None:
                for body in bodies:
                    self._copy_to_shadow(shadow, functools.partial(self._http_shadow, shadow, body, dict(headers)))
        answered.inc()
        return list(responses)

    async def infer_grpc(self, decision: Decision, request: Any, api: str, *, within_s: float | None = None) -> Any:
        """One gRPC ``ModelInferRequest`` sent to the routed Triton model over gRPC (``within_s``: the caller's
        deadline, when it has one); counted like an HTTP inference, copied to the shadow alike."""
        if self.grpc_upstream is None or self.grpc_merger is None:
            raise RuntimeError("InferenceService has no gRPC upstream")
        upstream = self.grpc_upstream
        route = decision.route
        answered, latency = self._answered_series(route, api, GRPC)
        shadow = decision.shadow
        shadow_request = None
        if shadow is not None:  # copied before the upstream rewrites the model name
            shadow_request = type(request)()
            shadow_request.CopyFrom(request)
        began = time.perf_counter()
        try:
            response = await self.grpc_merger.infer(
                route.triton_model_name,
                request,
                max_batch_size=route.ready.max_batch_size,
                label=route.model_name,
                within_s=within_s,
            )
        except UpstreamError as error:
            self._count_upstream_error(route, error, api, GRPC)
            raise
        finally:
            latency.observe(time.perf_counter() - began)
            if shadow is not None:
                self._copy_to_shadow(
                    shadow, functools.partial(upstream.infer, shadow.triton_model_name, shadow_request)
                )
        answered.inc()
        return response

    def _infer_one(self, route: Route, body: bytes, headers: Mapping[str, str]) -> Awaitable[UpstreamResponse]:
        return self.merger.infer(
            route.triton_model_name, body, headers, max_batch_size=route.ready.max_batch_size, label=route.model_name
        )

    def _http_shadow(self, shadow: Route, body: bytes, headers: dict[str, str]) -> Awaitable[object]:
        return self.upstream.infer(shadow.triton_model_name, body, headers)

    def _copy_to_shadow(self, shadow: Route, send: Callable[[], Awaitable[object]]) -> None:
        """Run ``send`` (the copy of the caller's request to ``shadow``) as its own task, only counted."""
        if len(self._shadows) >= self.settings.shadow_max_in_flight:
            self.metrics.shadow_outcome(shadow.model_name, "dropped")
            return
        task = asyncio.create_task(self._shadow(shadow, send))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(self, shadow: Route, send: Callable[[], Awaitable[object]]) -> None:
        try:
            await send()
        except UpstreamError as error:
            outcome = error.outcome if error.outcome in ("timeout", "unavailable") else "error"
            self.metrics.shadow_outcome(shadow.model_name, outcome)
        except Exception:  # a shadow must never hurt anything: count it and move on
            self.metrics.shadow_outcome(shadow.model_name, "error")
        else:
            self.metrics.shadow_outcome(shadow.model_name, "ok")

    async def close(self) -> None:
        await self.merger.close()
        if self.grpc_merger is not None:
            await self.grpc_merger.close()
        for task in list(self._shadows):
            task.cancel()
        await asyncio.gather(*self._shadows, return_exceptions=True)
