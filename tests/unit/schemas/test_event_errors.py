"""Bad payloads fail with an InvalidEventError whose message names the offending field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.catalog import InvalidEventError, parse_any_event, parse_event
from schemas.model_ready import ModelReady
from schemas.promotion_requested import PromotionRequested
from schemas.routing_updated import RoutingUpdated
from tests.event_samples import all_events, promotion_requested


def _request_with(**data: Any) -> bytes:
    document = json.loads(promotion_requested().to_json_bytes())
    document["data"].update(data)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"version": 0}, "data.version", "greater than or equal to 1"),
        ({"version": "3"}, "data.version", "valid integer"),
        ({"alias": "latest"}, "data.alias", "reserved"),
        ({"alias": "v3"}, "data.alias", "reserved"),
        ({"alias": "has space"}, "data.alias", "letters, digits"),
        ({"model_name": "team/model"}, "data.model_name", "'/'"),
        ({"model_name": "  "}, "data.model_name", "blank"),
        ({"model_name": ".."}, "data.model_name", "resolve to the path"),
        ({"origin": "email"}, "data.origin", "mlflow_webhook"),
        ({"requester": ""}, "data.requester", "at least 1 character"),
        ({"action": "unserve", "version": 2}, "data", "version must be omitted"),
    ],
)
def test_bad_promotion_request_names_the_field(data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(_request_with(**data), PromotionRequested)

    assert field in caught.value.fields
    assert caught.value.message.startswith(f"{field}:") or f"; {field}:" in caught.value.message
    assert words in caught.value.message


def test_missing_envelope_attribute_is_named() -> None:
    document = json.loads(promotion_requested().to_json_bytes())
    del document["source"]

    with pytest.raises(InvalidEventError) as caught:
        parse_event(json.dumps(document), PromotionRequested)

    assert caught.value.fields == ("source",)
    assert "source: Field required" in caught.value.message


def test_wrong_event_type_for_the_parser_is_named() -> None:
    ready = next(e for e in all_events() if isinstance(e, ModelReady))

    with pytest.raises(InvalidEventError) as caught:
        parse_event(ready.to_json_bytes(), PromotionRequested)

    assert caught.value.fields == ("type",)
    assert "io.modelpromoter.model.ready.v1" in caught.value.message
    assert "expected io.modelpromoter.promotion.requested.v1" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"not json at all", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'{"data": {}}', "type: missing"),
        (b'{"type": "com.example.other"}', "unexpected event type 'com.example.other'"),
    ],
)
def test_undecodable_messages_are_explained(raw: bytes, words: str) -> None:
    with pytest.raises(InvalidEventError, match=words):
        parse_any_event(raw)


@pytest.mark.parametrize(
    ("weights", "words"),
    [({"champion": 90, "challenger": 20}, "must sum to 100, got 110"), ({"champion": 100, "x": -0}, None)],
)
def test_routing_weights_must_sum_to_100(weights: dict[str, int], words: str | None) -> None:
    routing = next(e for e in all_events() if isinstance(e, RoutingUpdated))
    document = json.loads(routing.to_json_bytes())
    document["data"]["weights"] = weights

    if words is None:
        assert parse_event(json.dumps(document), RoutingUpdated).data.weights == weights
        return
    with pytest.raises(InvalidEventError) as caught:
        parse_event(json.dumps(document), RoutingUpdated)
    assert "data" in caught.value.fields
    assert f"weights: {words}" in caught.value.message


def test_many_errors_are_summarised() -> None:
    document = json.loads(promotion_requested().to_json_bytes())
    document["data"] = {"model_name": 1, "alias": 2, "version": "x", "origin": 3, "requester": 4, "reason": 5}

    with pytest.raises(InvalidEventError) as caught:
        parse_event(json.dumps(document), PromotionRequested)

    assert len(caught.value.fields) == 6
    assert caught.value.message.endswith("and 1 more")
