"""The wire contract of MLflow model-registry webhooks (MLflow 3.x), and its HMAC signature.

Headers: ``X-MLflow-Delivery-Id`` (uuid4, reused by retries), ``X-MLflow-Timestamp`` (unix
seconds), ``X-MLflow-Signature: v1,<base64 HMAC-SHA256>``. The signature covers
``f"{delivery_id}.{timestamp}.".encode() + raw_body``, keyed with the secret's UTF-8 bytes.
Verify against the raw bytes as received, never against re-serialised JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"
SIGNATURE_SCHEME = "v1"


def compute_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` header value MLflow sends for this delivery."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return f"{SIGNATURE_SCHEME},{base64.b64encode(digest).decode()}"


def verify_signature(
    secrets: str | Iterable[str], delivery_id: str, timestamp: str, body: bytes, signature: str
) -> bool:
    """True when ``signature`` matches ``body`` under any of ``secrets`` (two during a rotation).

    Compares in constant time and checks every secret, so timing reveals nothing about which matched.
    """
    candidates = [secrets] if isinstance(secrets, str) else list(secrets)
    matched = False
    for secret in candidates:
        expected = compute_signature(secret, delivery_id, timestamp, body)
        matched |= hmac.compare_digest(expected.encode(), signature.encode())
    return matched


class MLflowWebhookPayload(BaseModel):
    """The JSON body MLflow posts. ``data`` differs per entity/action and is read loosely."""

    model_config = ConfigDict(extra="ignore")

    entity: Literal["registered_model", "model_version", "model_version_tag", "model_version_alias", "prompt"] | str
    action: str
    timestamp: str
    data: dict[str, Any]
