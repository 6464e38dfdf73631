"""``dead_letter.replayed``: the audit record of a dead letter sent back to its source topic."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

from pydantic import Field

from schemas.envelope import CloudEvent, EventData
from schemas.names import NonEmptyStr

DEAD_LETTER_REPLAYED_V1: Final = "io.modelpromoter.dead_letter.replayed.v1"


class DeadLetterReplayedData(EventData):
    event_id: str | None = Field(None, description="Event id of the replayed request, when it parsed.")
    model_name: str | None = Field(None, description="The record's key (registered model name).")
    dead_letter_partition: int = Field(ge=0)
    dead_letter_offset: int = Field(ge=0)
    target_topic: NonEmptyStr = Field(description="Where the original bytes were published again.")
    replay_count: int = Field(ge=1, description="How often this request has now been replayed.")
    replayed_by: NonEmptyStr = Field(description="The person or automation that replayed it.")
    reason_code: str | None = Field(None, description="Why it had been dead-lettered.")


class DeadLetterReplayed(CloudEvent):
    event_type: ClassVar[str] = DEAD_LETTER_REPLAYED_V1
    type: Literal["io.modelpromoter.dead_letter.replayed.v1"] = DEAD_LETTER_REPLAYED_V1
    data: DeadLetterReplayedData
