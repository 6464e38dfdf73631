"""gRPC request merging: waiting ``ModelInferRequest`` messages for a busy Triton model share one inference, and
every caller gets exactly the response its request gets alone, or its own error. Against an in-memory Triton
gRPC upstream that answers per row."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from gateway.grpc_merging import (
    GrpcRequestMerger,
    mergeable_grpc_request,
    merged_grpc_request,
    split_grpc_response,
)
from gateway.metrics import GatewayMetrics
from gateway.triton_grpc import TritonGrpcUpstream
from gateway.upstream import UpstreamError
from tests.unit.gateway.test_request_merging import metric
from tests.worker_harness import wait_for

MODEL = "m--v1"


def grpc_request(rows: list[list[float]], request_id: str = "", datatype: str = "FP64") -> Any:
    request = service_pb2.ModelInferRequest(model_name="m", id=request_id)
    array = np.asarray(rows, dtype=np.float64 if datatype == "FP64" else np.float32)
    request.inputs.add(name="input", datatype=datatype, shape=array.shape)
    request.raw_input_contents.append(array.tobytes())
    return request


def triton_response(triton_model: str, request: Any) -> Any:
    """What the in-memory Triton answers: per row, the sum of its features (FP64, shape [rows, 1]) and that
    sum's class mod 3 (INT64, shape [rows]); NaN is refused like a model refusing a value."""
    tensor = request.inputs[0]
    dtype = np.float64 if tensor.datatype == "FP64" else np.float32
    rows = np.frombuffer(request.raw_input_contents[0], dtype=dtype).reshape(tuple(tensor.shape))
    if np.isnan(rows).any():
        raise UpstreamError(400, "the model refused the input: NaN", "bad_request")
    sums = rows.sum(axis=1, dtype=np.float64)
    response = service_pb2.ModelInferResponse(model_name=triton_model, model_version="1", id=request.id)
    response.outputs.add(name="sum", datatype="FP64", shape=(len(sums), 1))
    response.raw_output_contents.append(sums.tobytes())
    response.outputs.add(name="label", datatype="INT64", shape=(len(sums),))
    response.raw_output_contents.append((sums.astype(np.int64) % 3).tobytes())
    return response


class InMemoryTritonGrpc(TritonGrpcUpstream):
    """Answers with :func:`triton_response` once ``gate`` is open; records every request sent up."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        super().__init__(["127.0.0.1:9"], timeout_s=timeout_s)
        self.requests: list[Any] = []
        self.deadlines: list[float] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failure: UpstreamError | None = None

    async def infer(self, triton_model: str, request: Any, *, within_s: float | None = None) -> Any:
        self.requests.append(request)
        self.deadlines.append(self.timeout_s if within_s is None else within_s)
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return triton_response(triton_model, request)

    def rows_sent(self) -> list[int]:
        return [request.inputs[0].shape[0] for request in self.requests]


class BusyModel(NamedTuple):
    triton: InMemoryTritonGrpc
    merger: GrpcRequestMerger
    metrics: GatewayMetrics
    first: asyncio.Task[Any]


def infer(merger: GrpcRequestMerger, request: Any, within_s: float | None = None) -> asyncio.Task[Any]:
    return asyncio.create_task(merger.infer(MODEL, request, max_batch_size=64, label="m", within_s=within_s))


async def busy_model(timeout_s: float = 5.0) -> BusyModel:
    """A merger whose model has one inference in flight, held until ``triton.gate`` opens."""
    triton = InMemoryTritonGrpc(timeout_s)
    metrics = GatewayMetrics()
    merger = GrpcRequestMerger(triton, 1, metrics)
    triton.gate.clear()
    first = infer(merger, grpc_request([[1, 1, 1, 1]]))
    await wait_for(lambda: len(triton.requests) == 1, timeout_s=2, what="the first request went up at once, alone")
    return BusyModel(triton, merger, metrics, first)


def alone(request: Any) -> Any:
    return triton_response(MODEL, request)


async def test_requests_waiting_for_a_busy_model_share_one_inference_and_each_gets_its_own_response() -> None:
    triton, merger, metrics, first = await busy_model()
    requests = [
        grpc_request([[2, 0, 0, 0]], request_id="a"),
        grpc_request([[3, 0, 0, 0], [4, 0, 0, 1]]),
        grpc_request([[5, 5, 0, 0]], request_id="c"),
    ]
    waiting = [infer(merger, request) for request in requests]
    await wait_for(lambda: merger.waiting(MODEL) == 3, timeout_s=2, what="the others wait for the one in flight")
    triton.gate.set()
    responses = await asyncio.gather(first, *waiting)
    assert triton.rows_sent() == [1, 4]  # the first alone, then the three waiting ones (four rows) as one
    for request, response in zip(requests, responses[1:], strict=True):
        assert response == alone(request)
    assert metric(metrics, "gateway_merged_requests_total") == 3
    assert metric(metrics, "gateway_merged_inferences_total", outcome="merged") == 1


async def test_a_merged_inference_triton_refuses_is_sent_again_request_by_request() -> None:
    triton, merger, metrics, first = await busy_model()
    good = grpc_request([[2, 0, 0, 0]], request_id="good")
    bad = grpc_request([[float("nan"), 0, 0, 0]], request_id="bad")
    tasks = [infer(merger, good), infer(merger, bad)]
    await wait_for(lambda: merger.waiting(MODEL) == 2, timeout_s=2, what="two wait")
    triton.gate.set()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert triton.rows_sent() == [1, 2, 1, 1]  # the merged one refused, then each alone
    assert results[1] == alone(good)
    assert isinstance(results[2], UpstreamError)
    assert results[2].status == 400
    assert "NaN" in results[2].message
    assert metric(metrics, "gateway_merged_inferences_total", outcome="retried_alone") == 1


async def test_a_waiting_request_fails_at_its_callers_deadline_not_the_gateways() -> None:
    triton, merger, _, first = await busy_model(timeout_s=5.0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    hurried = infer(merger, grpc_request([[2, 0, 0, 0]]), within_s=0.2)
    async with asyncio.timeout(2):
        with pytest.raises(UpstreamError) as error:
            await hurried
    assert error.value.status == 504
    assert 0.2 - 0.01 <= loop.time() - began < 2
    triton.gate.set()
    await first
    assert triton.rows_sent() == [1]  # given up before it was sent


async def test_what_cannot_merge_goes_up_at_once_even_while_the_model_is_busy() -> None:
    triton, merger, _, first = await busy_model()
    chosen = grpc_request([[2, 0, 0, 0]])
    chosen.outputs.add(name="sum")
    task = infer(merger, chosen)
    await wait_for(lambda: len(triton.requests) == 2, timeout_s=2, what="it went up without waiting")
    assert merger.waiting(MODEL) == 0
    triton.gate.set()
    await asyncio.gather(first, task)


def _with(change: str) -> Any:
    request = grpc_request([[1, 2, 3, 4]])
    if change == "outputs":
        request.outputs.add(name="sum")
    elif change == "parameters":
        request.parameters["priority"].int64_param = 1
    elif change == "tensor parameters":
        request.inputs[0].parameters["x"].bool_param = True
    elif change == "contents":
        del request.raw_input_contents[:]
        request.inputs[0].contents.fp64_contents.extend([1, 2, 3, 4])
    elif change == "bytes":
        request.inputs[0].datatype = "BYTES"
    elif change == "short raw":
        request.raw_input_contents[0] = request.raw_input_contents[0][:-1]
    elif change == "as many rows as the batch":
        del request.inputs[0].shape[:]
        request.inputs[0].shape.extend([64, 1])
        request.raw_input_contents[0] = np.zeros(64).tobytes()
    elif change == "rows differ":
        request.inputs.add(name="other", datatype="FP64", shape=(2, 1))
        request.raw_input_contents.append(np.zeros(2).tobytes())
    elif change == "scalar":
        del request.inputs[0].shape[:]
        request.raw_input_contents[0] = np.zeros(1).tobytes()
    elif change == "no inputs":
        del request.inputs[:]
        del request.raw_input_contents[:]
    return request


@pytest.mark.parametrize(
    "change",
    [
        "outputs",
        "parameters",
        "tensor parameters",
        "contents",
        "bytes",
        "short raw",
        "as many rows as the batch",
        "rows differ",
        "scalar",
        "no inputs",
    ],
)
def test_only_raw_fixed_size_tensors_with_a_batch_dimension_are_mergeable(change: str) -> None:
    assert mergeable_grpc_request(_with(change), max_rows=64) is None


def test_a_plain_request_is_mergeable_and_keeps_its_rows_and_id() -> None:
    parsed = mergeable_grpc_request(grpc_request([[1, 2, 3, 4], [5, 6, 7, 8]], request_id="r-1"), max_rows=64)
    assert parsed is not None
    assert (parsed.rows, parsed.request_id, parsed.layout) == (2, "r-1", (("input", "FP64", (4,)),))


def test_a_response_that_is_not_raw_outputs_with_the_merged_rows_first_is_not_cut() -> None:
    parts = [mergeable_grpc_request(grpc_request([[1, 0]]), max_rows=64) for _ in range(2)]
    assert all(parts)
    good = triton_response(MODEL, merged_grpc_request(parts))  # type: ignore[arg-type]
    assert split_grpc_response(good, parts) is not None  # type: ignore[arg-type]
    wrong = []
    for change in ("parameters", "shape", "short", "contents", "bytes"):
        response = service_pb2.ModelInferResponse()
        response.CopyFrom(good)
        if change == "parameters":
            response.parameters["sequence_id"].int64_param = 1
        elif change == "shape":
            response.outputs[0].shape[0] = 3
        elif change == "short":
            response.raw_output_contents[1] = response.raw_output_contents[1][:-8]
        elif change == "contents":
            del response.raw_output_contents[:]
        else:
            response.outputs[0].datatype = "BYTES"
        wrong.append(response)
    for response in wrong:
        assert split_grpc_response(response, parts) is None  # type: ignore[arg-type]


row = st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=3, max_size=3)
a_request = st.tuples(st.lists(row, min_size=1, max_size=4), st.text(max_size=8), st.sampled_from(["FP64", "FP32"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(a_request, min_size=1, max_size=8))
def test_a_merged_response_cut_per_request_equals_each_response_alone(drawn: list[tuple[Any, str, str]]) -> None:
    requests = [grpc_request(rows, request_id, datatype) for rows, request_id, datatype in drawn]
    parts = [mergeable_grpc_request(request, max_rows=64) for request in requests]
    assert all(parts)
    by_layout: dict[Any, list[Any]] = {}
    for request, part in zip(requests, parts, strict=True):
        by_layout.setdefault(part.layout, []).append((request, part))  # type: ignore[union-attr]
    for members in by_layout.values():  # the merger only joins requests of one layout
        group = [part for _, part in members]
        responses = split_grpc_response(triton_response(MODEL, merged_grpc_request(group)), group)
        assert responses is not None
        assert [r.SerializeToString() for r in responses] == [alone(q).SerializeToString() for q, _ in members]
