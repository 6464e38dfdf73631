"""Every error the ingress answers is ``{"error": "..."}``, FastAPI's own ones included (no Kafka needed)."""

from __future__ import annotations

import httpx
from pydantic import BaseModel, SecretStr

from ingress.app import create_app
from ingress.settings import IngressSettings
from runtime.settings import KafkaSettings


class Probe(BaseModel):
    alias: str
    weight: int


def client() -> httpx.AsyncClient:
    app = create_app(
        IngressSettings(webhook_secrets=[SecretStr("whsec-test")]), KafkaSettings(bootstrap_servers="127.0.0.1:1")
    )

    @app.post("/probe")  # a validated body, to see FastAPI's own 422 in the ingress's shape
    async def probe(body: Probe) -> dict[str, str]:
        return {"alias": body.alias}

    transport = httpx.ASGITransport(app=app)  # runs no lifespan: no Kafka connection is attempted
    return httpx.AsyncClient(transport=transport, base_url="http://ingress")


async def test_the_ingress_answers_every_error_as_one_error_key() -> None:
    async with client() as http:
        unsigned = await http.post("/webhooks/mlflow", content=b"{}")
        not_ready = await http.get("/ready")
        unknown = await http.get("/nowhere")
        wrong_method = await http.get("/webhooks/mlflow")
        invalid = await http.post("/probe", json={"alias": "champion", "weight": "heavy"})
        missing = await http.post("/probe", json={"weight": 3})

    assert unsigned.status_code == 401
    assert unsigned.json()["error"].startswith("missing header X-MLflow-Delivery-Id")
    assert (not_ready.status_code, not_ready.json()) == (503, {"error": "not connected to Kafka yet"})
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"error": "Method Not Allowed"})
    assert wrong_method.headers["allow"] == "POST"
    assert invalid.status_code == 422
    assert invalid.json() == {
        "error": "body.weight: Input should be a valid integer, unable to parse string as an integer"
    }
    assert (missing.status_code, missing.json()) == (422, {"error": "body.alias: Field required"})
