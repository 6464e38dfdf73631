"""The log follower applies each fetched batch as one snapshot; it acks and counts changes only once caught up."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from aiokafka import ConsumerRecord

from gateway.acks import StatusPublisher
from gateway.log_follower import LogFollower
from gateway.metrics import GatewayMetrics
from gateway.routing_table import Change, RoutingState
from runtime.settings import KafkaSettings
from schemas.model_ready import ModelReady
from tests.unit.gateway.test_routing import ready


class RecordingStatus:
    def __init__(self) -> None:
        self.acked: list[Change] = []

    async def ack(self, change: Change) -> None:
        self.acked.append(change)


def record(value: bytes) -> ConsumerRecord[bytes, bytes]:
    return cast(ConsumerRecord[bytes, bytes], SimpleNamespace(topic="model.ready", value=value))


def ready_record(version: int, generation: int, model: str = "m") -> ConsumerRecord[bytes, bytes]:
    data = ready(version, generation=generation, model=model)
    return record(ModelReady(source="/tests", subject=model, data=data).to_json_bytes())


def follower() -> tuple[LogFollower, RecordingStatus, list[Any]]:
    status = RecordingStatus()
    state = RoutingState()
    snapshots: list[Any] = []
    original = state.apply_all

    def recording_apply_all(events: Any) -> Any:
        snapshots.append(len(events))
        return original(events)

    state.apply_all = recording_apply_all  # type: ignore[method-assign]
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    return (
        LogFollower(kafka, ["model.ready"], state, GatewayMetrics(), cast(StatusPublisher, status)),
        status,
        snapshots,
    )


def metric(follower: LogFollower, name: str) -> float:
    return follower.metrics.registry.get_sample_value(name) or 0.0


async def test_a_replayed_batch_builds_the_table_at_once_without_acks() -> None:
    log, status, snapshots = follower()
    batch = [ready_record(1, 0), record(b"not json"), ready_record(1, 0, model="n"), ready_record(2, 1)]
    await log.apply_batch(batch)
    assert snapshots == [3]  # one snapshot for the readable records of the batch
    assert {name: model.routes["champion"].version for name, model in log.state.table.models.items()} == {
        "m": 2,
        "n": 1,
    }
    assert status.acked == []
    assert metric(log, "gateway_log_records_total") == 4


async def test_once_caught_up_every_change_is_acked_and_stale_ones_counted() -> None:
    log, status, _ = follower()
    await log.apply(ready_record(1, 0))
    log.ready.set()
    await log.apply_batch([ready_record(2, 1), ready_record(1, 0), ready_record(1, 0, model="n")])
    assert [(change.model_name, change.route.version if change.route else None) for change in status.acked] == [
        ("m", 2),
        ("n", 1),
    ]
    assert status.acked[0].previous_version == 1
    assert metric(log, "gateway_stale_events_total") == 1
    assert metric(log, "gateway_routes") == 2
