"""Retire old Triton models: unload them and remove their directories once nothing routes to them.

A model is a retirement candidate when no alias of the serving state routes to it and it is not
among the newest ``keep_loaded_versions`` versions of its registered model (kept for instant
rollback). A candidate is retired as soon as no *live* gateway routes to it (their acks and
heartbeats on ``gateway.status``), or once ``retire_grace_s`` passed since it stopped being
served, whatever the gateways say (a gateway that never acks must not pin a model forever).
A gateway is live while its last heartbeat is younger than three heartbeat intervals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import ConsumerRecord

from promoter.logging import get_logger
from schemas.catalog import InvalidEventError, parse_any_event
from schemas.gateway_status import GatewayHeartbeat, GatewaySwapAcked
from worker.errors import TransientFailure
from worker.metrics import WorkerMetrics
from worker.serving_state import ServingState
from worker.staging import remove_staged_model
from worker.triton_fleet import TritonFleet

log = get_logger(__name__)

LIVENESS_INTERVALS = 3


@dataclass
class GatewayView:
    last_seen: float
    interval_s: float
    routes: dict[tuple[str, str], str] = field(default_factory=dict)  # (model, alias) -> triton model


class GatewayRoutes:
    """What each gateway says it routes, from ``gateway.status``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.gateways: dict[str, GatewayView] = {}

    def apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = parse_any_event(record.value or b"", (GatewayHeartbeat, GatewaySwapAcked))
        except InvalidEventError as error:
            log.warning("unreadable gateway status", offset=record.offset, error=error.message)
            return
        now = self._clock()
        if isinstance(event, GatewayHeartbeat):
            data = event.data
            self.gateways[data.gateway_id] = GatewayView(
                last_seen=now,
                interval_s=data.interval_s,
                routes={(r.model_name, r.alias): r.triton_model_name for r in data.routes},
            )
        elif isinstance(event, GatewaySwapAcked):
            ack = event.data
            view = self.gateways.setdefault(ack.gateway_id, GatewayView(last_seen=now, interval_s=5.0))
            view.last_seen = now
            view.routes[(ack.route.model_name, ack.route.alias)] = ack.route.triton_model_name

    def live(self) -> dict[str, GatewayView]:
        now = self._clock()
        return {
            gateway: view
            for gateway, view in self.gateways.items()
            if now - view.last_seen <= LIVENESS_INTERVALS * view.interval_s
        }

    def routed_by_live_gateway(self, triton_model: str) -> bool:
        return any(triton_model in view.routes.values() for view in self.live().values())


class RetirementPlanner:
    """Decides which Triton models to retire now; the caller unloads and deletes them."""

    def __init__(
        self,
        state: ServingState,
        gateways: GatewayRoutes,
        *,
        keep_loaded_versions: int,
        grace_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.gateways = gateways
        self.keep = keep_loaded_versions
        self.grace_s = grace_s
        self._clock = clock
        self.unrouted_since: dict[str, float] = {}
        self.retired: set[str] = set()

    def due(self) -> list[str]:
        """Triton models to retire now."""
        now = self._clock()
        due: list[str] = []
        for model_name, versions in self.state.loaded_versions().items():
            newest = sorted(versions, key=lambda triton: versions[triton], reverse=True)[: self.keep]
            for triton_model in versions:
                if self.state.is_routed(triton_model) or triton_model in newest:
                    self.unrouted_since.pop(triton_model, None)
                    self.retired.discard(triton_model)  # served again (a rollback re-staged it)
                    continue
                if triton_model in self.retired:
                    continue
                since = self.unrouted_since.setdefault(triton_model, now)
                if not self.gateways.routed_by_live_gateway(triton_model) or now - since >= self.grace_s:
                    due.append(triton_model)
                else:
                    log.debug("retirement waits for gateways", model=model_name, triton_model=triton_model)
        return due

    def mark_retired(self, triton_model: str) -> None:
        self.retired.add(triton_model)
        self.unrouted_since.pop(triton_model, None)


class Retirer:
    """Carries out the planner's decisions: unload on every Triton, then delete the directory."""

    def __init__(
        self, planner: RetirementPlanner, fleet: TritonFleet, repository: Path, metrics: WorkerMetrics
    ) -> None:
        self.planner = planner
        self.fleet = fleet
        self.repository = repository
        self.metrics = metrics
        self._lock = asyncio.Lock()

    async def run_once(self) -> list[str]:
        retired: list[str] = []
        async with self._lock:
            for triton_model in self.planner.due():
                try:
                    await self.fleet.unload_everywhere(triton_model)
                except TransientFailure as error:
                    log.warning("retirement postponed: unload failed", triton_model=triton_model, error=error.message)
                    continue
                removed = await asyncio.to_thread(remove_staged_model, self.repository, triton_model)
                self.planner.mark_retired(triton_model)
                self.metrics.retirements.inc()
                retired.append(triton_model)
                log.info("retired old version", triton_model=triton_model, directory_removed=removed)
        return retired

    async def run_forever(self, interval_s: float) -> None:
        while True:
            with suppress(Exception):  # logged per model; a sweep must never kill the loop
                await self.run_once()
            await asyncio.sleep(interval_s)  # periodic sweep for grace periods and gateway silence
