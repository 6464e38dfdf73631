"""Registry anti-entropy: the MLflow registry is the truth for aliases; events are only hints.

At start and every ``reconcile_interval_s``, for every model with a served alias, the registry's
aliases are compared with the serving state, and each difference becomes a request on
``model.promotion.requested``, exactly what the lost webhook would have produced:

- an alias the registry has, served at another version or not served: a promotion (unpinned, so
  the worker re-reads the alias when it acts). A dropped ``alias.created`` heals within one interval;
- a served alias the registry no longer has, which was served *because* the MLflow alias pointed at
  it (``model.ready`` ``pinned=false``): an unserve. A dropped ``alias.deleted`` heals too.

The pin rule: a version served by an explicit pin (a DAG or ``promoter promote --version``, an
ingress tag or new-version policy) that differs from the MLflow alias is left alone while the alias
stays where it was when the pin was served (``registry_version``). Once the alias moves in MLflow
(to another version, or is deleted), the registry wins again. An alias MLflow never had (an ingress
policy alias) is never unserved; nor is a record an older worker announced (``pinned`` absent: how
it was chosen is unknown); nor is anything of a model the registry says does not exist (a wrong
tracking URI must not take the fleet down): ``promoter unserve`` is the remedy there.

The requests carry ``origin="mlflow_webhook"`` (the registry is where they come from; a new
``origin`` value would break strict readers, e.g. an older worker replica mid-upgrade, and nobody
waits for their answer) and say they are corrections in the CloudEvents ``source``
(``/model-promoter/worker/<id>/registry-reconcile``), the ``requester`` and the ``reason``. Each
correction is requested once while its drift lasts; a rejected one is not requested again every
interval. Every replica reconciles: a duplicate request from another replica is coalesced or
answered "already served" by the worker that owns the model's partition, which publishes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from runtime.logging import get_logger
from schemas.model_ready import ModelReadyData
from schemas.promotion_requested import PromotionRequested, PromotionRequestedData
from worker.errors import TransientFailure
from worker.metrics import WorkerMetrics
from worker.service import Publisher, publish_event
from worker.serving_state import ServingState

log = get_logger(__name__)


class AliasReader(Protocol):
    async def aliases(self, name: str) -> dict[str, int] | None: ...


@dataclass(frozen=True, slots=True)
class Correction:
    """Serve ``alias`` of ``model_name`` as the registry says (``registry_version``; None: unserve it)."""

    model_name: str
    alias: str
    served_version: int | None
    registry_version: int | None

    @property
    def action(self) -> Literal["promote", "unserve"]:
        return "unserve" if self.registry_version is None else "promote"

    def reason(self) -> str:
        served = f"v{self.served_version} is served" if self.served_version is not None else "it is not served"
        if self.registry_version is None:
            return f"registry drift: {self.model_name}@{self.alias} was deleted in MLflow; {served}"
        return f"registry drift: {self.model_name}@{self.alias} points at v{self.registry_version} in MLflow; {served}"


def _pin_holds(record: ModelReadyData, registry_version: int | None) -> bool:
    """A pinned version stays served while the MLflow alias is where it was when the pin was served."""
    return record.pinned is True and record.registry_version == registry_version


def _deleted_in_registry(record: ModelReadyData) -> bool:
    """The served alias existed in MLflow when it was served (and is gone now): unserve it."""
    # pinned None: announced by an older worker, unknown whether MLflow ever had the alias.
    return record.pinned is not None and record.registry_version is not None


def registry_drift(
    served: Mapping[tuple[str, str], ModelReadyData], registry: Mapping[str, Mapping[str, int]]
) -> list[Correction]:
    """The requests that make ``served`` ((model, alias) -> record) follow ``registry`` (model -> aliases)."""
    corrections = []
    for model, aliases in sorted(registry.items()):
        for alias in sorted({*aliases, *(a for m, a in served if m == model)}):
            record, wanted = served.get((model, alias)), aliases.get(alias)
            if record is None:
                if wanted is not None:
                    corrections.append(Correction(model, alias, None, wanted))
            elif wanted is None:
                if _deleted_in_registry(record):
                    corrections.append(Correction(model, alias, record.version, None))
            elif record.version != wanted and not _pin_holds(record, wanted):
                corrections.append(Correction(model, alias, record.version, wanted))
    return corrections


class RegistryReconciler:
    def __init__(
        self,
        registry: AliasReader,
        state: ServingState,
        publisher: Publisher,
        topic: str,
        replica_id: str,
        metrics: WorkerMetrics,
    ) -> None:
        self.registry = registry
        self.state = state
        self.publisher = publisher
        self.topic = topic
        self.replica_id = replica_id
        self.metrics = metrics
        self.source = f"/model-promoter/worker/{replica_id}/registry-reconcile"
        self._requested: set[Correction] = set()

    async def run_once(self) -> list[Correction]:
        """Compare once; request and return the corrections not requested before."""
        served = dict(self.state.routes)
        registry: dict[str, Mapping[str, int]] = {}
        failed = False
        for model in sorted({model for model, _ in served}):
            try:
                aliases = await self.registry.aliases(model)
            except TransientFailure as error:
                failed = True
                log.warning(
                    "registry unreadable for this model; compared next interval", model=model, error=error.message
                )
                continue
            if aliases is None:
                log.warning(
                    "served model no longer exists in MLflow; still served (promoter unserve stops it)", model=model
                )
                continue
            registry[model] = aliases
        drift = registry_drift(served, registry)
        fresh = [correction for correction in drift if correction not in self._requested]
        self._requested = {correction for correction in drift if correction in self._requested}
        for correction in fresh:
            await self._request(correction)
            self._requested.add(correction)
        self.metrics.registry_reconciles.labels("failed" if failed else "ok").inc()
        return fresh

    async def run_forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # Kafka or a bug: the next interval tries again
                self.metrics.registry_reconciles.labels("failed").inc()
                log.exception("registry reconcile failed")
            await asyncio.sleep(interval_s)  # poll: the registry cannot be trusted to tell us

    async def _request(self, correction: Correction) -> None:
        event = PromotionRequested(
            source=self.source,
            subject=correction.model_name,
            data=PromotionRequestedData(
                model_name=correction.model_name,
                alias=correction.alias,
                action=correction.action,
                origin="mlflow_webhook",
                requester=f"registry-reconcile/{self.replica_id}",
                reason=correction.reason(),
            ),
        )
        await publish_event(self.publisher, event, self.topic, correction.model_name)
        self.metrics.registry_corrections.labels(correction.action).inc()
        log.info(
            "registry drift corrected: unserve requested"
            if correction.action == "unserve"
            else "registry drift corrected: promotion requested",
            event_id=event.id,
            model=correction.model_name,
            alias=correction.alias,
            served_version=correction.served_version,
            registry_version=correction.registry_version,
        )
