"""Records keyed by feature name become one v2 request; bad ones get a message naming the feature."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.predict_api import FeatureError, build_infer_request, predictions, split_request
from gateway.responses import v2_infer_answer
from gateway.routing_table import RoutingState
from gateway.upstream import UpstreamResponse
from tests.unit.gateway.test_routing import SIGNATURE, ready


def test_single_record_and_batch_build_one_tensor_in_signature_order() -> None:
    single, rows = build_infer_request(SIGNATURE, {"b": 2.0, "a": 1})
    assert rows == 1
    assert single["inputs"] == [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1, 2.0]}]
    batch, rows = build_infer_request(SIGNATURE, [{"a": 1, "b": 2}, {"a": 3, "b": 4}])
    assert rows == 2
    assert batch["inputs"][0]["data"] == [1, 2, 3, 4]
    assert batch["inputs"][0]["shape"] == [2, 2]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"a": 1}, "record.b", "missing feature 'b'"),
        ({"a": 1, "b": 2, "c": 3}, "record.c", "unknown feature 'c'"),
        ({"a": "x", "b": 2}, "record.a", "must be a number"),
        ({"a": True, "b": 2}, "record.a", "must be a number"),
        ([{"a": 1, "b": 2}, {"a": 1}], "records[1].b", "missing feature 'b'"),
        ([{"a": 1, "b": 2}, 5], "records[1]", "expected an object"),
        ([], "records", "at least one record"),
        ("text", "body", "expected a record"),
        ({"a": float("nan"), "b": 1}, "record.a", "finite"),
    ],
)
def test_invalid_records_name_the_field(body: Any, field: str, words: str) -> None:
    with pytest.raises(FeatureError) as error:
        build_infer_request(SIGNATURE, body)
    assert error.value.field == field
    assert words in error.value.message
    assert error.value.message.startswith(field)


def test_predictions_one_per_record() -> None:
    answer = {"outputs": [{"name": "output", "datatype": "INT64", "shape": [3, 1], "data": [0, 1, 2]}]}
    values, outputs = predictions(answer, 3)
    assert values == [0, 1, 2]
    assert outputs == {"output": [0, 1, 2]}
    wide = {"outputs": [{"name": "p", "data": [0.1, 0.9, 0.7, 0.3]}]}
    assert predictions(wide, 2)[0] == [[0.1, 0.9], [0.7, 0.3]]


def test_v2_answer_names_the_registered_model_version_and_alias() -> None:
    state = RoutingState()
    state.apply(ready(4, generation=0))
    model = state.table.model("m")
    assert model is not None
    route = model.routes["champion"]
    output = {"name": "output", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}}
    head = json.dumps({"model_name": "m--v4", "model_version": "1", "outputs": [output]}).encode()
    tensors = b"\x01\x00\x00\x00\x00\x00\x00\x00"
    upstream = UpstreamResponse(
        200,
        head + tensors,
        {"inference-header-content-length": str(len(head)), "content-type": "application/octet-stream"},
    )
    response = v2_infer_answer(upstream, route).response()
    length = int(response.headers["inference-header-content-length"])
    body = bytes(response.body)
    header = json.loads(body[:length])
    assert header["model_name"] == "m"
    assert header["model_version"] == "4"
    assert header["parameters"]["alias"] == "champion"
    assert body[length:] == tensors
    assert response.headers["x-model-version"] == "4"
    assert response.headers["x-model-alias"] == "champion"


@pytest.mark.parametrize(
    "answer",
    [
        # Triton's compact form: the prefix is replaced without parsing the outputs
        b'{"model_name":"m--v4","model_version":"1","outputs":[{"name":"output","datatype":"INT64","shape":[2,1],'
        b'"data":[0,2]}]}',
        # an id first, Triton's own parameters, spaces: parsed and rewritten whole
        b'{"id":"r-7","model_name":"m--v4","model_version":"1","outputs":[{"name":"output","data":[1]}]}',
        b'{"model_name":"m--v4","model_version":"1","parameters":{"sequence_id":3},"outputs":[]}',
        b'{"model_name": "m--v4", "model_version": "1", "outputs": []}',
        b'{"model_name":"other--v9","model_version":"1","outputs":[]}',
    ],
)
def test_every_json_answer_gets_the_same_rewrite(answer: bytes) -> None:
    state = RoutingState()
    state.apply(ready(4, generation=0))
    model = state.table.model("m")
    assert model is not None
    upstream = UpstreamResponse(200, answer, {"content-type": "application/json"})
    rewritten = json.loads(v2_infer_answer(upstream, model.routes["champion"]).body)
    original = json.loads(answer)
    expected_parameters = {**original.get("parameters", {}), "alias": "champion", "triton_model_name": "m--v4"}
    assert rewritten == {**original, "model_name": "m", "model_version": "4", "parameters": expected_parameters}


@pytest.mark.parametrize(("rows", "max_rows", "sizes"), [(150, 64, [64, 64, 22]), (64, 64, [64]), (5, None, [5])])
def test_large_requests_are_split_within_max_batch_size(rows: int, max_rows: int | None, sizes: list[int]) -> None:
    records = [{"a": i, "b": i + 0.5} for i in range(rows)]
    request, count = build_infer_request(SIGNATURE, records)
    parts = split_request(request, count, max_rows)
    assert [part_rows for _, part_rows in parts] == sizes
    assert [part["inputs"][0]["shape"] for part, _ in parts] == [[size, 2] for size in sizes]
    rejoined = [value for part, _ in parts for value in part["inputs"][0]["data"]]
    assert rejoined == request["inputs"][0]["data"]
