"""One valid instance of every event type, for tests."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.dead_letter_replayed import DeadLetterReplayed, DeadLetterReplayedData
from schemas.envelope import CloudEvent
from schemas.fleet_status import EndpointStatus, WorkerFleetStatus, WorkerFleetStatusData
from schemas.gateway_status import (
    GatewayHeartbeat,
    GatewayHeartbeatData,
    GatewaySwapAcked,
    GatewaySwapAckedData,
    ServedRoute,
)
from schemas.model_ready import ColumnSpec as Column
from schemas.model_ready import (
    ModelReady,
    ModelReadyData,
    ServingStopped,
    ServingStoppedData,
    SignatureSummary,
)
from schemas.model_ready import TensorSpec as Tensor
from schemas.prepared_version import ModelPrepared, ModelPreparedData, PrepareRequested, PrepareRequestedData
from schemas.promotion_rejected import PromotionRejected, PromotionRejectedData, ReasonCode
from schemas.promotion_requested import PromotionRequested, PromotionRequestedData
from schemas.routing_updated import RoutingUpdated, RoutingUpdatedData

SOURCE = "/model-promoter/tests"
SHA = "a" * 64


def route(version: int = 3) -> ServedRoute:
    return ServedRoute(
        model_name="iris-clf",
        alias="champion",
        version=version,
        triton_model_name=f"iris-clf--v{version}",
        generation=7,
    )


def promotion_requested(**data: object) -> PromotionRequested:
    fields: dict[str, object] = {
        "model_name": "iris-clf",
        "alias": "champion",
        "origin": "cli",
        "requester": "alice",
    }
    fields.update(data)
    return PromotionRequested(source=SOURCE, subject="iris-clf", data=PromotionRequestedData.model_validate(fields))


def all_events() -> list[CloudEvent]:
    signature = SignatureSummary(
        inputs=[Tensor(name="input", datatype="FP64", shape=[2])],
        outputs=[Tensor(name="output", datatype="INT64", shape=[1])],
        columns=[
            Column(name="sepal length (cm)", type="double"),
            Column(name="petal width (cm)", type="double"),
        ],
    )
    return [
        promotion_requested(),
        promotion_requested(version=4, origin="dag", reason="nightly retrain"),
        ModelReady(
            source=SOURCE,
            subject="iris-clf",
            data=ModelReadyData(
                model_name="iris-clf",
                alias="champion",
                version=3,
                triton_model_name="iris-clf--v3",
                artifact_sha256=SHA,
                mlflow_run_id="0123abcd",
                flavor="sklearn",
                signature=signature,
                generation=7,
                stage_seconds={"resolve": 0.05, "load": 0.4},
                request_event_id="req-1",
            ),
        ),
        ServingStopped(
            source=SOURCE,
            subject="iris-clf",
            data=ServingStoppedData(model_name="iris-clf", alias="challenger", generation=8),
        ),
        PromotionRejected(
            source=SOURCE,
            subject="iris-clf",
            data=PromotionRejectedData(
                model_name="iris-clf",
                version=5,
                reason_code=ReasonCode.MISSING_SIGNATURE,
                message="model version 5 has no signature: log it with a signature or an input_example",
            ),
        ),
        GatewaySwapAcked(
            source=SOURCE, data=GatewaySwapAckedData(gateway_id="gw-0", route=route(), previous_version=2)
        ),
        GatewayHeartbeat(
            source=SOURCE,
            data=GatewayHeartbeatData(
                gateway_id="gw-0",
                ready=True,
                started_at=datetime(2026, 11, 22, 3, 0, tzinfo=UTC),
                interval_s=5.0,
                routes=[route()],
            ),
        ),
        DeadLetterReplayed(
            source=SOURCE,
            subject="iris-clf",
            data=DeadLetterReplayedData(
                event_id="req-9",
                model_name="iris-clf",
                dead_letter_partition=0,
                dead_letter_offset=41,
                target_topic="model.promotion.requested",
                replay_count=1,
                replayed_by="oncall@example.com",
                reason_code="retries_exhausted",
            ),
        ),
        RoutingUpdated(
            source=SOURCE,
            subject="iris-clf",
            data=RoutingUpdatedData(
                model_name="iris-clf",
                weights={"champion": 90, "challenger": 10},
                shadow_alias="shadow",
                shadow_sample_percent=5.0,
                generation=2,
            ),
        ),
        WorkerFleetStatus(
            source=SOURCE,
            data=WorkerFleetStatusData(
                replica_id="worker-0",
                interval_s=15.0,
                expected_models=2,
                endpoints=[
                    EndpointStatus(endpoint="triton-0:8000", state="in_sync", since=datetime(2026, 11, 22, tzinfo=UTC)),
                    EndpointStatus(
                        endpoint="triton-1:8000",
                        state="repairing",
                        missing=["iris-clf--v3"],
                        since=datetime(2026, 11, 22, 3, 0, tzinfo=UTC),
                    ),
                ],
            ),
        ),
        PrepareRequested(
            source=SOURCE,
            subject="iris-clf",
            data=PrepareRequestedData(model_name="iris-clf", version=4, origin="cli", requester="alice"),
        ),
        ModelPrepared(
            source=SOURCE,
            subject="iris-clf",
            data=ModelPreparedData(
                model_name="iris-clf",
                version=4,
                triton_model_name="iris-clf--v4",
                artifact_sha256=SHA,
                flavor="sklearn",
                signature=signature,
                stage_seconds={"resolve": 0.05, "load": 3.9},
                request_event_id="req-2",
                expires_at=datetime(2026, 11, 22, 4, 0, tzinfo=UTC),
            ),
        ),
    ]
