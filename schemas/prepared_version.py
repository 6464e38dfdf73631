"""Prepared versions: make a version ready to serve before any alias points at it.

``prepare.requested`` (on ``model.promotion.requested``, keyed by model name) asks the workers to
stage, load on every Triton endpoint and prove one pinned version, without routing it. The answer,
``model.prepared``, travels on ``model.ready`` (the log the workers rebuild their state from), so
every worker replica holds the version and a later alias move to it only announces it.
Gateways ignore ``model.prepared``: it names no alias and carries no generation, so it can never
route anything.

Why new types, not a field on ``promotion.requested.v1``: a reader of v1 ignores unknown fields
and defaults ``alias`` to ``champion``, so an old worker would *serve* a request that only meant
to prepare. A new type is dead-lettered by an old worker ("unexpected event type") instead:
nothing is served by mistake.
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal

from pydantic import AwareDatetime, Field

from schemas.envelope import CloudEvent, EventData
from schemas.model_ready import ServableVersionData
from schemas.names import ModelVersion, NonEmptyStr, RegisteredModelName
from schemas.promotion_requested import Origin

PREPARE_REQUESTED_V1: Final = "io.modelpromoter.prepare.requested.v1"
MODEL_PREPARED_V1: Final = "io.modelpromoter.model.prepared.v1"


class PrepareRequestedData(EventData):
    """Load ``version`` of ``model_name`` on every Triton endpoint and prove it, but route nothing to it."""

    model_name: RegisteredModelName
    version: ModelVersion = Field(description="The version to prepare (always pinned: no alias names it yet).")
    origin: Origin = Field(description="Where the request came from.")
    requester: NonEmptyStr = Field(description="Who asked: a user, a DAG run id, an MLflow webhook.")
    reason: str | None = Field(None, max_length=2000, description="Free text for people.")


class PrepareRequested(CloudEvent):
    event_type: ClassVar[str] = PREPARE_REQUESTED_V1
    type: Literal["io.modelpromoter.prepare.requested.v1"] = PREPARE_REQUESTED_V1
    data: PrepareRequestedData


class ModelPreparedData(ServableVersionData):
    """The version is loaded and proved on every Triton endpoint, routed by no alias.

    Workers hold it until ``expires_at``; an alias moved to it before then is served without a load.
    Past ``expires_at`` (or when newer preparations of the model exceed the workers' bound) it is
    unloaded and removed like any retired version, unless an alias took it.
    """

    expires_at: AwareDatetime = Field(description="When the workers unload it if no alias took it by then.")


class ModelPrepared(CloudEvent):
    event_type: ClassVar[str] = MODEL_PREPARED_V1
    type: Literal["io.modelpromoter.model.prepared.v1"] = MODEL_PREPARED_V1
    data: ModelPreparedData
