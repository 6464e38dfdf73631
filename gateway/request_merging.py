"""Merging concurrent small v2 inferences for one Triton model into one Triton inference.

The lanes (:class:`MergingLanes`) know nothing of a protocol; :class:`RequestMerger` is the HTTP JSON one
described here, ``gateway.grpc_merging`` the gRPC raw-tensor one.

Why: Triton's cost is per request, not per row. Measured on this 2-core machine with the python backend,
an 8-row inference cost Triton the same CPU as a 1-row one (about 140 µs), so a proxy that forwards each
caller's request on its own makes Triton spend most of its core on request handling, not on the model.

How: at most ``limit`` inferences per Triton model go upstream at a time. Under light load that is never
reached and every request goes up at once, on its own, unchanged. A request arriving while all of them are
in flight waits; when one returns, the waiting requests of the same input layout (up to the model's
``max_batch_size`` rows) go up as one inference, and its answer is cut back into one answer per caller: the
JSON Triton gives for that request alone (same outputs, shapes and ``id``). No timer: a waiting request waits
only for an inference already in flight, never for company.

What merges: plain JSON requests holding ``inputs`` (name, shape with the batch dimension first, datatype and
flat data) and an optional ``id``. Anything else (binary tensors, requested ``outputs``, ``parameters``, nested
data, a request as large as the batch) goes up on its own, unchanged.

Failures: a merged inference Triton refuses (4xx/5xx, or an answer that cannot be cut) is sent again request
by request, so one caller's bad input is never another caller's error. A transport failure (timeout, Triton
unreachable, unreadable HTTP) fails every request it carried, as it would have failed each alone.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import orjson

from gateway.metrics import GatewayMetrics
from gateway.responses import JSON
from gateway.upstream import INFER_HEADER_LENGTH, TritonUpstream, UpstreamError, UpstreamResponse

_REQUEST_KEYS = frozenset({"inputs", "id"})
_TENSOR_KEYS = frozenset({"name", "shape", "datatype", "data"})
_ANSWER_KEYS = frozenset({"model_name", "model_version", "outputs"})
_INT = frozenset({int})  # exactly int: a JSON true is a bool, never a size
_SCALARS = frozenset({int, float, bool, str})  # what orjson reads a JSON scalar as (null aside: Triton refuses it)
_JSON_HEADERS = {"content-type": JSON}
#: Outcomes that mean "Triton could not be reached or read", not "Triton refused this input".
_TRANSPORT_OUTCOMES = frozenset({"timeout", "unavailable", "bad_gateway"})

Layout = tuple[tuple[str, str, tuple[int, ...]], ...]  # per input: name, datatype, shape after the batch dimension


@dataclass(frozen=True, slots=True)
class MergeableRequest:
    """A parsed v2 request that can share an inference with others of the same ``layout``."""

    layout: Layout
    rows: int
    request_id: str | None
    data: tuple[list[Any], ...]  # per input, flat


def mergeable_request(body: bytes, headers: Mapping[str, str], max_rows: int) -> MergeableRequest | None:
    """``body`` parsed for merging, or None when it must go up on its own (see the module doc)."""
    plain_json = headers.get("content-type", JSON).startswith(JSON)
    if not plain_json or INFER_HEADER_LENGTH in headers or "content-encoding" in headers:
        return None
    document = _json_object(body)
    if document is None or not document.keys() <= _REQUEST_KEYS:
        return None
    request_id, inputs = document.get("id"), document.get("inputs")
    if (request_id is not None and not isinstance(request_id, str)) or not isinstance(inputs, list) or not inputs:
        return None
    layout: list[tuple[str, str, tuple[int, ...]]] = []
    data: list[list[Any]] = []
    rows: set[int] = set()
    for tensor in inputs:
        flat = _flat_tensor(tensor, max_rows)
        if flat is None:
            return None
        name, datatype, shape, values = flat
        layout.append((name, datatype, tuple(shape[1:])))
        data.append(values)
        rows.add(shape[0])
    return MergeableRequest(tuple(layout), rows.pop(), request_id, tuple(data)) if len(rows) == 1 else None


def _flat_tensor(tensor: Any, max_rows: int) -> tuple[str, str, list[int], list[Any]] | None:
    """A v2 JSON input with fewer than ``max_rows`` rows and flat data matching its shape, else None."""
    if not isinstance(tensor, dict) or tensor.keys() != _TENSOR_KEYS:
        return None
    name, datatype, shape, values = tensor["name"], tensor["datatype"], tensor["shape"], tensor["data"]
    if not (isinstance(name, str) and isinstance(datatype, str) and isinstance(shape, list) and shape):
        return None
    if not _INT.issuperset(map(type, shape)) or min(shape) < 0 or not 0 < shape[0] < max_rows:
        return None
    if not isinstance(values, list) or len(values) != math.prod(shape) or not _SCALARS.issuperset(map(type, values)):
        return None
    return name, datatype, shape, values


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:  # also what orjson does not read (NaN, integers past 64 bits): sent alone
        return None
    return document if isinstance(document, dict) else None


def merged_body(requests: list[MergeableRequest]) -> bytes:
    """One v2 request carrying every row of ``requests`` (same layout), in order."""
    total = sum(request.rows for request in requests)
    inputs = []
    for index, (name, datatype, tail) in enumerate(requests[0].layout):
        data: list[Any] = []
        for request in requests:
            data.extend(request.data[index])
        inputs.append({"name": name, "shape": [total, *tail], "datatype": datatype, "data": data})
    return orjson.dumps({"inputs": inputs})


def split_answer(body: bytes, requests: list[MergeableRequest]) -> list[bytes] | None:
    """Triton's answer to :func:`merged_body` cut into the answer each request would have had alone; None when
    the answer is not the plain JSON shape expected (then the requests are sent again one by one)."""
    document = _json_object(body)
    if document is None or document.keys() != _ANSWER_KEYS or not isinstance(document["outputs"], list):
        return None
    total = sum(request.rows for request in requests)
    outputs: list[tuple[dict[str, Any], list[int], int]] = []  # output, shape after the batch dimension, row size
    for output in document["outputs"]:
        if not isinstance(output, dict) or output.keys() != _TENSOR_KEYS:
            return None
        shape, data = output["shape"], output["data"]
        if not isinstance(shape, list) or not shape or shape[0] != total or not isinstance(data, list):
            return None
        row = math.prod(shape[1:])
        if len(data) != total * row:
            return None
        outputs.append((output, shape[1:], row))
    answers: list[bytes] = []
    start = 0
    for request in requests:
        answer: dict[str, Any] = {"model_name": document["model_name"], "model_version": document["model_version"]}
        if request.request_id is not None:
            answer["id"] = request.request_id
        answer["outputs"] = [
            {
                "name": output["name"],
                "datatype": output["datatype"],
                "shape": [request.rows, *tail],
                "data": output["data"][start * row : (start + request.rows) * row],
            }
            for output, tail, row in outputs
        ]
        answers.append(orjson.dumps(answer))
        start += request.rows
    return answers


class Mergeable(Protocol):
    """A parsed request that can share an inference with others of the same ``layout``."""

    @property
    def layout(self) -> Hashable: ...

    @property
    def rows(self) -> int: ...


RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ParsedT = TypeVar("ParsedT", bound=Mergeable)


@dataclass(slots=True)
class _Waiting(Generic[RequestT, ResponseT, ParsedT]):
    parsed: ParsedT
    request: RequestT  # as the caller sent it: what goes up when it is sent alone
    answer: asyncio.Future[ResponseT]
    deadline: float  # loop time: its caller's deadline (or the request timeout), counted from its arrival


@dataclass(slots=True)
class _Lane(Generic[RequestT, ResponseT, ParsedT]):
    """One Triton model: its inferences in flight and the requests waiting for one to return."""

    triton_model: str
    max_rows: int
    label: str
    in_flight: int = 0
    waiting: list[_Waiting[RequestT, ResponseT, ParsedT]] = field(default_factory=list)  # oldest first
    expiry: asyncio.TimerHandle | None = None  # at the oldest waiting request's deadline


class MergingLanes(Generic[RequestT, ResponseT, ParsedT]):
    """The protocol-free part of merging: per Triton model, at most ``limit`` inferences in flight; requests
    arriving beyond that wait, and when one returns the waiting ones (one layout, up to max_batch_size rows) go
    up as one inference whose answer is cut per caller. A protocol says how to parse, join, cut and send.

    ``limit`` is the number of inferences per Triton model in flight before requests wait (0: never merge).
    """

    def __init__(self, limit: int, metrics: GatewayMetrics, timeout_s: float) -> None:
        self.limit = limit
        self.metrics = metrics
        self.timeout_s = timeout_s
        self._lanes: dict[str, _Lane[RequestT, ResponseT, ParsedT]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what a protocol provides ------------------------------------------------------------------

    def _parse(self, request: RequestT, max_rows: int) -> ParsedT | None:
        """``request`` parsed for merging (fewer than ``max_rows`` rows), or None when it must go up alone."""
        raise NotImplementedError

    def _joined(self, parts: list[ParsedT]) -> RequestT:
        """One request carrying every row of ``parts`` (same layout), in order."""
        raise NotImplementedError

    def _cut(self, response: ResponseT, parts: list[ParsedT]) -> list[ResponseT] | None:
        """The answer to :meth:`_joined` cut into each part's own answer; None when it cannot be cut."""
        raise NotImplementedError

    def _send(self, triton_model: str, request: RequestT, within_s: float | None) -> Awaitable[ResponseT]:
        raise NotImplementedError

    def _deadline_error(self) -> UpstreamError:
        return UpstreamError(504, f"Triton did not answer within {self.timeout_s} s", "timeout")

    # -- the lanes ---------------------------------------------------------------------------------

    async def _infer(
        self,
        triton_model: str,
        request: RequestT,
        *,
        max_batch_size: int | None,
        label: str,
        within_s: float | None = None,
    ) -> ResponseT:
        if self.limit == 0 or not max_batch_size or max_batch_size < 2:
            return await self._send(triton_model, request, within_s)
        lane = self._lanes.get(triton_model)
        if lane is None:
            lane = self._lanes[triton_model] = _Lane(triton_model, max_batch_size, label)
        if lane.in_flight < self.limit:  # nothing waits while a slot is free: the request goes up alone, at once
            lane.in_flight += 1
            try:
                return await self._send(triton_model, request, within_s)
            finally:
                self._release(lane)
        parsed = self._parse(request, lane.max_rows)
        if parsed is None:
            return await self._send(triton_model, request, within_s)
        loop = asyncio.get_running_loop()
        budget_s = self.timeout_s if within_s is None else min(within_s, self.timeout_s)
        answer: asyncio.Future[ResponseT] = loop.create_future()
        waiting = _Waiting(parsed, request, answer, loop.time() + budget_s)
        lane.waiting.append(waiting)
        if lane.expiry is None:  # one timer per lane, not one per request: the caller's deadline covers its wait
            lane.expiry = loop.call_at(waiting.deadline, self._expire, lane)
        return await answer

    def waiting(self, triton_model: str) -> int:
        """Requests waiting for an inference of ``triton_model`` to return."""
        lane = self._lanes.get(triton_model)
        return sum(not waiting.answer.done() for waiting in lane.waiting) if lane else 0

    def _expire(self, lane: _Lane[RequestT, ResponseT, ParsedT]) -> None:
        """The oldest waiting request's deadline: those past theirs get their 504, the timer moves to the next."""
        lane.expiry = None
        self._prune(lane)
        if lane.waiting:
            earliest = min(waiting.deadline for waiting in lane.waiting)  # callers' deadlines differ (gRPC)
            lane.expiry = asyncio.get_running_loop().call_at(earliest, self._expire, lane)

    def _prune(self, lane: _Lane[RequestT, ResponseT, ParsedT]) -> None:
        """Waiting requests past their deadline get a 504, those already answered are dropped, and ``lane`` is
        forgotten once nothing of it waits or is in flight."""
        now = asyncio.get_running_loop().time()
        for waiting in lane.waiting:
            if waiting.deadline <= now:
                _fail(waiting, self._deadline_error())
        lane.waiting = [waiting for waiting in lane.waiting if not waiting.answer.done()]
        if not lane.waiting and lane.in_flight == 0 and self._lanes.get(lane.triton_model) is lane:
            if lane.expiry is not None:
                lane.expiry.cancel()
            del self._lanes[lane.triton_model]

    def _release(self, lane: _Lane[RequestT, ResponseT, ParsedT]) -> None:
        """One inference of ``lane`` returned: the waiting requests (one layout, up to max_batch_size rows) take
        its slot as one inference."""
        lane.in_flight -= 1
        self._prune(lane)
        if not lane.waiting:
            return
        layout = lane.waiting[0].parsed.layout
        batch: list[_Waiting[RequestT, ResponseT, ParsedT]] = []
        rest: list[_Waiting[RequestT, ResponseT, ParsedT]] = []
        rows = 0
        for waiting in lane.waiting:
            if waiting.parsed.layout == layout and rows + waiting.parsed.rows <= lane.max_rows:
                batch.append(waiting)
                rows += waiting.parsed.rows
            else:
                rest.append(waiting)
        lane.waiting = rest
        lane.in_flight += 1
        task = asyncio.create_task(self._send_batch(lane, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(
        self, lane: _Lane[RequestT, ResponseT, ParsedT], batch: list[_Waiting[RequestT, ResponseT, ParsedT]]
    ) -> None:
        try:
            if len(batch) == 1:
                await self._send_alone(lane.triton_model, batch[0])
                return
            parts = [waiting.parsed for waiting in batch]
            try:
                response = await self._send(lane.triton_model, self._joined(parts), _time_left(batch))
            except UpstreamError as error:
                if error.outcome not in _TRANSPORT_OUTCOMES:  # refused: maybe one caller's input, so one by one
                    await self._retry_alone(lane, batch)
                    return
                self.metrics.merged_inference(lane.label, "failed")
                for waiting in batch:
                    _fail(waiting, UpstreamError(error.status, error.message, error.outcome))
                return
            answers = self._cut(response, parts)
            if answers is None:
                await self._retry_alone(lane, batch)
                return
            self.metrics.merged_inference(lane.label, "merged", requests=len(batch))
            for waiting, answer in zip(batch, answers, strict=True):
                _answer(waiting, answer)
        except Exception as error:  # a fault of ours: each caller gets it (and a 500), none waits forever
            for waiting in batch:
                _fail(waiting, error)
        finally:  # cancelled (the gateway stops): whoever is still waiting is told so
            for waiting in batch:
                _fail(waiting, UpstreamError(503, "the gateway stopped before Triton answered", "unavailable"))
            self._release(lane)

    async def _retry_alone(
        self, lane: _Lane[RequestT, ResponseT, ParsedT], batch: list[_Waiting[RequestT, ResponseT, ParsedT]]
    ) -> None:
        self.metrics.merged_inference(lane.label, "retried_alone")
        await asyncio.gather(*(self._send_alone(lane.triton_model, waiting) for waiting in batch))

    async def _send_alone(self, triton_model: str, waiting: _Waiting[RequestT, ResponseT, ParsedT]) -> None:
        try:
            response = await self._send(triton_model, waiting.request, _time_left([waiting]))
        except UpstreamError as error:
            _fail(waiting, error)
        else:
            _answer(waiting, response)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


HttpRequest = tuple[bytes, Mapping[str, str]]  # body and headers


class RequestMerger(MergingLanes[HttpRequest, UpstreamResponse, MergeableRequest]):
    """Sends v2 JSON inferences to Triton through ``upstream``, merging waiting ones as the module doc says."""

    def __init__(self, upstream: TritonUpstream, limit: int, metrics: GatewayMetrics) -> None:
        super().__init__(limit, metrics, upstream.timeout_s)
        self.upstream = upstream

    async def infer(
        self, triton_model: str, body: bytes, headers: Mapping[str, str], *, max_batch_size: int | None, label: str
    ) -> UpstreamResponse:
        return await self._infer(triton_model, (body, headers), max_batch_size=max_batch_size, label=label)

    def _parse(self, request: HttpRequest, max_rows: int) -> MergeableRequest | None:
        return mergeable_request(*request, max_rows)

    def _joined(self, parts: list[MergeableRequest]) -> HttpRequest:
        return merged_body(parts), _JSON_HEADERS

    def _cut(self, response: UpstreamResponse, parts: list[MergeableRequest]) -> list[UpstreamResponse] | None:
        answers = split_answer(response.body, parts)
        if answers is None:
            return None
        headers = {"content-type": response.headers.get("content-type", JSON)}
        return [UpstreamResponse(response.status, answer, dict(headers)) for answer in answers]

    def _send(self, triton_model: str, request: HttpRequest, within_s: float | None) -> Awaitable[UpstreamResponse]:
        body, headers = request
        return self.upstream.infer(triton_model, body, headers, within_s=within_s)

    def _deadline_error(self) -> UpstreamError:
        return self.upstream.deadline_error()


def _time_left(batch: list[_Waiting[Any, Any, Any]]) -> float:
    """What is left of the earliest deadline in ``batch`` (requests that waited for the same inference)."""
    return max(0.0, min(waiting.deadline for waiting in batch) - asyncio.get_running_loop().time())


# A waiting request whose answer is already done was given up by its caller (deadline): nobody to tell.
def _answer(waiting: _Waiting[Any, ResponseT, Any], response: ResponseT) -> None:
    if not waiting.answer.done():
        waiting.answer.set_result(response)


def _fail(waiting: _Waiting[Any, Any, Any], error: BaseException) -> None:
    if not waiting.answer.done():
        waiting.answer.set_exception(error)
