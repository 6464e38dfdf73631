"""Publish this replica's view of the Triton endpoints (``worker.fleet_status``) for ``promoter status``.

Sent on ``gateway.status`` under the key ``worker/<replica id>``: at once when an endpoint's
state or missing models change, and every ``interval_s`` otherwise, so a reader can tell a
silent (gone) replica from a quiet one. A failed publish is logged and retried at the next beat.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from runtime.logging import get_logger
from schemas.fleet_status import FLEET_STATUS_KEY_PREFIX, WorkerFleetStatus, WorkerFleetStatusData
from worker.fleet_repair import FleetRepairer
from worker.service import Publisher, publish_event

log = get_logger(__name__)


class FleetStatusReporter:
    def __init__(
        self,
        repairer: FleetRepairer,
        publisher: Publisher,
        topic: str,
        replica_id: str,
        interval_s: float,
        *,
        max_prepared_versions: int,
    ) -> None:
        self.repairer = repairer
        self.max_prepared_versions = max_prepared_versions  # so `promoter status` bounds prepared versions alike
        self.publisher = publisher
        self.topic = topic
        self.replica_id = replica_id
        self.interval_s = interval_s
        self.source = f"/model-promoter/worker/{replica_id}/fleet"
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Something changed: publish now rather than at the next beat."""
        self._changed.set()

    def event(self) -> WorkerFleetStatus:
        return WorkerFleetStatus(
            source=self.source,
            data=WorkerFleetStatusData(
                replica_id=self.replica_id,
                interval_s=self.interval_s,
                expected_models=len(self.repairer.should_hold()),
                max_prepared_versions=self.max_prepared_versions,
                endpoints=[view.status() for view in self.repairer.views.values()],
            ),
        )

    async def publish(self) -> None:
        await publish_event(self.publisher, self.event(), self.topic, f"{FLEET_STATUS_KEY_PREFIX}{self.replica_id}")

    async def run_forever(self) -> None:
        while True:
            self._changed.clear()
            try:
                await self.publish()
            except Exception as error:  # Kafka down: the next beat tries again
                log.warning("could not publish the fleet status", topic=self.topic, error=str(error))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.interval_s)
