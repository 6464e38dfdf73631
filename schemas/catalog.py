"""Every event type of model-promoter, and the one way to parse bytes off a topic into an event.

Parsing never raises anything but :class:`InvalidEventError`, whose message names the offending
field(s) in a form an on-call engineer can act on (``data.version: Input should be ...``).
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.dead_letter_replayed import DeadLetterReplayed
from schemas.envelope import CloudEvent
from schemas.field_problems import describe, field_problems
from schemas.fleet_status import WorkerFleetStatus
from schemas.gateway_status import GatewayHeartbeat, GatewaySwapAcked
from schemas.model_ready import ModelReady, ServingStopped
from schemas.prepared_version import ModelPrepared, PrepareRequested
from schemas.promotion_rejected import PromotionRejected
from schemas.promotion_requested import PromotionRequested
from schemas.routing_updated import RoutingUpdated

EVENT_CLASSES: tuple[type[CloudEvent], ...] = (
    PromotionRequested,
    ModelReady,
    ServingStopped,
    PromotionRejected,
    GatewaySwapAcked,
    GatewayHeartbeat,
    RoutingUpdated,
    DeadLetterReplayed,
    WorkerFleetStatus,
    PrepareRequested,
    ModelPrepared,
)
EVENTS_BY_TYPE: dict[str, type[CloudEvent]] = {cls.event_type: cls for cls in EVENT_CLASSES}

EventT = TypeVar("EventT", bound=CloudEvent)

_MAX_ERRORS_IN_MESSAGE = 5


class InvalidEventError(ValueError):
    """The bytes are not a valid event. ``fields`` lists the offending fields as dotted paths."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


def _describe(error: ValidationError) -> InvalidEventError:
    problems = field_problems(error.errors(include_url=False), root="(event)")
    return InvalidEventError(
        describe(problems, limit=_MAX_ERRORS_IN_MESSAGE), tuple(problem.field for problem in problems)
    )


class _EventType(BaseModel):
    """Only the CloudEvents ``type`` of an event: read without building the rest of the document in Python (a
    quarter of the cost of ``json.loads`` on a ``model.ready``; a gateway's replay reads thousands)."""

    model_config = ConfigDict(extra="ignore")

    type: str


def _event_class(raw: bytes | str, allowed: tuple[type[CloudEvent], ...]) -> type[CloudEvent]:
    try:
        event_type = _EventType.model_validate_json(raw).type
    except ValidationError:  # not JSON, not an object, no type: the full reading below says which
        event_type = _event_type_or_error(raw)
    cls = EVENTS_BY_TYPE.get(event_type)
    if cls is None or cls not in allowed:
        expected = ", ".join(sorted(c.event_type for c in allowed))
        raise InvalidEventError(f"type: unexpected event type {event_type[:200]!r}; expected {expected}", ("type",))
    return cls


def _event_type_or_error(raw: bytes | str) -> str:
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidEventError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidEventError(f"an event must be a JSON object, got {type(document).__name__}")
    event_type = document.get("type")
    if not isinstance(event_type, str):
        raise InvalidEventError("type: missing or not a string (the CloudEvents 'type' attribute)", ("type",))
    return event_type


def parse_event(raw: bytes | str, expected: type[EventT]) -> EventT:
    """Parse one event of type ``expected`` or raise :class:`InvalidEventError`."""
    _event_class(raw, (expected,))
    try:
        return expected.model_validate_json(raw)
    except ValidationError as exc:
        raise _describe(exc) from None


def parse_any_event(raw: bytes | str, allowed: tuple[type[CloudEvent], ...] = EVENT_CLASSES) -> CloudEvent:
    """Parse an event of any of the ``allowed`` types (a topic may carry several)."""
    cls = _event_class(raw, allowed)
    try:
        return cls.model_validate_json(raw)
    except ValidationError as exc:
        raise _describe(exc) from None
