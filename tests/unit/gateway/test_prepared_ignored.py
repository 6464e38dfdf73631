"""A gateway never routes a prepared version: ``model.prepared`` on the serving-state log changes nothing."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from structlog.testing import capture_logs

from gateway.log_follower import LogFollower
from gateway.metrics import GatewayMetrics
from gateway.routing_table import RoutingState
from runtime.settings import KafkaSettings
from tests.event_samples import all_events


def _record(value: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("model.ready", 0, offset, 0, 0, b"iris-clf", value, None, 0, len(value), [])


async def test_model_prepared_is_skipped_quietly_and_routes_nothing() -> None:
    samples = {event.type: event for event in all_events()}
    state = RoutingState()
    follower = LogFollower(KafkaSettings(), ["model.ready"], state, GatewayMetrics(), status=None)
    follower.ready.set()

    with capture_logs() as logs:
        await follower.apply(_record(samples["io.modelpromoter.model.prepared.v1"].to_json_bytes(), 0))

    assert state.table.routes() == []
    assert logs == [], "neither a warning nor a routing change"
    await follower.apply(_record(samples["io.modelpromoter.model.ready.v1"].to_json_bytes(), 1))
    assert state.table.routes(), "the same follower routes a model.ready"
