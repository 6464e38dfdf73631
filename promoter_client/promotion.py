"""Request a promotion from code (an Airflow task, a notebook, the CLI) and optionally wait for the outcome.

    from promoter_client.promotion import request_promotion
    outcome = request_promotion("iris-clf", alias="champion", version=7, reason="nightly", wait_s=120)
    outcome.raise_for_rejection()

The request is published on ``model.promotion.requested``; with ``wait_s`` the call follows
``model.ready`` and ``model.rejected`` until the answer to this request's event id arrives.

    from promoter_client.promotion import request_preparation
    request_preparation("iris-clf", version=8, wait_s=600).raise_for_rejection()  # loaded, not routed

prepares a version ahead of its alias move: loaded and proved on every Triton, routed by no alias,
so the later ``request_promotion(..., version=8)`` (or the MLflow alias move) swaps without a load.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

from aiokafka import AIOKafkaConsumer

from runtime.kafka_clients import assign_from_start, publish_event, started
from runtime.settings import KafkaSettings, TopicSettings
from runtime.settings_errors import from_environment
from runtime.topic_reading import MissingTopicError
from schemas.catalog import InvalidEventError, parse_any_event
from schemas.envelope import CloudEvent
from schemas.model_ready import ModelReady, ServingStopped
from schemas.prepared_version import ModelPrepared, PrepareRequested, PrepareRequestedData
from schemas.promotion_rejected import PromotionRejected
from schemas.promotion_requested import Origin, PromotionRequested, PromotionRequestedData

OutcomeKind = Literal["requested", "served", "prepared", "stopped", "rejected"]
P = ParamSpec("P")
T = TypeVar("T")


class PromotionRejectedError(RuntimeError):
    """The worker rejected the promotion; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Outcome:
    event_id: str
    kind: OutcomeKind
    version: int | None = None
    triton_model_name: str | None = None
    reason_code: str | None = None
    message: str | None = None

    def raise_for_rejection(self) -> None:
        if self.kind == "rejected":
            raise PromotionRejectedError(f"{self.reason_code}: {self.message}")


async def _await_outcome(kafka: KafkaSettings, names: TopicSettings, event_id: str, timeout_s: float) -> Outcome:
    async with started(AIOKafkaConsumer(**{**kafka.consumer_kwargs(), "group_id": None})) as consumer:
        if not await assign_from_start(consumer, [names.model_ready, names.model_rejected]):
            raise MissingTopicError(
                f"neither {names.model_ready} nor {names.model_rejected} exists: is a worker running?"
            )
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
            for record in (r for records in batches.values() for r in records):
                outcome = _match(record.value or b"", event_id)
                if outcome is not None:
                    return outcome
        raise TimeoutError(f"no outcome for promotion request {event_id} within {timeout_s:g} s")


def _match(raw: bytes, event_id: str) -> Outcome | None:
    try:
        event = parse_any_event(raw, (ModelReady, ModelPrepared, ServingStopped, PromotionRejected))
    except InvalidEventError:
        return None
    if isinstance(event, ModelReady) and event.data.request_event_id == event_id:
        return Outcome(event_id, "served", event.data.version, event.data.triton_model_name)
    if isinstance(event, ModelPrepared) and event.data.request_event_id == event_id:
        return Outcome(event_id, "prepared", event.data.version, event.data.triton_model_name)
    if isinstance(event, ServingStopped) and event.data.request_event_id == event_id:
        return Outcome(event_id, "stopped")
    if isinstance(event, PromotionRejected) and event.data.request_event_id == event_id:
        return Outcome(
            event_id, "rejected", event.data.version, reason_code=event.data.reason_code, message=event.data.message
        )
    return None


async def request_promotion_async(
    model: str,
    *,
    alias: str = "champion",
    version: int | None = None,
    reason: str | None = None,
    action: Literal["promote", "unserve"] = "promote",
    origin: Origin = "dag",
    requester: str | None = None,
    wait_s: float | None = None,
    kafka: KafkaSettings | None = None,
    topics: TopicSettings | None = None,
) -> Outcome:
    """Publish a promotion request; with ``wait_s``, wait for its outcome (TimeoutError after that)."""
    data = PromotionRequestedData(
        model_name=model,
        alias=alias,
        version=version,
        action=action,
        origin=origin,
        requester=requester or getpass.getuser(),
        reason=reason,
    )
    event = PromotionRequested(id=str(uuid.uuid4()), source=f"/model-promoter/{origin}", subject=model, data=data)
    return await _publish_request(event, model, wait_s, kafka, topics)


async def request_preparation_async(
    model: str,
    *,
    version: int,
    reason: str | None = None,
    origin: Origin = "dag",
    requester: str | None = None,
    wait_s: float | None = None,
    kafka: KafkaSettings | None = None,
    topics: TopicSettings | None = None,
) -> Outcome:
    """Ask the workers to prepare ``version``: loaded and proved on every Triton, routed by no alias.

    With ``wait_s``, wait for its outcome (kind ``prepared`` or ``rejected``; TimeoutError after that).
    """
    data = PrepareRequestedData(
        model_name=model, version=version, origin=origin, requester=requester or getpass.getuser(), reason=reason
    )
    event = PrepareRequested(id=str(uuid.uuid4()), source=f"/model-promoter/{origin}", subject=model, data=data)
    return await _publish_request(event, model, wait_s, kafka, topics)


async def _publish_request(
    event: CloudEvent, model: str, wait_s: float | None, kafka: KafkaSettings | None, topics: TopicSettings | None
) -> Outcome:
    kafka = kafka or from_environment(KafkaSettings)
    topics = topics or from_environment(TopicSettings)
    await publish_event(kafka, topics.promotion_requested, event, key=model)
    if wait_s is None:
        return Outcome(event.id, "requested")
    return await _await_outcome(kafka, topics, event.id, wait_s)


def blocking(coroutine_function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """``name_async`` run to completion (``asyncio.run``) as ``name``: the same typed parameters, for mypy and IDEs."""

    @functools.wraps(coroutine_function)
    def run_to_completion(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(coroutine_function(*args, **kwargs))

    name = coroutine_function.__name__.removesuffix("_async")
    run_to_completion.__name__ = run_to_completion.__qualname__ = name
    run_to_completion.__doc__ = f"Blocking form of {coroutine_function.__name__}: {coroutine_function.__doc__}"
    return run_to_completion


#: For Airflow tasks and scripts: ``request_promotion("iris-clf", version=7, wait_s=600)``.
request_promotion = blocking(request_promotion_async)
#: For Airflow tasks and scripts: ``request_preparation("iris-clf", version=8, wait_s=600)``.
request_preparation = blocking(request_preparation_async)
