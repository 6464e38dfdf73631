"""Merging concurrent small gRPC inferences (``ModelInferRequest`` with raw tensors) for one Triton model.

The same lanes as the HTTP side (:class:`gateway.request_merging.MergingLanes`: nothing waits while a slot
is free, no timer, a refused merged inference is sent again request by request); this module says what a
gRPC request is made of. Why it pays more than over HTTP: besides Triton's cost per request, the gateway's
own gRPC call to Triton costs about as much CPU as answering its caller, and a merged inference makes one
call for many callers.

What merges: a request whose every input is a fixed-size tensor (not BYTES) sent as ``raw_input_contents``
(what ``tritonclient.grpc`` sends), all with the same rows in the first dimension, fewer than the model's
``max_batch_size``, with no ``parameters`` (request or tensor), no requested ``outputs`` and no ``contents``.
The merged request concatenates each input's bytes in order; Triton's answer is cut back by rows: each caller
gets ``model_name``, ``model_version``, its own ``id`` and every output with its rows, as Triton answers its
request alone. Anything else goes up on its own, unchanged; an answer that is not every output as raw bytes
with the merged rows first (parameters, ``contents``, another shape) is not cut: the requests are sent again
one by one.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from gateway.kserve_messages import service_pb2
from gateway.metrics import GatewayMetrics
from gateway.request_merging import MergingLanes
from gateway.triton_grpc import TritonGrpcUpstream

#: Bytes per element of the fixed-size datatypes of the Open Inference Protocol (BYTES has no fixed size).
ELEMENT_BYTES = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "BF16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
}

GrpcLayout = tuple[tuple[str, str, tuple[int, ...]], ...]  # per input: name, datatype, shape after the batch dim


@dataclass(frozen=True, slots=True)
class MergeableGrpcRequest:
    """A ``ModelInferRequest`` that can share an inference with others of the same ``layout``."""

    layout: GrpcLayout
    rows: int
    request_id: str
    contents: tuple[bytes, ...]  # per input, its raw bytes


def mergeable_grpc_request(request: Any, max_rows: int) -> MergeableGrpcRequest | None:
    """``request`` (a ``ModelInferRequest``) parsed for merging, or None when it must go up on its own."""
    inputs, raw = request.inputs, request.raw_input_contents
    if not inputs or len(raw) != len(inputs) or request.outputs or request.parameters:
        return None
    layout: list[tuple[str, str, tuple[int, ...]]] = []
    rows: set[int] = set()
    for tensor, content in zip(inputs, raw, strict=True):
        size = ELEMENT_BYTES.get(tensor.datatype)
        shape = tuple(tensor.shape)
        if size is None or not shape or tensor.parameters or tensor.HasField("contents"):
            return None
        if min(shape) < 0 or not 0 < shape[0] < max_rows or len(content) != math.prod(shape) * size:
            return None
        layout.append((tensor.name, tensor.datatype, shape[1:]))
        rows.add(shape[0])
    if len(rows) != 1:
        return None
    return MergeableGrpcRequest(tuple(layout), rows.pop(), request.id, tuple(raw))


def merged_grpc_request(requests: list[MergeableGrpcRequest]) -> Any:
    """One ``ModelInferRequest`` carrying every row of ``requests`` (same layout), in order (no model name:
    the upstream sets it)."""
    total = sum(request.rows for request in requests)
    merged = service_pb2.ModelInferRequest()
    for index, (name, datatype, tail) in enumerate(requests[0].layout):
        merged.inputs.add(name=name, datatype=datatype, shape=(total, *tail))
        merged.raw_input_contents.append(b"".join(request.contents[index] for request in requests))
    return merged


def split_grpc_response(response: Any, requests: list[MergeableGrpcRequest]) -> list[Any] | None:
    """Triton's answer to :func:`merged_grpc_request` cut into the answer each request would have had alone;
    None when it is not every output as raw bytes with the merged rows first."""
    outputs, raw = response.outputs, response.raw_output_contents
    if response.parameters or len(raw) != len(outputs) or not outputs:
        return None
    total = sum(request.rows for request in requests)
    cuts: list[tuple[str, str, tuple[int, ...], bytes, int]] = []  # name, datatype, tail, bytes, bytes per row
    for tensor, content in zip(outputs, raw, strict=True):
        size = ELEMENT_BYTES.get(tensor.datatype)
        shape = tuple(tensor.shape)
        if size is None or not shape or shape[0] != total or tensor.parameters or tensor.HasField("contents"):
            return None
        row_bytes = math.prod(shape[1:]) * size
        if len(content) != total * row_bytes:
            return None
        cuts.append((tensor.name, tensor.datatype, shape[1:], content, row_bytes))
    answers: list[Any] = []
    start = 0
    for request in requests:
        answer = service_pb2.ModelInferResponse(
            model_name=response.model_name, model_version=response.model_version, id=request.request_id
        )
        for name, datatype, tail, content, row_bytes in cuts:
            answer.outputs.add(name=name, datatype=datatype, shape=(request.rows, *tail))
            answer.raw_output_contents.append(content[start * row_bytes : (start + request.rows) * row_bytes])
        answers.append(answer)
        start += request.rows
    return answers


class GrpcRequestMerger(MergingLanes[Any, Any, MergeableGrpcRequest]):
    """Sends ``ModelInferRequest`` messages through ``upstream``, merging waiting ones as the module doc says."""

    def __init__(self, upstream: TritonGrpcUpstream, limit: int, metrics: GatewayMetrics) -> None:
        super().__init__(limit, metrics, upstream.timeout_s)
        self.upstream = upstream

    async def infer(
        self, triton_model: str, request: Any, *, max_batch_size: int | None, label: str, within_s: float | None
    ) -> Any:
        """Triton's ``ModelInferResponse`` to ``request`` (``within_s``: the caller's deadline, if any)."""
        return await self._infer(triton_model, request, max_batch_size=max_batch_size, label=label, within_s=within_s)

    def _parse(self, request: Any, max_rows: int) -> MergeableGrpcRequest | None:
        return mergeable_grpc_request(request, max_rows)

    def _joined(self, parts: list[MergeableGrpcRequest]) -> Any:
        return merged_grpc_request(parts)

    def _cut(self, response: Any, parts: list[MergeableGrpcRequest]) -> list[Any] | None:
        return split_grpc_response(response, parts)

    def _send(self, triton_model: str, request: Any, within_s: float | None) -> Awaitable[Any]:
        return self.upstream.infer(triton_model, request, within_s=within_s)
