"""What each gateway replica says it routes (``gateway.status``), and which replicas are live.

Liveness is judged by event time: a gateway is live while its last heartbeat or ack is younger
than three heartbeat intervals, so replaying old records at start-up never makes a long-gone
gateway look alive. Used by retirement (may this Triton model go?) and by ``promoter status``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import ConsumerRecord

from runtime.logging import get_logger
from schemas.catalog import InvalidEventError, parse_any_event
from schemas.envelope import utc_now
from schemas.gateway_status import GatewayHeartbeat, GatewaySwapAcked, ServedRoute

log = get_logger(__name__)

LIVENESS_INTERVALS = 3
DEFAULT_INTERVAL_S = 5.0


@dataclass
class GatewaySeen:
    last_seen: datetime
    interval_s: float
    routes: dict[tuple[str, str], ServedRoute] = field(default_factory=dict)  # (model, alias) -> route

    def live(self, now: datetime) -> bool:
        return (now - self.last_seen).total_seconds() <= LIVENESS_INTERVALS * self.interval_s


class GatewayView:
    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock
        self.gateways: dict[str, GatewaySeen] = {}

    def apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one ``gateway.status`` record (unreadable ones are logged and skipped)."""
        try:
            event = parse_any_event(record.value or b"", (GatewayHeartbeat, GatewaySwapAcked))
        except InvalidEventError as error:
            log.warning("unreadable gateway status", offset=record.offset, error=error.message)
            return
        assert isinstance(event, GatewayHeartbeat | GatewaySwapAcked)  # noqa: S101 - narrowed by `allowed`
        self.apply_event(event)

    def apply_event(self, event: GatewayHeartbeat | GatewaySwapAcked) -> None:
        if isinstance(event, GatewayHeartbeat):
            beat = event.data
            self.gateways[beat.gateway_id] = GatewaySeen(
                last_seen=event.time,
                interval_s=beat.interval_s,
                routes={(r.model_name, r.alias): r for r in beat.routes},
            )
            return
        ack = event.data
        seen = self.gateways.setdefault(ack.gateway_id, GatewaySeen(event.time, DEFAULT_INTERVAL_S))
        seen.last_seen = max(seen.last_seen, event.time)
        seen.routes[(ack.route.model_name, ack.route.alias)] = ack.route

    def live(self, now: datetime | None = None) -> dict[str, GatewaySeen]:
        now = now or self._clock()
        return {gateway: seen for gateway, seen in self.gateways.items() if seen.live(now)}

    def routed_by_live_gateway(self, triton_model: str) -> bool:
        return any(
            route.triton_model_name == triton_model for seen in self.live().values() for route in seen.routes.values()
        )
