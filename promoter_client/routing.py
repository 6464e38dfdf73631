"""Publish a traffic policy for a model on ``routing.updated``: A/B weights across aliases, a shadow alias.

A ``routing.updated`` event carries the whole policy. :func:`update_routing` changes part of it
(only the shadow, say): it reads the current policy (the newest on the topic for the model) and
publishes it with only what was asked changed. The generation is the publishing time in
milliseconds, so a later policy always wins over an earlier one at every gateway, whichever order
they read them in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiokafka import ConsumerRecord

from runtime.kafka_clients import publish_event
from runtime.settings import KafkaSettings, TopicSettings
from runtime.settings_errors import from_environment
from runtime.topic_reading import caught_up
from schemas.catalog import InvalidEventError, parse_any_event
from schemas.routing_updated import RoutingUpdated, RoutingUpdatedData

READ_TIMEOUT_S = 60.0


class RoutingChangeError(ValueError):
    """The change cannot be made to the current policy; the message says what to give instead."""


@dataclass(frozen=True, slots=True)
class RoutingChange:
    """What to change in a model's policy; None (and ``clear_shadow=False``) keeps the current value."""

    weights: dict[str, int] | None = None
    shadow_alias: str | None = None
    shadow_sample_percent: float | None = None
    clear_shadow: bool = False

    def __post_init__(self) -> None:
        if self.clear_shadow and (self.shadow_alias is not None or self.shadow_sample_percent is not None):
            raise RoutingChangeError("shadow_alias: clearing the shadow and setting one are exclusive")
        asked = (self.weights, self.shadow_alias, self.shadow_sample_percent)
        if all(value is None for value in asked) and not self.clear_shadow:
            raise RoutingChangeError("nothing to change: give the weights, a shadow (and its share), or clear it")

    @property
    def replaces_everything(self) -> bool:
        """Nothing of the current policy survives, so it need not be read."""
        shadow_given = self.clear_shadow or (self.shadow_alias is not None and self.shadow_sample_percent is not None)
        return self.weights is not None and shadow_given

    def applied_to(self, model: str, current: RoutingUpdatedData | None) -> tuple[dict[str, int], str | None, float]:
        """Weights, shadow alias and shadow share after the change (RoutingChangeError when one is unknown)."""
        weights = self.weights if self.weights is not None else (current.weights if current else None)
        if weights is None:
            raise RoutingChangeError(
                f"weights: {model} has no routing policy yet, so give the weights too (e.g. champion=100)"
            )
        if self.clear_shadow:
            return weights, None, 0.0
        shadow = self.shadow_alias or (current.shadow_alias if current else None)
        if shadow is None:
            if self.shadow_sample_percent is not None:
                raise RoutingChangeError(f"shadow_alias: {model} has no shadow: name one to copy requests to")
            return weights, None, 0.0
        kept_share = current.shadow_sample_percent if current and current.shadow_alias else None
        share = self.shadow_sample_percent if self.shadow_sample_percent is not None else kept_share
        if share is None:
            raise RoutingChangeError(f"shadow_sample_percent: give the share of requests copied to {shadow}")
        return weights, shadow, share


class NewestPolicies:
    """Record handler for ``routing.updated``: the newest policy (highest generation) of each model seen."""

    def __init__(self, model: str | None = None) -> None:
        self._key = model.encode() if model is not None else None
        self.by_model: dict[str, RoutingUpdatedData] = {}

    def apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if self._key is not None and record.key != self._key:
            return
        try:
            event = parse_any_event(record.value or b"", (RoutingUpdated,))
        except InvalidEventError:
            return
        if not isinstance(event, RoutingUpdated):
            return
        known = self.by_model.get(event.data.model_name)
        if known is None or event.data.generation > known.generation:
            self.by_model[event.data.model_name] = event.data


async def current_routing(
    model: str, *, kafka: KafkaSettings | None = None, topics: TopicSettings | None = None
) -> RoutingUpdatedData | None:
    """The newest policy of ``model`` on ``routing.updated`` (highest generation), None if it never had one."""
    policies = NewestPolicies(model)
    names = topics or from_environment(TopicSettings)
    async with caught_up(
        kafka or from_environment(KafkaSettings), [names.routing_updated], policies.apply, READ_TIMEOUT_S
    ):
        return policies.by_model.get(model)  # every policy published so far was seen


async def update_routing(
    model: str, change: RoutingChange, *, kafka: KafkaSettings | None = None, topics: TopicSettings | None = None
) -> RoutingUpdated:
    """Publish the current policy of ``model`` with ``change`` applied (the current one is read only if needed)."""
    kafka = kafka or from_environment(KafkaSettings)
    topics = topics or from_environment(TopicSettings)
    if change.weights is not None:  # bad weights are refused before the current policy is read
        RoutingUpdatedData(model_name=model, weights=change.weights, generation=0)
    current = None if change.replaces_everything else await current_routing(model, kafka=kafka, topics=topics)
    weights, shadow_alias, shadow_share = change.applied_to(model, current)
    return await publish_routing(
        model,
        weights,
        shadow_alias=shadow_alias,
        shadow_sample_percent=shadow_share,
        after_generation=current.generation if current else None,
        kafka=kafka,
        topics=topics,
    )


async def publish_routing(
    model: str,
    weights: dict[str, int],
    *,
    shadow_alias: str | None = None,
    shadow_sample_percent: float = 0.0,
    after_generation: int | None = None,
    kafka: KafkaSettings | None = None,
    topics: TopicSettings | None = None,
) -> RoutingUpdated:
    """Validate and publish the whole policy (ValidationError naming the field when it is not valid).

    Its generation is now in milliseconds, or ``after_generation + 1`` when that is later (a clock behind).
    """
    kafka = kafka or from_environment(KafkaSettings)
    topics = topics or from_environment(TopicSettings)
    data = RoutingUpdatedData(
        model_name=model,
        weights=weights,
        shadow_alias=shadow_alias,
        shadow_sample_percent=shadow_sample_percent,
        generation=max(time.time_ns() // 1_000_000, 0 if after_generation is None else after_generation + 1),
    )
    event = RoutingUpdated(source="/model-promoter/cli", subject=model, data=data)
    await publish_event(kafka, topics.routing_updated, event, key=model)
    return event
