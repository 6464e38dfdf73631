"""Call a gateway's ``/predict`` for the Try-a-model page (a blocking call: Streamlit runs pages in a thread)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from console.call_examples import predict_url

PREDICT_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class PredictAnswer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def error(self) -> str:
        """The gateway's ``{"error": ...}`` message (it names the field on a 422)."""
        return str(self.body.get("error", self.body))


def predict(gateway_url: str, model: str, alias: str, record: dict[str, Any]) -> PredictAnswer:
    """POST one record; a gateway that cannot be reached is an answer too (status 0, saying so)."""
    try:
        response = httpx.post(predict_url(gateway_url, model, alias), json=record, timeout=PREDICT_TIMEOUT_S)
    except httpx.HTTPError as error:
        return PredictAnswer(0, {"error": f"cannot reach the gateway at {gateway_url}: {error}"})
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:500]}
    return PredictAnswer(response.status_code, body if isinstance(body, dict) else {"answer": body})
