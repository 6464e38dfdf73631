"""Retire old Triton models: unload them and remove their directories once nothing routes to them.

A model is a retirement candidate when it is not among what every endpoint should hold
(:func:`worker.fleet_repair.models_to_hold`: routed, the newest ``keep_loaded_versions`` versions
of its registered model kept for instant rollback, prepared and awaiting an alias, or being loaded
by a promotion). A prepared version no alias took before it expired (or that newer preparations
pushed out of the per-model bound) is a candidate like any other. A candidate
is retired as soon as no *live* gateway routes to it (their acks and heartbeats on
``gateway.status``), or once ``retire_grace_s`` passed since it stopped being
served, whatever the gateways say (a gateway that never acks must not pin a model forever).
Which gateways are live and what they route comes from :class:`worker.gateway_view.GatewayView`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from runtime.logging import get_logger
from schemas.envelope import utc_now
from worker.errors import TransientFailure
from worker.fleet_repair import models_to_hold
from worker.gateway_view import GatewayView
from worker.metrics import WorkerMetrics
from worker.model_loads import ModelLoads
from worker.serving_state import ServingState
from worker.staging import StagingLease, remove_staged_model
from worker.triton_fleet import TritonFleet

log = get_logger(__name__)


class RetirementPlanner:
    """Decides which Triton models to retire now; the caller unloads and deletes them."""

    def __init__(
        self,
        state: ServingState,
        gateways: GatewayView,
        *,
        keep_loaded_versions: int,
        grace_s: float,
        loads: ModelLoads | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.state = state
        self.gateways = gateways
        self.loads = loads or ModelLoads()  # a model a promotion is loading is never retired under it
        self.keep = keep_loaded_versions
        self.grace_s = grace_s
        self._clock = clock
        self._wall_clock = wall_clock  # prepared versions expire at a wall-clock time carried by their record
        self.unrouted_since: dict[str, float] = {}
        self.retired: set[str] = set()

    def due(self) -> list[str]:
        """Triton models to retire now."""
        now = self._clock()
        held = models_to_hold(
            self.state, keep_loaded_versions=self.keep, in_flight=self.loads.in_flight(), now=self._wall_clock()
        )
        due: list[str] = []
        for model_name, versions in self.state.staged_versions().items():
            for triton_model in versions:
                if triton_model in held:
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

    def never_served(self, triton_model: str) -> bool:
        """True for a prepared version no alias ever took (retired because it expired or was pushed out)."""
        return triton_model in self.state.prepared and triton_model not in self.state.by_triton_model

    def mark_retired(self, triton_model: str) -> None:
        self.retired.add(triton_model)
        self.unrouted_since.pop(triton_model, None)


class Retirer:
    """Carries out the planner's decisions: unload on every Triton, then delete the directory."""

    def __init__(
        self,
        planner: RetirementPlanner,
        fleet: TritonFleet,
        repository: Path,
        metrics: WorkerMetrics,
        lease: StagingLease | None = None,
    ) -> None:
        self.planner = planner
        self.fleet = fleet
        self.repository = repository
        self.lease = lease
        self.metrics = metrics
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        """Sweep now rather than at the next interval (a batch of promotions just finished)."""
        self._wake.set()

    async def run_once(self) -> list[str]:
        """Retire every model due now; one model's failure neither stops the others nor raises."""
        retired: list[str] = []
        async with self._lock:
            for triton_model in self.planner.due():
                try:
                    if await self._retire(triton_model):
                        retired.append(triton_model)
                except Exception:  # a bug or a broken repository: counted, logged, retried next sweep
                    self._unexpected("retirement failed; retried at the next sweep", triton_model=triton_model)
        return retired

    async def _retire(self, triton_model: str) -> bool:
        try:
            await self.fleet.unload_everywhere(triton_model)
        except TransientFailure as error:
            log.warning("retirement postponed: unload failed", triton_model=triton_model, error=error.message)
            return False
        removed = await asyncio.to_thread(remove_staged_model, self.repository, triton_model, self.lease)
        self.planner.mark_retired(triton_model)
        self.metrics.retirements.inc()
        if self.planner.never_served(triton_model):
            self.metrics.prepared_retired.inc()
            log.info("retired a prepared version no alias took", triton_model=triton_model, directory_removed=removed)
        else:
            log.info("retired old version", triton_model=triton_model, directory_removed=removed)
        return True

    def _unexpected(self, event: str, **context: str) -> None:
        self.metrics.retirement_errors.inc()
        log.exception(event, **context)

    async def run_forever(self, interval_s: float) -> None:
        """Sweep when nudged, and every ``interval_s`` (grace periods, gateway silence, prepared versions expiring)."""
        while True:
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:  # the planner itself failed; a sweep must never kill the loop
                self._unexpected("retirement sweep failed; retried at the next sweep")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval_s)
