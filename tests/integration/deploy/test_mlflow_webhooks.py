"""MLflow from the local stack: registry calls through the server fire signed webhooks to loopback."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import poll_until
from schemas.mlflow_webhook import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from tests.worker_harness import register_iris

pytestmark = pytest.mark.integration

SECRET = "whsec-integration-" + uuid.uuid4().hex


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A loopback HTTP endpoint recording every POST as received (raw body, headers)."""

    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def find(self, entity: str, action: str, **data: str) -> Delivery | None:
        for delivery in self.snapshot():
            body = delivery.json()
            if (
                body.get("entity") == entity
                and body.get("action") == action
                and all(str(body["data"].get(k)) == v for k, v in data.items())
            ):
                return delivery
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server_box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            record = Delivery(self.path, {k: v for k, v in self.headers.items()}, body)
            with server_box[0].lock:
                server_box[0].deliveries.append(record)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    server_box.append(Receiver(url=f"http://127.0.0.1:{port}/hooks/mlflow"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server_box[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def tracking_uri(local_stack: LocalStack) -> Iterator[str]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(local_stack.mlflow_tracking_uri)
    try:
        yield local_stack.mlflow_tracking_uri
    finally:
        mlflow.set_tracking_uri(previous)


def _log_iris_model(name: str) -> str:
    mlflow.set_experiment(f"it-webhooks-{uuid.uuid4().hex[:8]}")
    return str(register_iris(mlflow.get_tracking_uri(), name))


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column:UserWarning")
def test_alias_webhook_is_delivered_signed(tracking_uri: str, receiver: Receiver) -> None:
    client = MlflowClient(tracking_uri)
    name = f"it-iris-{uuid.uuid4().hex[:8]}"
    webhook = client.create_webhook(
        name=f"it-{uuid.uuid4().hex[:8]}",
        url=receiver.url,
        events=["model_version_alias.created", "model_version.created"],
        secret=SECRET,
    )
    try:
        version = _log_iris_model(name)
        assert client.get_model_version(name, version).status == "READY"

        # The server caches the webhook list per event for MLFLOW_WEBHOOK_CACHE_TTL (1 s). Point a
        # throw-away alias until its delivery arrives: from then on this event sees our webhook.
        def warmed_up() -> bool:
            if receiver.find("model_version_alias", "created", name=name, alias="warmup"):
                return True
            client.set_registered_model_alias(name, "warmup", version)
            return False

        assert poll_until(warmed_up, 30, interval_s=0.5), f"no warm-up delivery: {receiver.snapshot()}"

        client.set_registered_model_alias(name, "champion", version)
        assert poll_until(
            lambda: receiver.find("model_version_alias", "created", name=name, alias="champion") is not None,
            30,
        ), f"no champion delivery within 30 s: {receiver.snapshot()}"
    finally:
        client.delete_webhook(webhook.webhook_id)

    delivery = receiver.find("model_version_alias", "created", name=name, alias="champion")
    assert delivery is not None
    assert delivery.path == "/hooks/mlflow"
    assert delivery.headers["Content-Type"].startswith("application/json")
    delivery_id = delivery.headers[DELIVERY_ID_HEADER]
    timestamp = delivery.headers[TIMESTAMP_HEADER]
    signature = delivery.headers[SIGNATURE_HEADER]
    assert signature.startswith("v1,")
    assert verify_signature(SECRET, delivery_id, timestamp, delivery.body, signature)
    assert verify_signature(["old-secret", SECRET], delivery_id, timestamp, delivery.body, signature)
    assert not verify_signature("wrong-secret", delivery_id, timestamp, delivery.body, signature)
    tampered = delivery.body.replace(b'"champion"', b'"challenger"')
    assert tampered != delivery.body
    assert not verify_signature(SECRET, delivery_id, timestamp, tampered, signature)
    assert not verify_signature(SECRET, str(uuid.uuid4()), timestamp, delivery.body, signature)
    assert delivery.json()["data"] == {"name": name, "alias": "champion", "version": version}


def test_test_webhook_sends_a_signed_example(tracking_uri: str, receiver: Receiver) -> None:
    client = MlflowClient(tracking_uri)
    webhook = client.create_webhook(
        name=f"it-{uuid.uuid4().hex[:8]}",
        url=receiver.url,
        events=["model_version_alias.created"],
        secret=SECRET,
    )
    try:
        result = client.test_webhook(webhook.webhook_id)
    finally:
        client.delete_webhook(webhook.webhook_id)
    assert result.success, result
    assert result.response_status == 200
    [delivery] = receiver.snapshot()  # synchronous: already received when test_webhook returns
    assert delivery.json()["entity"] == "model_version_alias"
    assert verify_signature(
        SECRET,
        delivery.headers[DELIVERY_ID_HEADER],
        delivery.headers[TIMESTAMP_HEADER],
        delivery.body,
        delivery.headers[SIGNATURE_HEADER],
    )
    assert not verify_signature(
        "wrong-secret",
        delivery.headers[DELIVERY_ID_HEADER],
        delivery.headers[TIMESTAMP_HEADER],
        delivery.body,
        delivery.headers[SIGNATURE_HEADER],
    )
