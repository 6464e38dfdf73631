"""Which version served under which alias from when to when, and the rejections, from the topics.

Built from ``model.ready`` (served, stopped) and ``model.rejected``, applying the log's ordering rule
(:mod:`schemas.generations`): a stale record is not a change. A record that restates the version an
alias already serves continues its span. A span still open is what is served now.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from aiokafka import ConsumerRecord

from schemas.catalog import InvalidEventError, parse_any_event
from schemas.generations import AliasGenerations
from schemas.model_ready import ModelReady, ServingStopped
from schemas.promotion_rejected import PromotionRejected


@dataclass(frozen=True)
class ServedSpan:
    model: str
    alias: str
    version: int
    triton_model: str
    start: datetime
    end: datetime | None = None  # None: served now


@dataclass(frozen=True)
class Rejection:
    model: str
    alias: str | None
    version: int | None
    at: datetime
    reason_code: str
    message: str


@dataclass
class ServingHistory:
    closed: list[ServedSpan] = field(default_factory=list)
    open: dict[tuple[str, str], ServedSpan] = field(default_factory=dict)  # (model, alias) -> served now
    rejections: list[Rejection] = field(default_factory=list)
    generations: dict[str, AliasGenerations] = field(default_factory=dict)

    def apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = parse_any_event(record.value or b"", (ModelReady, ServingStopped, PromotionRejected))
        except InvalidEventError:
            return
        if isinstance(event, PromotionRejected):
            data = event.data
            self.rejections.append(
                Rejection(data.model_name, data.alias, data.version, event.time, data.reason_code, data.message)
            )
        elif isinstance(event, ModelReady | ServingStopped):
            self._serve(event)

    def _serve(self, event: ModelReady | ServingStopped) -> None:
        data = event.data
        applied = self.generations.get(data.model_name, AliasGenerations()).apply(data.alias, data.generation)
        if applied is None:
            return  # stale: an older decision read late changes nothing
        self.generations[data.model_name] = applied
        key = (data.model_name, data.alias)
        current = self.open.get(key)
        if isinstance(event, ModelReady) and current is not None and current.version == event.data.version:
            return  # the same version restated (a reconcile, a repair): the span goes on
        if current is not None:
            self.closed.append(replace(current, end=event.time))
            del self.open[key]
        if isinstance(event, ModelReady):
            self.open[key] = ServedSpan(
                event.data.model_name, event.data.alias, event.data.version, event.data.triton_model_name, event.time
            )

    def models(self) -> list[str]:
        names = {span.model for span in self.closed} | {model for model, _ in self.open}
        return sorted(names | {rejection.model for rejection in self.rejections})

    def spans(self, model: str) -> list[ServedSpan]:
        """Every span of ``model``, oldest first; the open ones have ``end`` None."""
        spans = [s for s in self.closed if s.model == model] + [s for s in self.open.values() if s.model == model]
        return sorted(spans, key=lambda span: (span.start, span.alias))

    def rejections_of(self, model: str) -> list[Rejection]:
        return sorted((r for r in self.rejections if r.model == model), key=lambda rejection: rejection.at)
