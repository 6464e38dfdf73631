"""Request merging: waiting requests for a busy Triton model share one inference, and every caller gets exactly
the answer its request gets alone, or its own error. Against an in-memory Triton that answers per row."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.metrics import GatewayMetrics
from gateway.request_merging import RequestMerger, mergeable_request, merged_body, split_answer
from gateway.upstream import INFER_HEADER_LENGTH, TritonUpstream, UpstreamError, UpstreamResponse
from runtime.settings import TritonSettings
from tests.worker_harness import wait_for

MODEL = "m--v1"
JSON_HEADERS = {"content-type": "application/json"}


def request_body(rows: list[list[float]], request_id: str | None = None, **extra: Any) -> bytes:
    document: dict[str, Any] = {} if request_id is None else {"id": request_id}
    tensor = {
        "name": "input",
        "shape": [len(rows), len(rows[0])],
        "datatype": "FP64",
        "data": [value for row in rows for value in row],
    }
    return json.dumps({**document, "inputs": [tensor], **extra}).encode()


def triton_answer(triton_model: str, body: bytes) -> bytes:
    """What the in-memory Triton answers: per row, the sum of its features and that sum's class (mod 3)."""
    document = json.loads(body)
    tensor = document["inputs"][0]
    rows, width = tensor["shape"][0], math.prod(tensor["shape"][1:])
    data = tensor["data"]
    if not all(isinstance(value, int | float) for value in data):
        raise UpstreamError(400, "unexpected datatype for input 'input'", "bad_request")
    sums = [float(sum(data[row * width : (row + 1) * width])) for row in range(rows)]
    answer: dict[str, Any] = {"model_name": triton_model, "model_version": "1"}
    if "id" in document:
        answer["id"] = document["id"]
    answer["outputs"] = [
        {"name": "sum", "datatype": "FP64", "shape": [rows, 1], "data": sums},
        {"name": "label", "datatype": "INT64", "shape": [rows], "data": [int(s) % 3 for s in sums]},
    ]
    return json.dumps(answer).encode()


class InMemoryTriton(TritonUpstream):
    """Answers with :func:`triton_answer` once ``gate`` is open; records every body sent up."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        super().__init__(TritonSettings(endpoints="127.0.0.1:9", request_timeout_s=timeout_s), connect_timeout_s=1)
        self.bodies: list[bytes] = []
        self.deadlines: list[float] = []  # the time each inference was given
        self.gate = asyncio.Event()
        self.gate.set()
        self.failure: UpstreamError | None = None

    async def infer(
        self, triton_model: str, body: bytes, headers: Mapping[str, str], *, within_s: float | None = None
    ) -> UpstreamResponse:
        self.bodies.append(body)
        self.deadlines.append(self.timeout_s if within_s is None else within_s)
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return UpstreamResponse(200, triton_answer(triton_model, body), dict(JSON_HEADERS))

    def rows_sent(self) -> list[int]:
        return [json.loads(body)["inputs"][0]["shape"][0] for body in self.bodies]


def merger_on(triton: InMemoryTriton, limit: int = 1) -> tuple[RequestMerger, GatewayMetrics]:
    metrics = GatewayMetrics()
    return RequestMerger(triton, limit, metrics), metrics


FIRST = request_body([[1, 1, 1, 1]])


class BusyModel(NamedTuple):
    """A merger whose model has one inference in flight (``first``), held until ``triton.gate`` opens."""

    triton: InMemoryTriton
    merger: RequestMerger
    metrics: GatewayMetrics
    first: asyncio.Task[UpstreamResponse]


async def busy_model(timeout_s: float = 5.0, max_batch_size: int = 64) -> BusyModel:
    triton = InMemoryTriton(timeout_s)
    merger, metrics = merger_on(triton)
    triton.gate.clear()
    first = infer(merger, FIRST, max_batch_size)
    await wait_for(lambda: len(triton.bodies) == 1, timeout_s=2, what="the first request went up at once, alone")
    return BusyModel(triton, merger, metrics, first)


def infer(
    merger: RequestMerger, body: bytes, max_batch_size: int = 64, headers: Mapping[str, str] = JSON_HEADERS
) -> asyncio.Task[UpstreamResponse]:
    return asyncio.create_task(merger.infer(MODEL, body, headers, max_batch_size=max_batch_size, label="m"))


def alone(body: bytes) -> Any:
    return json.loads(triton_answer(MODEL, body))


def metric(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"model": "m", **labels}) or 0.0


async def test_requests_waiting_for_a_busy_model_share_one_inference_and_each_gets_its_own_answer() -> None:
    triton, merger, metrics, first = await busy_model()
    bodies = [
        request_body([[2, 0, 0, 0]], request_id="a"),
        request_body([[3, 0, 0, 0], [4, 0, 0, 1]]),
        request_body([[5, 5, 0, 0]], request_id="c"),
        request_body([[0.5, 0.25, 0, 0]]),
    ]
    waiting = [infer(merger, body) for body in bodies]
    await wait_for(
        lambda: merger.waiting(MODEL) == len(bodies), timeout_s=2, what="the others wait for the inference in flight"
    )
    assert len(triton.bodies) == 1
    triton.gate.set()
    answers = await asyncio.gather(first, *waiting)
    assert triton.rows_sent() == [1, 5]  # the first alone, then the four waiting ones (five rows) as one
    assert triton.deadlines[0] == 5.0
    assert 0 < triton.deadlines[1] < 5.0  # the merged one gets what is left of its callers' deadline
    for body, answer in zip([FIRST, *bodies], answers, strict=True):
        assert answer.status == 200
        assert json.loads(answer.body) == alone(body)
    assert metric(metrics, "gateway_merged_requests_total") == 4
    assert metric(metrics, "gateway_merged_inferences_total", outcome="merged") == 1
    assert merger.waiting(MODEL) == 0


async def test_a_merged_inference_triton_refuses_is_sent_again_request_by_request() -> None:
    triton, merger, metrics, first = await busy_model()
    good = [request_body([[2, 0, 0, 0]]), request_body([[3, 0, 0, 0]], request_id="x")]
    bad = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, "two", 3, 4]}]})
    tasks = [infer(merger, good[0]), infer(merger, bad.encode()), infer(merger, good[1])]
    await wait_for(lambda: merger.waiting(MODEL) == 3, timeout_s=2, what="three wait")
    triton.gate.set()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert triton.rows_sent() == [1, 3, 1, 1, 1]  # the merged one refused, then each alone
    for result, body in ((results[1], good[0]), (results[3], good[1])):
        assert isinstance(result, UpstreamResponse)
        assert json.loads(result.body) == alone(body)
    assert isinstance(results[2], UpstreamError)
    assert results[2].status == 400
    assert "unexpected datatype" in results[2].message
    assert metric(metrics, "gateway_merged_inferences_total", outcome="retried_alone") == 1


async def test_triton_unreachable_fails_every_request_a_merged_inference_carried() -> None:
    triton, merger, metrics, first = await busy_model()
    tasks = [infer(merger, request_body([[float(i), 0, 0, 0]])) for i in range(3)]
    await wait_for(lambda: merger.waiting(MODEL) == 3, timeout_s=2, what="three wait")
    triton.failure = UpstreamError(503, "Triton is unavailable: Connection refused", "unavailable")
    triton.gate.set()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert triton.rows_sent() == [1, 3]  # no retry one by one: each would have failed the same way
    assert all(isinstance(r, UpstreamError) and r.status == 503 for r in results)
    assert metric(metrics, "gateway_merged_inferences_total", outcome="failed") == 1


async def test_each_waiting_request_gets_504_at_its_own_deadline() -> None:
    triton, merger, _, first = await busy_model(timeout_s=0.3)
    loop = asyncio.get_running_loop()
    began = {"early": loop.time()}
    early = infer(merger, request_body([[2, 0, 0, 0]]))
    await wait_for(lambda: merger.waiting(MODEL) == 1, timeout_s=2, what="one waits")
    began["late"] = loop.time()
    late = infer(merger, request_body([[3, 0, 0, 0]]))
    ended: dict[str, float] = {}
    for name, task in (("early", early), ("late", late)):
        async with asyncio.timeout(2):
            with pytest.raises(UpstreamError) as error:
                await task
        ended[name] = loop.time()
        assert error.value.status == 504
        assert "within 0.3 s" in error.value.message
        assert ended[name] - began[name] >= 0.3 - 0.01, name  # the loop's timers may fire a hair early
    assert ended["late"] >= ended["early"]
    triton.gate.set()
    assert (await first).status == 200
    assert triton.rows_sent() == [1]  # the ones that gave up were never sent
    assert merger.waiting(MODEL) == 0


async def test_a_caller_going_away_hands_its_slot_on_and_stopping_tells_those_still_waiting() -> None:
    triton, merger, _, first = await busy_model()
    waiting = [infer(merger, request_body([[2, 0, 0, 0]])), infer(merger, request_body([[3, 0, 0, 0]]))]
    await wait_for(lambda: merger.waiting(MODEL) == 2, timeout_s=2, what="two wait")
    first.cancel()
    await wait_for(lambda: len(triton.bodies) == 2, timeout_s=2, what="the two went up merged in its place")
    assert triton.rows_sent() == [1, 2]
    await merger.close()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, UpstreamError) and result.status == 503 for result in results), results


async def test_merged_inferences_stay_within_max_batch_size_and_one_input_layout() -> None:
    triton, merger, _, first = await busy_model(max_batch_size=4)
    narrow = [request_body([[float(i), 1, 1]]) for i in range(2)]  # another layout: 3 features, not 4
    wide = [request_body([[float(i), 0, 0, 0]]) for i in range(6)]
    tasks = [infer(merger, body, max_batch_size=4) for body in [*wide[:3], *narrow, *wide[3:]]]
    await wait_for(lambda: merger.waiting(MODEL) == 8, timeout_s=2, what="eight wait")
    triton.gate.set()
    answers = await asyncio.gather(first, *tasks)
    widths = [
        len(json.loads(body)["inputs"][0]["data"]) // rows
        for body, rows in zip(triton.bodies, triton.rows_sent(), strict=True)
    ]
    assert list(zip(triton.rows_sent(), widths, strict=True)) == [(1, 4), (4, 4), (2, 3), (2, 4)]
    for body, answer in zip([*wide[:3], *narrow, *wide[3:]], answers[1:], strict=True):
        assert json.loads(answer.body) == alone(body)


async def test_what_cannot_merge_goes_up_at_once_even_while_the_model_is_busy() -> None:
    triton, merger, _, first = await busy_model()
    chosen = infer(merger, request_body([[2, 0, 0, 0]], outputs=[{"name": "sum"}]))
    binary = infer(merger, request_body([[3, 0, 0, 0]]), headers={**JSON_HEADERS, INFER_HEADER_LENGTH: "10"})
    await wait_for(lambda: len(triton.bodies) == 3, timeout_s=2, what="both went up without waiting")
    assert merger.waiting(MODEL) == 0
    triton.gate.set()
    await asyncio.gather(first, chosen, binary)


@pytest.mark.parametrize("limit", [0, 3])
async def test_nothing_waits_while_fewer_than_the_limit_are_in_flight(limit: int) -> None:
    triton = InMemoryTriton()
    merger, _ = merger_on(triton, limit=limit)
    triton.gate.clear()
    tasks = [infer(merger, request_body([[float(i), 0, 0, 0]])) for i in range(3)]
    await wait_for(lambda: len(triton.bodies) == 3, timeout_s=2, what="all three went up at once, alone")
    triton.gate.set()
    await asyncio.gather(*tasks)
    assert triton.rows_sent() == [1, 1, 1]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (request_body([[1, 2, 3, 4]], outputs=[{"name": "sum"}]), JSON_HEADERS),
        (request_body([[1, 2, 3, 4]], parameters={"priority": 1}), JSON_HEADERS),
        (request_body([[1, 2, 3, 4]]), {**JSON_HEADERS, INFER_HEADER_LENGTH: "80"}),
        (request_body([[1, 2, 3, 4]]), {**JSON_HEADERS, "content-encoding": "gzip"}),
        (request_body([[1, 2, 3, 4]]), {"content-type": "application/octet-stream"}),
        (b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP64","data":[[1,2,3,4]]}]}', JSON_HEADERS),
        (b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP64","data":[1,2,3]}]}', JSON_HEADERS),
        (b'{"inputs":[{"name":"input","shape":[true,4],"datatype":"FP64","data":[1,2,3,4]}]}', JSON_HEADERS),
        (b'{"inputs":[{"name":"input","shape":[64,1],"datatype":"FP64","data":[' + b"1," * 63 + b"1]}]}", JSON_HEADERS),
        (b'{"id":7,"inputs":[{"name":"input","shape":[1,1],"datatype":"FP64","data":[1]}]}', JSON_HEADERS),
        (
            b'{"inputs":[{"name":"a","shape":[1,1],"datatype":"FP64","data":[1]},'
            b'{"name":"b","shape":[2,1],"datatype":"FP64","data":[1,2]}]}',
            JSON_HEADERS,
        ),
        (b'{"inputs":[{"name":"input","shape":[1,1],"datatype":"FP64","data":[NaN]}]}', JSON_HEADERS),
        (b"{not json", JSON_HEADERS),
        (b'{"inputs":[]}', JSON_HEADERS),
    ],
)
def test_only_plain_json_tensors_with_a_batch_dimension_are_mergeable(body: bytes, headers: dict[str, str]) -> None:
    assert mergeable_request(body, headers, max_rows=64) is None


def test_a_plain_request_is_mergeable_and_keeps_its_rows_and_id() -> None:
    request = mergeable_request(request_body([[1, 2, 3, 4], [5, 6, 7, 8]], request_id="r-1"), {}, max_rows=64)
    assert request is not None
    assert (request.rows, request.request_id, request.layout) == (2, "r-1", (("input", "FP64", (4,)),))


def test_an_answer_that_is_not_plain_json_tensors_is_not_cut() -> None:
    requests = [mergeable_request(request_body([[1, 0]]), {}, max_rows=64) for _ in range(2)]
    assert all(requests)
    good = {
        "model_name": MODEL,
        "model_version": "1",
        "outputs": [{"name": "o", "datatype": "FP64", "shape": [2], "data": [1, 2]}],
    }
    assert split_answer(json.dumps(good).encode(), requests) is not None  # type: ignore[arg-type]
    wrong = [
        {**good, "parameters": {"sequence_id": 1}},
        {**good, "outputs": [{**good["outputs"][0], "shape": [3]}]},  # type: ignore[dict-item]
        {**good, "outputs": [{**good["outputs"][0], "data": [1]}]},  # type: ignore[dict-item]
        {**good, "outputs": [{**good["outputs"][0], "parameters": {"binary_data_size": 16}}]},  # type: ignore[dict-item]
    ]
    for answer in wrong:
        assert split_answer(json.dumps(answer).encode(), requests) is None  # type: ignore[arg-type]
    assert split_answer(b"[]", requests) is None  # type: ignore[arg-type]


row = st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=3, max_size=3)
a_request = st.tuples(st.lists(row, min_size=1, max_size=4), st.none() | st.text(max_size=8))


@settings(max_examples=200, deadline=None)
@given(st.lists(a_request, min_size=1, max_size=8))
def test_a_merged_answer_cut_per_request_equals_each_answer_alone(drawn: list[tuple[list[list[float]], Any]]) -> None:
    bodies = [request_body(rows, request_id) for rows, request_id in drawn]
    requests = [mergeable_request(body, JSON_HEADERS, max_rows=64) for body in bodies]
    assert all(requests)
    answers = split_answer(triton_answer(MODEL, merged_body(requests)), requests)  # type: ignore[arg-type]
    assert answers is not None
    assert [json.loads(answer) for answer in answers] == [alone(body) for body in bodies]
