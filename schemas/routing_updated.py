"""``routing.updated``: the traffic policy of a model (A/B weights across aliases, shadow target)."""

from __future__ import annotations

from typing import ClassVar, Final, Literal, Self

from pydantic import Field, model_validator

from schemas.envelope import CloudEvent, EventData
from schemas.names import Alias, RegisteredModelName

ROUTING_UPDATED_V1: Final = "io.modelpromoter.routing.updated.v1"


class RoutingUpdatedData(EventData):
    model_name: RegisteredModelName
    weights: dict[Alias, int] = Field(
        min_length=1,
        description="Percent of callers per alias, summing to 100; sticky per client id.",
        examples=[{"champion": 90, "challenger": 10}],
    )
    shadow_alias: Alias | None = Field(None, description="Receives an asynchronous copy of requests.")
    shadow_sample_percent: float = Field(0.0, ge=0.0, le=100.0)
    generation: int = Field(ge=0, description="Strictly increasing per model; stale updates are ignored.")

    @model_validator(mode="after")
    def _weights_are_percentages(self) -> Self:
        if any(not 0 <= weight <= 100 for weight in self.weights.values()):
            raise ValueError("weights: every weight must be between 0 and 100")
        total = sum(self.weights.values())
        if total != 100:
            raise ValueError(f"weights: must sum to 100, got {total}")
        if self.shadow_alias is not None and self.shadow_sample_percent == 0.0:
            raise ValueError("shadow_sample_percent: must be above 0 when shadow_alias is set")
        return self


class RoutingUpdated(CloudEvent):
    event_type: ClassVar[str] = ROUTING_UPDATED_V1
    type: Literal["io.modelpromoter.routing.updated.v1"] = ROUTING_UPDATED_V1
    data: RoutingUpdatedData
