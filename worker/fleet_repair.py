"""Keep every Triton endpoint holding what it should, and reload what a restarted endpoint lost.

What every endpoint should hold: each routed version (the serving state rebuilt from
``model.ready``), the newest ``keep_loaded_versions`` versions of each model (what retirement
keeps for instant rollback), the prepared versions awaiting an alias, and whatever a promotion of
this process is loading right now.
Triton cannot push, so each endpoint's repository index is read every check interval (one
request per endpoint): no answer, or a refusal of the worker's admin token, means the endpoint is
**down** (the error names the setting to fix); a model it should hold that
is not READY (or LOADING) means it restarted or lost it, and the endpoint is **repairing**
until the model is loaded again from its staged directory (immutable, still in the repository)
with the load deadline and the parity proof of a promotion. Otherwise it is **in sync**.

At most one load of a Triton model at a time: the repairer takes the same per-model lock as the
promotion pipeline (:class:`worker.model_loads.ModelLoads`), and re-checks under it that the
model is still wanted and still missing. Every worker replica repairs: a second replica's load of
a model that is already READY is a no-op for Triton (the staged folder never changes), so no
leader is needed, and a repair never waits for a replica that may itself be gone. A failed
repair of a model on an endpoint is retried with backoff; an endpoint that comes back resets it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from runtime.logging import get_logger
from schemas.envelope import utc_now
from schemas.fleet_status import EndpointState, EndpointStatus
from schemas.model_ready import ServableVersionData, SignatureSummary
from worker.errors import PermanentFailure, PromotionFailure, TransientFailure
from worker.metrics import ENDPOINT_STATES, WorkerMetrics
from worker.model_loads import ModelLoads
from worker.parity import ParityCase, prepare_case
from worker.proof import prove_on
from worker.serving_state import ServingState
from worker.settings import WorkerSettings
from worker.shared_runtime import load_runtime_first
from worker.staging import MODEL_SUBDIR, VERSION_DIR, recorded_digest
from worker.triton_fleet import TritonEndpoint, TritonFleet
from worker.triton_naming import is_triton_model_name

log = get_logger(__name__)

PRESENT_STATES = frozenset({"READY", "LOADING"})  # LOADING: a promotion or another replica is on it
MAX_REPAIR_BACKOFF_S = 60.0


def models_to_hold(
    state: ServingState, *, keep_loaded_versions: int, in_flight: set[str], now: datetime | None = None
) -> set[str]:
    """Triton models every endpoint should hold: routed, kept for rollback, prepared (until they expire), being
    promoted. Rollback keeps the newest versions that were served: a prepared version never pushes one out."""
    held = {record.triton_model_name for record in state.routes.values()} | in_flight | state.prepared_to_hold(now)
    for versions in state.loaded_versions().values():
        held.update(sorted(versions, key=versions.__getitem__, reverse=True)[:keep_loaded_versions])
    return held


def missing_models(should_hold: set[str], index: Mapping[str, str]) -> set[str]:
    """The models of ``should_hold`` an endpoint's repository index shows neither READY nor LOADING."""
    return {model for model in should_hold if index.get(model) not in PRESENT_STATES}


@dataclass
class EndpointView:
    """What this replica last saw on one endpoint."""

    url: str
    state: EndpointState
    since: datetime
    missing: set[str] = field(default_factory=set)
    error: str | None = None

    def status(self) -> EndpointStatus:
        return EndpointStatus(
            endpoint=self.url, state=self.state, missing=sorted(self.missing), since=self.since, error=self.error
        )


@dataclass
class RepairBackoff:
    failures: int
    next_try: float


class FleetRepairer:
    def __init__(
        self,
        fleet: TritonFleet,
        state: ServingState,
        loads: ModelLoads,
        repository: Path,
        settings: WorkerSettings,
        metrics: WorkerMetrics,
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        prepare: Callable[[Path, SignatureSummary], ParityCase] = prepare_case,
    ) -> None:
        self.fleet = fleet
        self.state = state
        self.loads = loads
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        self.on_change = on_change
        self._clock = clock
        self._prepare = prepare  # MLflow's reference answer for the parity proof (blocking)
        now = utc_now()
        self.views = {ep.url: EndpointView(ep.url, "repairing", now) for ep in fleet.endpoints}
        self._repairs: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._backoff: dict[tuple[str, str], RepairBackoff] = {}
        self._cases: dict[str, ParityCase] = {}
        for url in self.views:
            self._export(url)

    def should_hold(self) -> set[str]:
        return models_to_hold(
            self.state, keep_loaded_versions=self.settings.keep_loaded_versions, in_flight=self.loads.in_flight()
        )

    # -- checking ----------------------------------------------------------------------------------

    async def check_once(self) -> None:
        """Read every endpoint's repository index once; start a repair for each model one lacks."""
        should_hold = self.should_hold()
        indexes = await asyncio.gather(
            *(endpoint.loaded_models() for endpoint in self.fleet.endpoints), return_exceptions=True
        )
        for endpoint, index in zip(self.fleet.endpoints, indexes, strict=True):
            if isinstance(index, BaseException):
                # PromotionFailure: unreachable (transient), or refused for a missing admin token (permanent)
                error = index.message if isinstance(index, PromotionFailure) else f"{type(index).__name__}: {index}"
                self._set(endpoint.url, "down", set(), error)
                continue
            if endpoint is self.fleet.endpoints[0]:
                ours = [name for name, status in index.items() if is_triton_model_name(name) and status == "READY"]
                self.metrics.loaded_models.set(len(ours))
            missing = missing_models(should_hold, index)
            for model in sorted(missing):
                self._start_repair(endpoint, model)
            missing |= self._repairing_on(endpoint.url)  # READY but not proven yet is not in sync
            self._set(endpoint.url, "repairing" if missing else "in_sync", missing, self._last_error(endpoint.url))
        self._cases = {model: case for model, case in self._cases.items() if model in should_hold}

    async def run_forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # a bug in one check must not stop the fleet from healing later
                log.exception("fleet check failed")
            await asyncio.sleep(interval_s)  # poll: Triton cannot push, its index is read each interval

    async def close(self) -> None:
        tasks = list(self._repairs.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _repairing_on(self, url: str) -> set[str]:
        return {model for endpoint, model in self._repairs if endpoint == url}

    def _set(self, url: str, state: EndpointState, missing: set[str], error: str | None) -> None:
        view = self.views[url]
        if view.state == "down" and state != "down":
            log.info("Triton endpoint answers again", endpoint=url, missing=len(missing))
            self._backoff = {key: value for key, value in self._backoff.items() if key[0] != url}
        elif state == "down" and view.state != "down":
            log.warning("Triton endpoint is down", endpoint=url, error=error)
        changed = (view.state, view.missing, view.error) != (state, missing, error)
        if view.state != state:
            view.since = utc_now()
        view.state, view.missing, view.error = state, missing, error
        self._export(url)
        if changed:
            self.on_change()

    def _export(self, url: str) -> None:
        view = self.views[url]
        for state in ENDPOINT_STATES:
            self.metrics.endpoint_state.labels(url, state).set(1 if view.state == state else 0)
        self.metrics.endpoint_missing_models.labels(url).set(len(view.missing))

    def _last_error(self, url: str) -> str | None:
        view = self.views[url]
        return view.error if view.state == "repairing" else None

    # -- repairing ---------------------------------------------------------------------------------

    def _start_repair(self, endpoint: TritonEndpoint, model: str) -> None:
        key = (endpoint.url, model)
        if key in self._repairs:
            return
        backoff = self._backoff.get(key)
        if backoff is not None and self._clock() < backoff.next_try:
            return
        task = asyncio.create_task(self._repair(endpoint, model), name=f"repair {model} on {endpoint.url}")
        self._repairs[key] = task
        task.add_done_callback(lambda _: self._repairs.pop(key, None))

    async def _repair(self, endpoint: TritonEndpoint, model: str) -> None:
        key = (endpoint.url, model)
        try:
            seconds = await self._reload(endpoint, model)
        except PromotionFailure as failure:
            self._fail(key, failure.message, model)
            return
        except Exception as error:  # unexpected (a library or a bug): counted and retried like a failure
            log.exception("unexpected error repairing a model", endpoint=endpoint.url, triton_model=model)
            self._fail(key, f"internal error: {type(error).__name__}: {error}", model)
            return
        self._backoff.pop(key, None)
        if seconds is None:
            return
        self.metrics.fleet_repairs.labels(endpoint.url, "repaired").inc()
        self.metrics.fleet_repair_seconds.observe(seconds)
        record = self.state.known_model(model)
        log.info(
            "endpoint repaired: model reloaded",
            endpoint=endpoint.url,
            triton_model=model,
            model=record.model_name if record else None,
            version=record.version if record else None,
            seconds=round(seconds, 3),
        )

    async def _reload(self, endpoint: TritonEndpoint, model: str) -> float | None:
        """Load and prove ``model`` on ``endpoint`` under its load lock; seconds taken, or None if not needed."""
        async with self.loads.exclusive(model):
            if model not in self.should_hold():
                return None  # retired or rejected while this repair waited for the lock
            if await asyncio.to_thread(recorded_digest, self.repository / model) is None:
                raise TransientFailure(f"{model} is not staged in {self.repository}; it cannot be reloaded")
            if await endpoint.is_ready(model):
                return None  # a promotion or another replica loaded it meanwhile
            began = time.perf_counter()
            await load_runtime_first([endpoint], self.repository, model, self.loads)  # a restarted Triton lost it too
            await endpoint.load(model)
            try:
                await self._prove(endpoint, model)
            except PermanentFailure:
                await self._unload_unproven(endpoint, model)  # never serve answers that differ from MLflow's
                raise
            return time.perf_counter() - began

    async def _prove(self, endpoint: TritonEndpoint, model: str) -> None:
        """The parity proof of a promotion, on the repaired endpoint (a model being promoted gets its own)."""
        record = self.state.known_model(model)
        if record is None:
            return  # in flight: the promotion proves it on every endpoint itself
        case = self._cases.get(model) or await self._parity_case(model, record)
        await prove_on(
            endpoint,
            model,
            case,
            record.signature,
            rtol=self.settings.parity_rtol,
            atol=self.settings.parity_atol,
        )

    async def _parity_case(self, model: str, record: ServableVersionData) -> ParityCase:
        staged = self.repository / model / VERSION_DIR / MODEL_SUBDIR
        case = await asyncio.to_thread(self._prepare, staged, record.signature)
        self._cases[model] = case
        return case

    async def _unload_unproven(self, endpoint: TritonEndpoint, model: str) -> None:
        try:
            await endpoint.unload(model)
        except TransientFailure as error:
            log.warning("could not unload a model that failed its proof", endpoint=endpoint.url, error=error.message)

    def _fail(self, key: tuple[str, str], message: str, model: str) -> None:
        url = key[0]
        previous = self._backoff.get(key)
        failures = previous.failures + 1 if previous else 1
        delay = min(self.settings.fleet_check_interval_s * 2**failures, MAX_REPAIR_BACKOFF_S)
        self._backoff[key] = RepairBackoff(failures, self._clock() + delay)
        self.metrics.fleet_repairs.labels(url, "failed").inc()
        record = self.state.known_model(model)
        log.warning(
            "endpoint repair failed; retrying later",
            endpoint=url,
            triton_model=model,
            model=record.model_name if record else None,
            version=record.version if record else None,
            attempts=failures,
            retry_in_s=round(delay, 1),
            error=message,
        )
        view = self.views[url]
        if view.state == "repairing":
            view.error = message[:2000]
            self.on_change()
