"""What should be served (``model.ready``) against what each gateway serves (``gateway.status``).

Built only from the topics, never by asking a service. Which gateways are live comes from
:class:`worker.gateway_view.GatewayView`; a live gateway routing another version of an alias is
lagging, one no longer live is silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import ConsumerRecord

from schemas.catalog import InvalidEventError, parse_any_event
from schemas.gateway_status import GatewayHeartbeat, GatewaySwapAcked
from schemas.model_ready import ModelReady, ServingStopped
from worker.gateway_view import GatewayView
from worker.serving_state import ServingState


@dataclass(frozen=True)
class AliasStatus:
    model: str
    alias: str
    version: int
    on_version: list[str]
    lagging: dict[str, int | None]  # live gateway -> what it routes instead
    silent: list[str]

    def line(self) -> str:
        live = len(self.on_version) + len(self.lagging)
        text = f"{self.model}@{self.alias} v{self.version} — {len(self.on_version)}/{live} gateways"
        if self.lagging:
            text += "; lagging: " + ", ".join(
                f"{g} ({'v' + str(v) if v is not None else 'not routed'})" for g, v in sorted(self.lagging.items())
            )
        if self.silent:
            text += "; silent: " + ", ".join(sorted(self.silent))
        return text


@dataclass
class ServingStatus:
    desired: ServingState = field(default_factory=ServingState)  # what model.ready says should be served
    gateways: GatewayView = field(default_factory=GatewayView)

    def apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = parse_any_event(
                record.value or b"", (ModelReady, ServingStopped, GatewayHeartbeat, GatewaySwapAcked)
            )
        except InvalidEventError:
            return
        if isinstance(event, ModelReady | ServingStopped):
            self.desired.apply(event.data)
        elif isinstance(event, GatewayHeartbeat | GatewaySwapAcked):
            self.gateways.apply_event(event)

    def report(self, now: datetime | None = None) -> list[AliasStatus]:
        now = now or datetime.now(UTC)
        live = self.gateways.live(now)
        silent = sorted(g for g in self.gateways.gateways if g not in live)
        rows = []
        for (model, alias), served in sorted(self.desired.routes.items()):
            version = served.version
            routed = {g: seen.routes.get((model, alias)) for g, seen in live.items()}
            on = sorted(g for g, route in routed.items() if route is not None and route.version == version)
            lagging = {g: route.version if route else None for g, route in routed.items() if g not in on}
            rows.append(AliasStatus(model, alias, version, on, lagging, silent))
        return rows
