"""Register (or update) the ingress's webhook in an MLflow tracking server, by name, idempotently.

MLflow is imported when a webhook is registered, not with this module: it takes seconds to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def webhook_events() -> list[Any]:
    """Every registry event the ingress policy has a rule for (the others are not subscribed to)."""
    from ingress.policy import RULES

    return list(RULES)


DEFAULT_WEBHOOK_NAME = "model-promoter"


@dataclass(frozen=True, slots=True)
class Registration:
    webhook_id: str
    created: bool


def register_webhook(tracking_uri: str, url: str, secret: str, *, name: str = DEFAULT_WEBHOOK_NAME) -> Registration:
    """Point MLflow's webhook ``name`` at ``url`` with ``secret``; create it if it does not exist."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    description = "model-promoter ingress: registry events become promotion requests"
    page_token: str | None = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=page_token)
        for webhook in page:
            if webhook.name == name:
                client.update_webhook(
                    webhook.webhook_id, url=url, events=webhook_events(), secret=secret, status="ACTIVE",
                    description=description,
                )  # fmt: skip
                return Registration(webhook.webhook_id, created=False)
        page_token = page.token
        if not page_token:
            break
    created = client.create_webhook(name=name, url=url, events=webhook_events(), secret=secret, description=description)
    return Registration(created.webhook_id, created=True)
