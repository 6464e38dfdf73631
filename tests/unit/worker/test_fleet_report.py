"""The fleet status a worker publishes: every endpoint's state, keyed so the gateway view skips it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from schemas.catalog import parse_event
from schemas.fleet_status import WorkerFleetStatus
from worker.fleet_repair import FleetRepairer
from worker.fleet_report import FleetStatusReporter
from worker.metrics import WorkerMetrics
from worker.model_loads import ModelLoads
from worker.serving_state import ServingState
from worker.settings import WorkerSettings


class DownEndpoint:
    def __init__(self, url: str) -> None:
        self.url = url


class FakeFleet:
    def __init__(self, *urls: str) -> None:
        self.endpoints = [DownEndpoint(url) for url in urls]


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, WorkerFleetStatus]] = []
        self.published = asyncio.Event()

    async def publish(self, message: bytes, topic: str, **kwargs: Any) -> None:
        self.sent.append((topic, kwargs.get("key"), parse_event(message, WorkerFleetStatus)))
        self.published.set()


async def test_the_report_names_every_endpoint_and_is_sent_again_on_change(tmp_path: Path) -> None:
    fixer = FleetRepairer(
        FakeFleet("t0:8000", "t1:8000"),  # type: ignore[arg-type]
        ServingState(),
        ModelLoads(),
        tmp_path,
        WorkerSettings(replica_id="w-0"),
        WorkerMetrics(),
    )
    publisher = FakePublisher()
    reporter = FleetStatusReporter(fixer, publisher, "gateway.status", "w-0", interval_s=60, max_prepared_versions=3)
    fixer.on_change = reporter.changed
    loop = asyncio.create_task(reporter.run_forever())
    try:
        await asyncio.wait_for(publisher.published.wait(), 5)
        publisher.published.clear()
        fixer._set("t1:8000", "down", set(), "Triton t1:8000 is unreachable")
        await asyncio.wait_for(publisher.published.wait(), 5)  # long before the 60 s beat
    finally:
        loop.cancel()
    (topic, key, first), (_, _, second) = publisher.sent
    assert (topic, key) == ("gateway.status", b"worker/w-0")
    assert first.source == "/model-promoter/worker/w-0/fleet"
    assert [(e.endpoint, e.state) for e in first.data.endpoints] == [("t0:8000", "repairing"), ("t1:8000", "repairing")]
    assert [(e.endpoint, e.state, e.error) for e in second.data.endpoints] == [
        ("t0:8000", "repairing", None),
        ("t1:8000", "down", "Triton t1:8000 is unreachable"),
    ]
    assert second.data.interval_s == 60
    assert second.data.max_prepared_versions == 3, "the bound `promoter status` applies to prepared versions"
