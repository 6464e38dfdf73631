"""Registry anti-entropy: the MLflow registry is the truth for aliases; events are only hints.

At start and every ``reconcile_interval_s``, for every model with a served alias, the registry's
aliases are compared with the serving state. An alias the registry has that is served at another
version, or not served at all, becomes a promotion request on ``model.promotion.requested``:
exactly what the lost webhook would have produced (unpinned, so the worker re-reads the alias
when it acts). So a dropped ``alias.created`` webhook heals within one interval.

Nothing is ever *unserved* by the reconciler: a served alias the registry does not have may be
served on purpose (the ingress's tag and new-version policies serve aliases MLflow does not
know, and so may a pinned DAG or CLI request), and a registry that answers "no such model" for
everything (a wrong tracking URI) must not take the fleet down. A lost ``alias.deleted``
webhook is therefore not healed here; ``promoter unserve`` is the remedy.

The requests carry ``origin="mlflow_webhook"`` (the registry is where they come from; a new
``origin`` value would break strict readers, e.g. an older worker replica mid-upgrade) and say
they are corrections in the CloudEvents ``source`` (``/model-promoter/worker/<id>/registry-reconcile``),
the ``requester`` and the ``reason``. Each correction is requested once while its drift lasts;
a rejected one is not requested again every interval. Every replica reconciles: a duplicate
request from another replica is coalesced or answered as "already served" by the worker that
owns the model's partition, so it costs one re-announcement and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from runtime.logging import get_logger
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
    """Serve ``alias`` of ``model_name`` as the registry says (``registry_version``), not ``served_version``."""

    model_name: str
    alias: str
    served_version: int | None
    registry_version: int

    def reason(self) -> str:
        served = f"v{self.served_version} is served" if self.served_version is not None else "it is not served"
        return f"registry drift: {self.model_name}@{self.alias} points at v{self.registry_version} in MLflow; {served}"


def registry_drift(
    served: Mapping[tuple[str, str], int], registry: Mapping[str, Mapping[str, int]]
) -> list[Correction]:
    """The promotions that make ``served`` ((model, alias) -> version) follow ``registry`` (model -> aliases)."""
    return [
        Correction(model, alias, served.get((model, alias)), wanted)
        for model, aliases in sorted(registry.items())
        for alias, wanted in sorted(aliases.items())
        if served.get((model, alias)) != wanted
    ]


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
        served = {key: record.version for key, record in self.state.routes.items()}
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
                origin="mlflow_webhook",
                requester=f"registry-reconcile/{self.replica_id}",
                reason=correction.reason(),
            ),
        )
        await publish_event(self.publisher, event, self.topic, correction.model_name)
        self.metrics.registry_corrections.inc()
        log.info(
            "registry drift corrected: promotion requested",
            event_id=event.id,
            model=correction.model_name,
            alias=correction.alias,
            served_version=correction.served_version,
            registry_version=correction.registry_version,
        )
