"""Helpers for tests of the webhook ingress as a real process: start it, sign deliveries as MLflow does."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploy.stack.app_processes import ingress_spec
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from schemas.mlflow_webhook import compute_signature


@dataclass
class Ingress:
    url: str
    secret: str
    env: dict[str, str]
    process: ManagedProcess

    def requests_topic(self) -> str:
        return self.env["PROMOTER_TOPIC_PROMOTION_REQUESTED"]


@contextmanager
def running_ingress(env: dict[str, str], run_dir: Path, secret: str) -> Iterator[Ingress]:
    """A ``promoter-ingress`` process with ``env`` and webhook secret ``secret``, ready (connected to Kafka)."""
    (port,) = free_ports(1)
    full_env = {**env, "PROMOTER_INGRESS_WEBHOOK_SECRETS": secret}
    run_dir.mkdir(parents=True, exist_ok=True)
    process = ManagedProcess(ingress_spec(full_env, port=port, run_dir=run_dir), run_dir / "ingress.log")
    process.start()
    try:
        wait_all_ready([process])
        yield Ingress(url=f"http://127.0.0.1:{port}", secret=secret, env=full_env, process=process)
    finally:
        stop_all([process])


def signed_delivery(secret: str, payload: Mapping[str, object]) -> tuple[dict[str, str], bytes]:
    """Headers and body of one MLflow webhook delivery of ``payload``, signed with ``secret``."""
    delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time()))
    body = json.dumps(payload).encode()
    headers = {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": compute_signature(secret, delivery_id, timestamp, body),
        "Content-Type": "application/json",
    }
    return headers, body
