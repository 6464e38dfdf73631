"""``model.rejected``: a promotion failed for good. The old version keeps serving."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Final, Literal

from pydantic import Field

from schemas.envelope import CloudEvent, EventData
from schemas.names import Alias, ModelVersion, RegisteredModelName

PROMOTION_REJECTED_V1: Final = "io.modelpromoter.promotion.rejected.v1"


class ReasonCode(StrEnum):
    """Why a promotion was rejected. Bounded, so it is safe as a metric label.

    The wire field is a plain snake_case string so that adding a code does not break old readers.
    """

    INVALID_EVENT = "invalid_event"
    MODEL_NOT_FOUND = "model_not_found"
    VERSION_NOT_FOUND = "version_not_found"
    ALIAS_NOT_FOUND = "alias_not_found"
    REGISTRY_REFUSED = "registry_refused"
    VERSION_NOT_READY = "version_not_ready"
    UNSUPPORTED_FLAVOR = "unsupported_flavor"
    MISSING_SIGNATURE = "missing_signature"
    UNSUPPORTED_SIGNATURE = "unsupported_signature"
    ARTIFACT_TOO_LARGE = "artifact_too_large"
    UNSAFE_ARTIFACT_PATH = "unsafe_artifact_path"
    POLICY_TAG_MISSING = "policy_tag_missing"
    METRIC_BELOW_THRESHOLD = "metric_below_threshold"
    DIGEST_CONFLICT = "digest_conflict"
    TRITON_LOAD_FAILED = "triton_load_failed"
    TRITON_LOAD_TIMEOUT = "triton_load_timeout"
    PARITY_MISMATCH = "parity_mismatch"
    RETRIES_EXHAUSTED = "retries_exhausted"
    REPLAY_LIMIT_REACHED = "replay_limit_reached"
    INTERNAL_ERROR = "internal_error"


class PromotionRejectedData(EventData):
    model_name: RegisteredModelName
    alias: Alias | None = None
    version: ModelVersion | None = None
    reason_code: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="Machine-readable reason; see ReasonCode for the known values.",
        examples=[code.value for code in ReasonCode],
    )
    message: str = Field(min_length=1, max_length=4000, description="What went wrong, for people.")
    attempts: int = Field(1, ge=1)
    request_event_id: str | None = Field(None, description="The promotion request this answers.")


class PromotionRejected(CloudEvent):
    event_type: ClassVar[str] = PROMOTION_REJECTED_V1
    type: Literal["io.modelpromoter.promotion.rejected.v1"] = PROMOTION_REJECTED_V1
    data: PromotionRejectedData
