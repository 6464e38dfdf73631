"""What should be served (``model.ready``) against what each gateway serves (``gateway.status``).

Built only from the topics, never by asking a service. Which gateways are live comes from
:class:`worker.gateway_view.GatewayView`; a live gateway routing another version of an alias is
lagging, one no longer live is silent. Each Triton endpoint's state (in sync, repairing, down)
comes from the workers' fleet reports on ``gateway.status``: the freshest report of a live
worker replica (silent for less than three of its intervals) wins. Prepared versions are bounded per
model as the workers bound them: by the ``max_prepared_versions`` of their freshest report (the default
until one says otherwise); a report naming another bound replays the serving-state log under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord

from schemas.catalog import InvalidEventError, parse_any_event
from schemas.fleet_status import EndpointStatus, WorkerFleetStatus
from schemas.gateway_status import GatewayHeartbeat, GatewaySwapAcked
from schemas.model_ready import ModelReady, ModelReadyData, ServingStopped, ServingStoppedData
from schemas.prepared_version import ModelPrepared, ModelPreparedData
from schemas.topics import GATEWAY_STATUS, MODEL_READY
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


def prepared_line(record: ModelPreparedData) -> str:
    """One prepared version for ``promoter status``: loaded everywhere, routed by no alias, until when."""
    return (
        f"{record.model_name} v{record.version} prepared as {record.triton_model_name} (routed by no alias; "
        f"unloaded at {record.expires_at:%Y-%m-%d %H:%M:%S} UTC unless an alias takes it)"
    )


LIVENESS_INTERVALS = 3
STATE_WORDS = {"in_sync": "in sync", "repairing": "repairing", "down": "down"}


@dataclass(frozen=True)
class EndpointRow:
    """One Triton endpoint as the freshest live worker report saw it."""

    status: EndpointStatus
    reported_by: str
    reported_at: datetime

    def details(self) -> list[str]:
        """What is wrong beside the state: the models it misses, the error it answered."""
        missing = [f"missing: {', '.join(self.status.missing)}"] if self.status.missing else []
        return missing + ([self.status.error] if self.status.error else [])

    def line(self) -> str:
        text = f"Triton {self.status.endpoint} — {STATE_WORDS[self.status.state]} since {self.status.since:%H:%M:%S}"
        text += "".join(f"; {detail}" for detail in self.details())
        return f"{text} (worker {self.reported_by})"

    def as_json(self) -> dict[str, Any]:
        return {
            **self.status.model_dump(mode="json"),
            "reported_by": self.reported_by,
            "reported_at": self.reported_at.isoformat(),
        }


ServingLogRecord = ModelReadyData | ServingStoppedData | ModelPreparedData


def _follow(state: ServingState, record: ServingLogRecord) -> None:
    if isinstance(record, ModelPreparedData):
        state.prepare(record)
    else:
        state.apply(record)


@dataclass
class ServingStatus:
    desired: ServingState = field(default_factory=ServingState)  # what model.ready says should be served
    gateways: GatewayView = field(default_factory=GatewayView)
    fleet_reports: dict[str, WorkerFleetStatus] = field(default_factory=dict)  # worker replica -> latest
    serving_log: list[ServingLogRecord] = field(default_factory=list)  # model.ready in order: replayed on a new bound

    def apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = parse_any_event(record.value or b"", MODEL_READY.event_types + GATEWAY_STATUS.event_types)
        except InvalidEventError:
            return
        if isinstance(event, ModelReady | ServingStopped | ModelPrepared):
            self.serving_log.append(event.data)
            _follow(self.desired, event.data)
        elif isinstance(event, GatewayHeartbeat | GatewaySwapAcked):
            self.gateways.apply_event(event)
        elif isinstance(event, WorkerFleetStatus):
            seen = self.fleet_reports.get(event.data.replica_id)
            if seen is None or seen.time <= event.time:
                self.fleet_reports[event.data.replica_id] = event
                self._bound_prepared(self.prepared_bound())

    def prepared_bound(self) -> int:
        """Prepared versions per model the workers hold: their freshest report's bound, else the default."""
        reports = [r for r in self.fleet_reports.values() if r.data.max_prepared_versions is not None]
        if not reports:
            return ServingState().max_prepared_per_model
        freshest = max(reports, key=lambda report: report.time)
        assert freshest.data.max_prepared_versions is not None  # noqa: S101 - filtered above
        return freshest.data.max_prepared_versions

    def _bound_prepared(self, bound: int) -> None:
        if bound == self.desired.max_prepared_per_model:
            return
        desired = ServingState(max_prepared_per_model=bound)  # which version a newer one pushed out depends on it
        for record in self.serving_log:
            _follow(desired, record)
        self.desired = desired

    def endpoints(self, now: datetime | None = None) -> list[EndpointRow]:
        """Each Triton endpoint a live worker replica reports, from its freshest report."""
        now = now or datetime.now(UTC)
        rows: dict[str, EndpointRow] = {}
        for replica, report in self.fleet_reports.items():
            if (now - report.time).total_seconds() > LIVENESS_INTERVALS * report.data.interval_s:
                continue  # a silent replica's view is stale
            for status in report.data.endpoints:
                known = rows.get(status.endpoint)
                if known is None or known.reported_at < report.time:
                    rows[status.endpoint] = EndpointRow(status, replica, report.time)
        return [rows[endpoint] for endpoint in sorted(rows)]

    def endpoint_lines(self, now: datetime | None = None) -> list[str]:
        """Text for ``promoter status``: one line per Triton endpoint, or why there is none."""
        rows = self.endpoints(now)
        if rows:
            return [row.line() for row in rows]
        if self.fleet_reports:
            return ["Triton endpoints: no live worker has reported them lately"]
        return ["Triton endpoints: no worker has reported them yet"]

    def prepared(self, now: datetime | None = None) -> list[ModelPreparedData]:
        """Prepared versions awaiting an alias, not expired, at most the workers' bound per model."""
        held = self.desired.prepared_to_hold(now)
        return [record for name, record in sorted(self.desired.awaiting_alias.items()) if name in held]

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
