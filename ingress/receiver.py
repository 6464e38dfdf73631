"""Turn one MLflow webhook delivery into at most one promotion request on Kafka, and say how it went.

Order of checks: headers present, signature over the raw body (any configured secret), timestamp
window, payload, mapping policy, duplicate delivery id, then publish and wait for the broker's
ack. Nothing unverified reaches Kafka.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from ingress.deliveries import DeliveryLog, event_id_for
from ingress.policy import Ignored, UnusableEventError, to_request
from ingress.settings import IngressSettings
from runtime.http_errors import error_body
from runtime.logging import bind_event, get_logger
from schemas.field_problems import describe, field_problems
from schemas.mlflow_webhook import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    MLflowWebhookPayload,
    verify_signature,
)
from schemas.prepared_version import PrepareRequested, PrepareRequestedData
from schemas.promotion_requested import PromotionRequested

log = get_logger(__name__)

OUTCOMES = ("accepted", "duplicate", "ignored", "unauthorized", "invalid", "unavailable")
SOURCE = "/model-promoter/ingress/mlflow"

Publish = Callable[[PromotionRequested | PrepareRequested], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer MLflow: status code and JSON body."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


class WebhookReceiver:
    def __init__(
        self,
        settings: IngressSettings,
        publish: Publish,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.webhook_secrets:
            raise ValueError("PROMOTER_INGRESS_WEBHOOK_SECRETS is required: unsigned webhooks are never accepted")
        self._secrets = [secret.get_secret_value() for secret in settings.webhook_secrets]
        self._settings = settings
        self._publish = publish
        self._clock = clock
        self._deliveries = DeliveryLog(settings.dedupe_window)
        self._counted = Counter(
            "promoter_ingress_deliveries_total", "MLflow webhook deliveries by outcome.", ["outcome"], registry=registry
        )

    def _refusal(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """Why the delivery is not verifiably from MLflow, or None."""
        values = {name: headers.get(name, "") for name in (DELIVERY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)}
        missing = [name for name, value in values.items() if not value]
        if missing:
            return f"missing header {', '.join(missing)}: only signed MLflow webhooks are accepted"
        timestamp = values[TIMESTAMP_HEADER]
        if not verify_signature(self._secrets, values[DELIVERY_ID_HEADER], timestamp, body, values[SIGNATURE_HEADER]):
            return f"{SIGNATURE_HEADER} does not match the body under the configured secret"
        try:
            skew = abs(self._clock() - int(timestamp))
        except ValueError:
            return f"{TIMESTAMP_HEADER} must be unix seconds, got {timestamp[:40]!r}"
        if skew > self._settings.max_timestamp_skew_s:
            allowed = self._settings.max_timestamp_skew_s
            return f"{TIMESTAMP_HEADER} is {skew:.0f} s from now; allowed skew is {allowed:g} s"
        return None

    async def receive(self, headers: Mapping[str, str], body: bytes) -> Answer:
        refusal = self._refusal(headers, body)
        delivery_id = headers.get(DELIVERY_ID_HEADER, "")
        if refusal is not None:
            self._counted.labels("unauthorized").inc()
            log.warning("webhook refused", delivery_id=delivery_id, reason=refusal)
            return Answer(401, error_body(refusal))
        event_id = event_id_for(delivery_id)
        with bind_event(event_id, delivery_id=delivery_id):
            return await self._accept(delivery_id, event_id, body)

    async def _accept(self, delivery_id: str, event_id: str, body: bytes) -> Answer:
        try:
            payload = MLflowWebhookPayload.model_validate_json(body)
            outcome = to_request(payload, delivery_id, self._settings)
        except ValidationError as error:
            return self._invalid(describe(field_problems(error.errors(), root="body")))
        except UnusableEventError as error:
            return self._invalid(str(error))
        if isinstance(outcome, Ignored):
            self._counted.labels("ignored").inc()
            log.info("webhook ignored", entity=payload.entity, action=payload.action, reason=outcome.reason)
            return Answer(200, {"status": "ignored", "reason": outcome.reason})
        state = self._deliveries.claim(delivery_id)
        if state != "new":
            self._counted.labels("duplicate").inc()
            log.info("duplicate delivery", state=state)
            # In flight elsewhere: 409 makes MLflow retry later; done: 200, it was published.
            return Answer(200 if state == "done" else 409, {"status": "duplicate", "event_id": event_id})
        event: PromotionRequested | PrepareRequested = (
            PrepareRequested(id=event_id, source=SOURCE, subject=outcome.model_name, data=outcome)
            if isinstance(outcome, PrepareRequestedData)
            else PromotionRequested(id=event_id, source=SOURCE, subject=outcome.model_name, data=outcome)
        )
        try:
            await self._publish(event)
        except (Exception, asyncio.CancelledError) as error:
            self._deliveries.release(delivery_id)
            self._counted.labels("unavailable").inc()
            log.warning("Kafka did not take the event", error=str(error) or type(error).__name__)
            return Answer(503, error_body("Kafka is unavailable; MLflow will retry this delivery"))
        self._deliveries.complete(delivery_id)
        self._counted.labels("accepted").inc()
        if isinstance(outcome, PrepareRequestedData):
            log.info("preparation requested", model=outcome.model_name, version=outcome.version)
        else:
            log.info("promotion requested", model=outcome.model_name, alias=outcome.alias, action=outcome.action)
        return Answer(202, {"status": "accepted", "event_id": event_id})

    def _invalid(self, detail: str) -> Answer:
        self._counted.labels("invalid").inc()
        log.warning("webhook payload unusable", error=detail)
        return Answer(422, error_body(detail))
