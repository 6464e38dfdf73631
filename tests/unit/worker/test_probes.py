"""The worker's probes answer their failures as ``{"error": "..."}``, like every HTTP service (no broker)."""

from __future__ import annotations

import httpx

from runtime.settings import KafkaSettings, MLflowSettings, TopicSettings, TritonSettings
from worker.app import WorkerConfig, build_app
from worker.settings import WorkerSettings


async def test_probe_failures_say_what_is_missing_in_the_error_shape() -> None:
    config = WorkerConfig(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        TopicSettings(),
        MLflowSettings(),
        TritonSettings(),
        WorkerSettings(),
    )
    transport = httpx.ASGITransport(app=build_app(config))  # not started: no broker connection, no replay
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as http:
        ready = await http.get("/ready")
        health = await http.get("/health")

    assert (ready.status_code, ready.json()) == (503, {"error": "replaying the serving-state log"})
    assert ready.headers["content-type"] == "application/json"
    assert health.status_code == 500
    assert health.json()["error"].startswith("the Kafka broker did not answer a ping")
