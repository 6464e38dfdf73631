"""``gateway.status``: what each gateway replica applied (swap acks) and that it is alive (heartbeats)."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

from pydantic import AwareDatetime, Field

from schemas.envelope import CloudEvent, EventData
from schemas.names import Alias, ModelVersion, NonEmptyStr, RegisteredModelName

GATEWAY_SWAP_ACKED_V1: Final = "io.modelpromoter.gateway.swap_acked.v1"
GATEWAY_HEARTBEAT_V1: Final = "io.modelpromoter.gateway.heartbeat.v1"

GatewayId = NonEmptyStr


class ServedRoute(EventData):
    """One (model, alias) a gateway routes, and to which Triton model."""

    model_name: RegisteredModelName
    alias: Alias
    version: ModelVersion
    triton_model_name: NonEmptyStr
    generation: int = Field(ge=0)


class GatewaySwapAckedData(EventData):
    gateway_id: GatewayId
    route: ServedRoute
    previous_version: ModelVersion | None = Field(None, description="What the alias pointed at before.")


class GatewaySwapAcked(CloudEvent):
    event_type: ClassVar[str] = GATEWAY_SWAP_ACKED_V1
    type: Literal["io.modelpromoter.gateway.swap_acked.v1"] = GATEWAY_SWAP_ACKED_V1
    data: GatewaySwapAckedData


class GatewayHeartbeatData(EventData):
    gateway_id: GatewayId
    ready: bool = Field(description="True once the replica has replayed the serving-state log.")
    started_at: AwareDatetime
    interval_s: float = Field(gt=0, description="Time to the next heartbeat; silence beyond is a lost gateway.")
    routes: list[ServedRoute] = Field(default_factory=list)


class GatewayHeartbeat(CloudEvent):
    event_type: ClassVar[str] = GATEWAY_HEARTBEAT_V1
    type: Literal["io.modelpromoter.gateway.heartbeat.v1"] = GATEWAY_HEARTBEAT_V1
    data: GatewayHeartbeatData
