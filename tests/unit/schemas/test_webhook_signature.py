"""The 31 real MLflow deliveries in shared/fixtures verify; tampering does not."""

from __future__ import annotations

import base64
import json

import pytest

from schemas.mlflow_webhook import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    MLflowWebhookPayload,
    verify_signature,
)
from tests.paths import WEBHOOK_DELIVERIES

FIXTURE = WEBHOOK_DELIVERIES
SECRET = "whsec-test-123"


def _deliveries() -> list[dict[str, object]]:
    if not FIXTURE.exists():
        pytest.fail(f"fixture missing: {FIXTURE} (the shared/ folder must sit beside the checkout)")
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def test_every_signed_capture_verifies_and_tampering_fails() -> None:
    signed = [d for d in _deliveries() if SIGNATURE_HEADER in d["headers"]]  # type: ignore[operator]
    assert len(signed) == 30

    for delivery in signed:
        headers: dict[str, str] = delivery["headers"]  # type: ignore[assignment]
        body = base64.b64decode(str(delivery["body_b64"]))
        args = (headers[DELIVERY_ID_HEADER], headers[TIMESTAMP_HEADER])

        assert verify_signature(SECRET, *args, body, headers[SIGNATURE_HEADER])
        assert verify_signature(["old-secret", SECRET], *args, body, headers[SIGNATURE_HEADER])
        assert not verify_signature("whsec-wrong", *args, body, headers[SIGNATURE_HEADER])
        assert not verify_signature(SECRET, *args, body + b" ", headers[SIGNATURE_HEADER])
        assert not verify_signature(SECRET, args[0], str(int(args[1]) + 1), body, headers[SIGNATURE_HEADER])
        payload = MLflowWebhookPayload.model_validate_json(body)
        assert payload.data["name"]


def test_unsigned_capture_has_no_signature() -> None:
    unsigned = [d for d in _deliveries() if SIGNATURE_HEADER not in d["headers"]]  # type: ignore[operator]
    assert len(unsigned) == 1
