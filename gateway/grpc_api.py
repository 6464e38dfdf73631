"""The gateway's gRPC API: ``inference.GRPCInferenceService`` (Open Inference Protocol v2, as Triton serves it).

Same decisions as the HTTP API, from the same routing snapshot (:meth:`InferenceService.decide`): the
client id and an alias pin come from the request metadata (the HTTP header names, lower-cased), a version
pin from ``model_version``. An inference is proxied to Triton's gRPC with only the model name and version
rewritten; the answer names the registered model and its MLflow version, and its trailing metadata says
``x-model-version`` and ``x-model-alias``.

Failures are gRPC status codes (:func:`status_code`), never a stack trace. RPCs that do not belong to a
gateway (model control, shared memory, statistics, ...) answer ``UNIMPLEMENTED`` saying what to use instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from gateway.inference import ALIAS_HEADER, InferenceService
from gateway.kserve_messages import service_pb2, service_pb2_grpc
from gateway.metrics import GRPC
from gateway.responses import ALIAS_RESPONSE_HEADER, VERSION_RESPONSE_HEADER
from gateway.routing_policy import Decision, RouteError
from gateway.routing_table import ModelRoutes, Route
from gateway.upstream import UpstreamError
from gateway.v2_api import API, SERVER_NAME, SERVER_VERSION, metadata_document
from runtime.logging import get_logger

log = get_logger(__name__)

SERVICE = "inference.GRPCInferenceService"
_BY_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(error: RouteError | UpstreamError) -> grpc.StatusCode:
    """The gRPC status of a failure the HTTP API answers with ``error.status``.

    Unknown model (or pinned alias/version): NOT_FOUND; nothing servable or Triton unavailable, including
    Triton not having the routed model on any endpoint: UNAVAILABLE; the caller's input refused by Triton:
    INVALID_ARGUMENT; no answer in time: DEADLINE_EXCEEDED; a failure of the model itself: INTERNAL.
    """
    if isinstance(error, UpstreamError) and error.retry_reason == "unknown_model":
        return grpc.StatusCode.UNAVAILABLE
    return _BY_HTTP_STATUS.get(error.status, grpc.StatusCode.INTERNAL)


class Failure(Exception):
    """An answer that is a gRPC status (raised inside a handler, turned into ``context.abort`` outside it)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _pinned_version(model_version: str) -> int | None:
    if not model_version:
        return None
    if not (model_version.isdigit() and int(model_version) >= 1):
        raise Failure(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"model_version: must be an MLflow version (an integer of at least 1) or empty, got {model_version[:50]!r}",
        )
    return int(model_version)


def _metadata_of(context: Any) -> dict[str, str]:
    """The request's text metadata as lower-case keys (gRPC already lower-cases them)."""
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def _route_trailers(route: Route) -> tuple[tuple[str, str], ...]:
    return ((VERSION_RESPONSE_HEADER.lower(), str(route.version)), (ALIAS_RESPONSE_HEADER.lower(), route.alias))


def _unimplemented(message: str) -> Callable[[Any, Any], Awaitable[None]]:
    async def answer(_: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    return answer


_MODEL_CONTROL = (
    "model control goes through the promoter: use `promoter promote` (the gateway serves what it announced)"
)
_SHARED_MEMORY = "shared memory cannot cross the gateway: send the tensors in the request (raw_input_contents)"
_TRITON_ADMIN = "this is Triton's own administration: ask Triton directly, not the gateway"


class GatewayServicer:
    """The RPC handlers; registered with ``add_GRPCInferenceServiceServicer_to_server``."""

    def __init__(self, service: InferenceService, is_ready: Callable[[], bool]) -> None:
        self.service = service
        self.is_ready = is_ready

    async def ServerLive(self, _: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, _: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.is_ready())

    async def ServerMetadata(self, _: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    async def ModelReady(self, request: Any, context: Any) -> Any:
        """Ready when a request for it would be routed now (like Triton: not ready rather than an error)."""
        try:
            decision = self._decide(request.name, request.version, context)
        except (Failure, RouteError):
            return service_pb2.ModelReadyResponse(ready=False)
        context.set_trailing_metadata(_route_trailers(decision.route))
        return service_pb2.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            model, version = self._served(request.name, request.version)
        except Failure as failure:
            await context.abort(failure.code, failure.message)
        document = metadata_document(model, version)
        return service_pb2.ModelMetadataResponse(
            name=document["name"],
            versions=document["versions"],
            platform=document["platform"],
            inputs=[service_pb2.ModelMetadataResponse.TensorMetadata(**t) for t in document.get("inputs", [])],
            outputs=[service_pb2.ModelMetadataResponse.TensorMetadata(**t) for t in document.get("outputs", [])],
        )

    def _served(self, name: str, model_version: str) -> tuple[ModelRoutes, int | None]:
        """The model and pinned version a metadata request asks about; NOT_FOUND when not served."""
        version = _pinned_version(model_version)
        model = self.service.state.table.model(name)
        if model is None:
            raise Failure(grpc.StatusCode.NOT_FOUND, f"model {name!r} is not served by this gateway")
        if version is not None and model.by_version(version) is None:
            raise Failure(grpc.StatusCode.NOT_FOUND, f"version {version} of model {name!r} is not served")
        return model, version

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        name = request.model_name
        try:
            response, route = await self._infer(request, context)
        except Failure as failure:
            await context.abort(failure.code, failure.message)
        except Exception as error:  # never a stack trace to a client
            log.exception("unexpected error answering a gRPC inference", model=name)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")
        context.set_trailing_metadata(_route_trailers(route))
        return response

    async def _infer(self, request: Any, context: Any) -> tuple[Any, Route]:
        service = self.service
        name = request.model_name
        try:
            decision = self._decide(name, request.model_version, context)
        except RouteError as error:
            service.count_route_error(name, error, API, GRPC)
            raise Failure(status_code(error), error.message) from None
        route = decision.route
        remaining_s = context.time_remaining()
        if remaining_s is not None and remaining_s <= 0:
            raise Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "the caller's deadline passed before the request was sent")
        try:
            response = await service.infer_grpc(decision, request, API, within_s=remaining_s)
        except UpstreamError as error:
            context.set_trailing_metadata(_route_trailers(route))
            raise Failure(status_code(error), error.message) from None
        response.model_name = route.model_name
        response.model_version = str(route.version)
        response.parameters["alias"].string_param = route.alias
        response.parameters["triton_model_name"].string_param = route.triton_model_name
        return response, route

    def _decide(self, name: str, model_version: str, context: Any) -> Decision:
        metadata = _metadata_of(context)
        version = _pinned_version(model_version)
        return self.service.decide(name, metadata, alias=metadata.get(ALIAS_HEADER) or None, version=version)

    ModelStreamInfer = staticmethod(_unimplemented("streaming inference is not proxied by the gateway: use ModelInfer"))
    ModelConfig = staticmethod(
        _unimplemented("the gateway does not expose Triton's model configuration: use ModelMetadata")
    )
    ModelStatistics = staticmethod(
        _unimplemented("statistics: scrape the gateway's /metrics (Prometheus) on its HTTP port")
    )
    RepositoryIndex = staticmethod(
        _unimplemented("what the gateway serves: GET /models on its HTTP port, or `promoter status`")
    )
    RepositoryModelLoad = staticmethod(_unimplemented(_MODEL_CONTROL))
    RepositoryModelUnload = staticmethod(_unimplemented(_MODEL_CONTROL))
    SystemSharedMemoryStatus = staticmethod(_unimplemented(_SHARED_MEMORY))
    SystemSharedMemoryRegister = staticmethod(_unimplemented(_SHARED_MEMORY))
    SystemSharedMemoryUnregister = staticmethod(_unimplemented(_SHARED_MEMORY))
    CudaSharedMemoryStatus = staticmethod(_unimplemented(_SHARED_MEMORY))
    CudaSharedMemoryRegister = staticmethod(_unimplemented(_SHARED_MEMORY))
    CudaSharedMemoryUnregister = staticmethod(_unimplemented(_SHARED_MEMORY))
    TraceSetting = staticmethod(_unimplemented(_TRITON_ADMIN))
    LogSettings = staticmethod(_unimplemented(_TRITON_ADMIN))


class GrpcServer:
    """The ``grpc.aio`` server of one replica, started and stopped with the app's lifespan."""

    def __init__(self, servicer: GatewayServicer, *, host: str, port: int, max_message_bytes: int) -> None:
        self.servicer = servicer
        self.address = f"{host}:{port}"
        self.max_message_bytes = max_message_bytes
        self._server: Any = None
        self.port = port

    async def start(self) -> None:
        server = grpc.aio.server(
            options=(
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
            )
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port(self.address)
        await server.start()
        self._server = server
        log.info("gRPC API started", address=self.address, service=SERVICE)

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
