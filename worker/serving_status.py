"""What should be served (``model.ready``) against what each gateway serves (``gateway.status``).

Built only from the topics, never by asking a service. A gateway is live while its last
heartbeat or ack is younger than three heartbeat intervals; a live gateway routing another
version of an alias is lagging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import ConsumerRecord

from schemas.catalog import InvalidEventError, parse_any_event
from schemas.gateway_status import GatewayHeartbeat, GatewaySwapAcked
from schemas.model_ready import ModelReady, ServingStopped

LIVENESS_INTERVALS = 3
DEFAULT_INTERVAL_S = 5.0


@dataclass
class GatewaySeen:
    last_seen: datetime
    interval_s: float
    routes: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, alias) -> version

    def live(self, now: datetime) -> bool:
        return (now - self.last_seen).total_seconds() <= LIVENESS_INTERVALS * self.interval_s


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
    desired: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # -> (version, generation)
    generations: dict[str, int] = field(default_factory=dict)
    gateways: dict[str, GatewaySeen] = field(default_factory=dict)

    def apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = parse_any_event(
                record.value or b"", (ModelReady, ServingStopped, GatewayHeartbeat, GatewaySwapAcked)
            )
        except InvalidEventError:
            return
        if isinstance(event, ModelReady | ServingStopped):
            data = event.data
            if data.generation <= self.generations.get(data.model_name, -1):
                return
            self.generations[data.model_name] = data.generation
            key = (data.model_name, data.alias)
            if isinstance(event, ModelReady):
                self.desired[key] = (event.data.version, event.data.generation)
            else:
                self.desired.pop(key, None)
        elif isinstance(event, GatewayHeartbeat):
            beat = event.data
            self.gateways[beat.gateway_id] = GatewaySeen(
                last_seen=event.time,
                interval_s=beat.interval_s,
                routes={(r.model_name, r.alias): r.version for r in beat.routes},
            )
        elif isinstance(event, GatewaySwapAcked):
            ack = event.data
            seen = self.gateways.setdefault(ack.gateway_id, GatewaySeen(event.time, DEFAULT_INTERVAL_S))
            seen.last_seen = max(seen.last_seen, event.time)
            seen.routes[(ack.route.model_name, ack.route.alias)] = ack.route.version

    def report(self, now: datetime | None = None) -> list[AliasStatus]:
        now = now or datetime.now(UTC)
        live = {g: seen for g, seen in self.gateways.items() if seen.live(now)}
        silent = sorted(g for g in self.gateways if g not in live)
        rows = []
        for (model, alias), (version, _) in sorted(self.desired.items()):
            on = sorted(g for g, seen in live.items() if seen.routes.get((model, alias)) == version)
            lagging = {g: seen.routes.get((model, alias)) for g, seen in live.items() if g not in on}
            rows.append(AliasStatus(model, alias, version, on, lagging, silent))
        return rows
