"""The Triton upstream over gRPC: one long-lived ``grpc.aio`` channel per endpoint, failures mapped like HTTP's.

Which endpoint: an :class:`gateway.endpoint_rotation.EndpointRotation` of its own over the gRPC endpoints
(same ejection and trial rules as the HTTP upstream). An inference that failed before Triton ran it (the
endpoint could not be reached, or Triton answered that it does not have the routed model) is sent once more
to another endpoint within the same deadline; never after Triton may have run it.

Failures are :class:`gateway.upstream.UpstreamError` with the HTTP status they stand for, so both protocols
count them alike; :func:`gateway.grpc_api.status_of` turns them into gRPC status codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc

from gateway.endpoint_rotation import ENDPOINT_SCOPE, MODEL_SCOPE, Backoff, Choice, EndpointRotation
from gateway.kserve_messages import service_pb2_grpc
from gateway.metrics import GatewayMetrics
from gateway.upstream import CALLER_FAULTS, TRIAL_SHARE, UpstreamError

#: Channel options: no message size limit of gRPC's own (the gateway's request limit applies at its server),
#: keepalive pings so a dead Triton is noticed on an idle channel.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)
# Triton's words for "that model is not loaded (or not ready) here": another endpoint may have it.
_NOT_SERVED_HERE = ("unknown model", "not found", "no available versions", "is not ready")
#: The words of a connection that never got through (gRPC's C core; grpc-go, in the native front's copy of this
#: classification: ``gateway/grpc_front_go/upstream.go``, kept equal by ``testdata/upstream_errors.json``).
UNREACHABLE = ("failed to connect", "error while dialing")


def upstream_error(code: grpc.StatusCode, details: str) -> UpstreamError:
    """What Triton's gRPC failure ``code`` means for the caller (``retry_reason``: another endpoint may answer)."""
    message = (details or code.name)[:2000]
    lowered = message.lower()
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return UpstreamError(504, f"Triton did not answer in time: {message}", "timeout")
    if code is grpc.StatusCode.NOT_FOUND or (
        code is grpc.StatusCode.UNAVAILABLE and any(words in lowered for words in _NOT_SERVED_HERE)
    ):
        return UpstreamError(
            502, f"Triton does not serve the routed model: {message}", "triton_error", retry_reason="unknown_model"
        )
    if code is grpc.StatusCode.UNAVAILABLE:
        # Only a connection that never got through is known not to have run the request.
        reason = "unreachable" if any(words in lowered for words in UNREACHABLE) else None
        return UpstreamError(503, f"Triton is unavailable: {message}", "unavailable", retry_reason=reason)
    if code is grpc.StatusCode.INVALID_ARGUMENT or any(fault in lowered for fault in CALLER_FAULTS):
        return UpstreamError(400, message, "bad_request")
    return UpstreamError(502, f"Triton error ({code.name}): {message}", "triton_error")


class TritonGrpcUpstream:
    """Sends ``ModelInferRequest`` messages to Triton's gRPC endpoints; ``start`` must run on the serving loop."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout_s: float,
        backoff: Backoff | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.metrics = metrics or GatewayMetrics()
        self.rotation = EndpointRotation(self.endpoints, backoff or Backoff(), self.metrics)
        self.timeout_s = timeout_s
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[Any] = []

    async def start(self) -> None:
        self._channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for target in self.endpoints]
        self._stubs = [service_pb2_grpc.GRPCInferenceServiceStub(channel) for channel in self._channels]

    async def infer(self, triton_model: str, request: Any, *, within_s: float | None = None) -> Any:
        """``request`` (a ``ModelInferRequest``) sent to ``triton_model`` with only the model name and version
        rewritten, within the request timeout (or ``within_s`` when the caller has less), once more on another
        endpoint when the first failed before Triton ran it. Returns Triton's ``ModelInferResponse``."""
        if not self._stubs:
            raise RuntimeError("TritonGrpcUpstream.start() was not awaited")
        request.model_name = triton_model
        request.model_version = ""
        loop = asyncio.get_running_loop()
        budget_s = self.timeout_s if within_s is None else min(within_s, self.timeout_s)
        deadline = loop.time() + budget_s
        choice = self.rotation.choose(triton_model)
        try:
            if choice.trials and len(self._stubs) > 1:
                return await self._trial(choice, triton_model, request, budget_s)
            return await self._attempt(choice, triton_model, request, budget_s)
        except UpstreamError as error:
            if error.retry_reason is None:
                raise
            again = self.rotation.choose_other(triton_model, choice.index)
            left_s = deadline - loop.time()
            if again is None or left_s <= 0:
                raise
            self.metrics.upstream_retry(error.retry_reason)
        return await self._attempt(again, triton_model, request, left_s)

    async def _trial(self, choice: Choice, triton_model: str, request: Any, budget_s: float) -> Any:
        """A request sent to an ejected endpoint as its trial gets ``TRIAL_SHARE`` of its deadline; when that
        passes the trial failed, and the caller sends it elsewhere with the rest."""
        try:
            return await self._attempt(choice, triton_model, request, budget_s * TRIAL_SHARE)
        except UpstreamError as error:
            if error.outcome != "timeout":
                raise
        scope = ENDPOINT_SCOPE if (choice.index, None) in choice.trials else MODEL_SCOPE
        self.rotation.failed(choice, triton_model, scope=scope, reason="trial_timeout")
        message = f"Triton {self.endpoints[choice.index]} did not answer a trial request in time"
        raise UpstreamError(504, message, "timeout", retry_reason="trial_timeout")

    async def _attempt(self, choice: Choice, triton_model: str, request: Any, timeout_s: float) -> Any:
        """One try on ``choice``'s endpoint; what happened is told to the rotation."""
        rotation = self.rotation
        try:
            response = await self._stubs[choice.index].ModelInfer(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as failure:
            error = upstream_error(failure.code(), failure.details() or "")
            if error.retry_reason == "unknown_model":
                rotation.failed(choice, triton_model, scope=MODEL_SCOPE, reason=error.retry_reason)
            elif error.retry_reason is not None:
                rotation.failed(choice, triton_model, scope=ENDPOINT_SCOPE, reason=error.retry_reason)
            elif error.status in (503, 504):  # no answer: nothing is known about the endpoint
                rotation.released(choice)
            else:
                rotation.answered(choice, triton_model)
            raise error from None
        except BaseException:  # the caller went away
            rotation.released(choice)
            raise
        rotation.answered(choice, triton_model)
        return response

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels = []
        self._stubs = []
