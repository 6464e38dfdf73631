"""The ingress policy's rules are exactly the MLflow webhook events the CLI subscribes to."""

from __future__ import annotations

from mlflow.entities.webhook import WebhookEvent

from ingress.policy import RULES
from promoter_cli.webhook_registration import webhook_events


def test_every_rule_is_a_real_mlflow_webhook_event_and_is_subscribed() -> None:
    mlflow_events = {str(WebhookEvent(*kind.split("."))) for kind in RULES}  # raises on an unknown event
    assert mlflow_events == set(RULES) == set(webhook_events())
