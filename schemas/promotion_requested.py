"""``promotion.requested``: somebody wants a model version served under an alias (or no longer served)."""

from __future__ import annotations

from typing import ClassVar, Final, Literal, Self

from pydantic import Field, model_validator

from schemas.envelope import CloudEvent, EventData
from schemas.names import Alias, ModelVersion, NonEmptyStr, RegisteredModelName

PROMOTION_REQUESTED_V1: Final = "io.modelpromoter.promotion.requested.v1"

Origin = Literal["mlflow_webhook", "dag", "cli", "replay"]


class PromotionRequestedData(EventData):
    """Serve ``model_name`` under ``alias``: the pinned ``version``, or whatever the alias points at now.

    Without ``version`` the worker re-reads the alias in the MLflow registry when it acts: the event
    is a hint (webhooks arrive out of order), the registry is the truth. ``action="unserve"`` asks
    the gateways to stop routing the alias (an MLflow alias was deleted).
    """

    model_name: RegisteredModelName
    alias: Alias = "champion"
    version: ModelVersion | None = Field(
        None, description="Pin this version; omit to resolve the alias in the MLflow registry."
    )
    action: Literal["promote", "unserve"] = "promote"
    origin: Origin = Field(description="Where the request came from.")
    requester: NonEmptyStr = Field(description="Who asked: a user, a DAG run id, an MLflow webhook.")
    reason: str | None = Field(None, max_length=2000, description="Free text for people.")

    @model_validator(mode="after")
    def _unserve_names_no_version(self) -> Self:
        if self.action == "unserve" and self.version is not None:
            raise ValueError("version must be omitted when action is 'unserve'")
        return self


class PromotionRequested(CloudEvent):
    event_type: ClassVar[str] = PROMOTION_REQUESTED_V1
    type: Literal["io.modelpromoter.promotion.requested.v1"] = PROMOTION_REQUESTED_V1
    data: PromotionRequestedData
