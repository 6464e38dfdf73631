"""``worker.fleet_status``: what one worker replica sees on each Triton endpoint, for ``promoter status``.

Published by every worker replica on ``gateway.status`` (keyed ``worker/<replica id>``) when an
endpoint's state changes and every ``interval_s`` seconds otherwise; silence beyond three
intervals means the replica is gone and its view is stale. A new endpoint state would break a
strict reader of ``state``, so it would be a new event version.
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal

from pydantic import AwareDatetime, Field

from schemas.envelope import CloudEvent, EventData
from schemas.names import NonEmptyStr

WORKER_FLEET_STATUS_V1: Final = "io.modelpromoter.worker.fleet_status.v1"
#: The record key prefix of fleet status on ``gateway.status`` (gateway ids are the other keys).
FLEET_STATUS_KEY_PREFIX: Final = "worker/"

EndpointState = Literal["in_sync", "repairing", "down"]


class EndpointStatus(EventData):
    """One Triton endpoint as a worker replica last saw it."""

    endpoint: NonEmptyStr = Field(description="host:port, as in PROMOTER_TRITON_ENDPOINTS.")
    state: EndpointState = Field(
        description="in_sync: holds every model it should; repairing: some are being loaded; down: not answering."
    )
    missing: list[NonEmptyStr] = Field(
        default_factory=list, description="Triton models it should hold and does not (yet)."
    )
    since: AwareDatetime = Field(description="When the endpoint entered this state.")
    error: str | None = Field(None, max_length=2000, description="Why it is down, or why the last repair failed.")


class WorkerFleetStatusData(EventData):
    replica_id: NonEmptyStr
    interval_s: float = Field(gt=0, description="Time to the next report; silence beyond is a lost replica.")
    expected_models: int = Field(ge=0, description="Triton models every endpoint should hold.")
    max_prepared_versions: int | None = Field(
        None,
        ge=1,
        description=(
            "Prepared versions per model the replica holds awaiting an alias (PROMOTER_WORKER_MAX_PREPARED_VERSIONS); "
            "absent from replicas older than this field."
        ),
    )
    endpoints: list[EndpointStatus]


class WorkerFleetStatus(CloudEvent):
    event_type: ClassVar[str] = WORKER_FLEET_STATUS_V1
    type: Literal["io.modelpromoter.worker.fleet_status.v1"] = WORKER_FLEET_STATUS_V1
    data: WorkerFleetStatusData
