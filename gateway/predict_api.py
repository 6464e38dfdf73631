"""``POST /predict/{name}``: records keyed by the signature's feature names, validated, sent as v2 requests.

A record is a JSON object ``{feature: number}``; the body is one record or a list of them (up to 10,000).
A missing, unknown or non-numeric feature gets a 422 whose message names it (``records[1]: missing
feature 'petal width (cm)'``). More records than the model's ``max_batch_size`` are sent as several
concurrent inferences of at most that many rows. The answer carries one prediction per record, in order,
and which version and alias made them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway.inference import InferenceService
from gateway.metrics import HTTP
from gateway.online_features import MissingFeatures, OnlineFeatures
from gateway.responses import UPSTREAM_ERROR_RESPONSES, error_response, route_headers
from gateway.routing_policy import RouteError
from gateway.upstream import UpstreamError
from schemas.model_ready import SignatureSummary

API = "predict"
MAX_RECORDS = 10_000
_INTEGER_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")


class FeatureError(ValueError):
    """The request body does not match the signature; ``field`` names the offending feature or path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"


def _records(body: Any) -> list[Any]:
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list):
        if not body:
            raise FeatureError("records", "at least one record is required")
        if len(body) > MAX_RECORDS:
            raise FeatureError("records", f"at most {MAX_RECORDS} records per request")
        return body
    raise FeatureError("body", "expected a record (an object keyed by feature name) or a list of records")


def _number(value: Any, where: str, datatype: str) -> float | int | bool:
    if datatype == "BOOL":
        if isinstance(value, bool):
            return value
        raise FeatureError(where, f"must be true or false, got {type(value).__name__}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FeatureError(where, f"must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FeatureError(where, "must be a finite number")
    if datatype in _INTEGER_TYPES and not float(value).is_integer():
        raise FeatureError(where, f"must be an integer, got {value}")
    return value


def build_infer_request(signature: SignatureSummary, body: Any) -> tuple[dict[str, Any], int]:
    """The v2 request for ``body`` (one record or a list), and the number of records; FeatureError if invalid."""
    columns = [column.name for column in signature.columns]
    if not columns:
        raise FeatureError("body", "this model has a tensor signature: use POST /v2/models/{name}/infer")
    (tensor,) = signature.inputs
    records = _records(body)
    known = set(columns)
    data: list[float | int | bool] = []
    for index, record in enumerate(records):
        where = f"records[{index}]" if isinstance(body, list) else "record"
        if not isinstance(record, dict):
            raise FeatureError(where, "expected an object keyed by feature name")
        missing = [name for name in columns if name not in record]
        if missing:
            raise FeatureError(f"{where}.{missing[0]}", f"missing feature {missing[0]!r}")
        unknown = sorted(str(name) for name in record if name not in known)
        if unknown:
            raise FeatureError(
                f"{where}.{unknown[0]}", f"unknown feature {unknown[0]!r} (features: {', '.join(columns)})"
            )
        data.extend(_number(record[name], f"{where}.{name}", tensor.datatype) for name in columns)
    request = {
        "inputs": [
            {"name": tensor.name, "shape": [len(records), len(columns)], "datatype": tensor.datatype, "data": data}
        ]
    }
    return request, len(records)


def split_request(request: dict[str, Any], rows: int, max_rows: int | None) -> list[tuple[dict[str, Any], int]]:
    """``request`` (one input tensor of ``rows`` rows) as parts of at most ``max_rows`` rows each, with their row
    counts; whole when ``max_rows`` is unknown (None or 0)."""
    if not max_rows or rows <= max_rows:
        return [(request, rows)]
    (tensor,) = request["inputs"]
    width = len(tensor["data"]) // rows
    parts = []
    for start in range(0, rows, max_rows):
        count = min(max_rows, rows - start)
        data = tensor["data"][start * width : (start + count) * width]
        parts.append(({"inputs": [{**tensor, "shape": [count, *tensor["shape"][1:]], "data": data}]}, count))
    return parts


def predictions(answer: Any, rows: int) -> tuple[list[Any], dict[str, Any]]:
    """One prediction per record from a v2 JSON answer (first output), and every output by name."""
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, list) or not outputs:
        return [], {}
    by_name = {str(o.get("name")): o.get("data") for o in outputs if isinstance(o, dict)}
    first = outputs[0].get("data") if isinstance(outputs[0], dict) else None
    if not isinstance(first, list) or rows == 0:
        return [], by_name
    width = max(1, len(first) // rows)
    if width == 1:
        return list(first[:rows]), by_name
    return [first[i * width : (i + 1) * width] for i in range(rows)], by_name


PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One record, or a list of records, keyed by the signature's feature names.",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "additionalProperties": {"type": "number"}},
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "object", "additionalProperties": {"type": "number"}},
                        },
                    ]
                },
                "example": {
                    "sepal length (cm)": 5.1,
                    "sepal width (cm)": 3.5,
                    "petal length (cm)": 1.4,
                    "petal width (cm)": 0.2,
                },
            }
        },
    }
}
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "One prediction per record, with model_version and alias."},
    422: {"description": "A missing, unknown or non-numeric feature, named in the message."},
    **UPSTREAM_ERROR_RESPONSES,
}


def build_predict_router(service: InferenceService, online_features: OnlineFeatures | None = None) -> APIRouter:
    router = APIRouter(tags=["Predictions"])

    @router.post(
        "/predict/{name}",
        summary="Predict from records keyed by feature name",
        openapi_extra=PREDICT_BODY,
        responses=PREDICT_RESPONSES,
    )
    async def predict(
        request: Request,
        name: str = Path(..., description="Registered (MLflow) model name."),
        alias: str | None = Query(None, max_length=255, description="Pin an alias (also X-Model-Alias)."),
        version: int | None = Query(None, ge=1, description="Pin an MLflow version."),
    ) -> Response:
        try:
            decision = service.decide(name, request.headers, alias=alias, version=version)
        except RouteError as error:
            service.count_route_error(name, error, API)
            return error_response(error.status, error.message)
        route = decision.route
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            return error_response(422, "body: not valid JSON", route)
        source = online_features.source_for(route.model_name) if online_features is not None else None
        try:
            if source is not None and online_features is not None:
                columns = [column.name for column in route.ready.signature.columns]
                body = await online_features.complete(route.model_name, source, columns, body)
            payload, rows = build_infer_request(route.ready.signature, body)
        except (FeatureError, MissingFeatures) as error:
            service.metrics.requests.labels(route.model_name, route.alias, str(route.version), API, HTTP, "422").inc()
            return error_response(422, error.message, route)
        headers = {"content-type": "application/json"}
        parts = split_request(payload, rows, route.ready.max_batch_size)
        bodies = [json.dumps(part).encode() for part, _ in parts]
        try:
            upstreams = await service.infer_parts(decision, bodies, headers, API)
        except UpstreamError as error:
            return error_response(error.status, error.message, route)
        values: list[Any] = []
        outputs: dict[str, Any] = {}
        for (_, part_rows), upstream in zip(parts, upstreams, strict=True):
            try:
                answer = json.loads(upstream.body)
            except ValueError:
                return error_response(502, "Triton answered with something that is not JSON", route)
            part_values, part_outputs = predictions(answer, part_rows)
            values.extend(part_values)
            for output, data in part_outputs.items():
                outputs.setdefault(output, []).extend(data if isinstance(data, list) else [data])
        return JSONResponse(
            {
                "model_name": route.model_name,
                "model_version": route.version,
                "alias": route.alias,
                "predictions": values,
                "outputs": outputs,
            },
            headers=route_headers(route),
        )

    return router
