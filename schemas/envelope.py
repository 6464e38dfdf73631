"""The CloudEvents 1.0 envelope (structured JSON mode) every event of model-promoter travels in.

Readers are tolerant (unknown attributes and data fields are ignored) and strict on what they
know (types are not coerced: a version is a JSON integer, not a string). The ``type`` attribute
carries the event version (``...v1``): a change that would break a reader is a new type.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.names import NonEmptyStr

#: The ``content-type`` header of a record holding one event (CloudEvents structured mode).
CONTENT_TYPE = "application/cloudevents+json"
KAFKA_HEADERS: list[tuple[str, bytes]] = [("content-type", CONTENT_TYPE.encode())]


def new_event_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventData(BaseModel):
    """Base of every event payload: strict on known fields, ignores unknown ones."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class CloudEvent(BaseModel):
    """CloudEvents 1.0 attributes; subclasses pin ``type`` to a Literal and type ``data``."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    #: The CloudEvents ``type`` of the subclass; also used to dispatch on read.
    event_type: ClassVar[str]

    specversion: Literal["1.0"] = "1.0"
    id: NonEmptyStr = Field(
        default_factory=new_event_id,
        description="Unique per event; duplicates (retries, redeliveries) share it.",
    )
    source: NonEmptyStr = Field(
        description="URI-reference of the producer, e.g. /model-promoter/worker/worker-0.",
        examples=["/model-promoter/ingress/mlflow"],
    )
    type: str
    subject: str | None = Field(None, description="The registered model name the event is about.")
    time: AwareDatetime = Field(default_factory=utc_now, description="When the event was produced.")
    datacontenttype: Literal["application/json"] = "application/json"
    data: Any

    def to_json_bytes(self) -> bytes:
        """Serialise for a Kafka record value."""
        return self.model_dump_json(exclude_none=True).encode()
