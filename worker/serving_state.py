"""What the worker knows is served, rebuilt from the ``model.ready`` log (never from a local file).

Per (model, alias): the record currently served, and the generation applied (the ordering rule of
:mod:`schemas.generations`, the same the gateways apply), so the next decision of a model gets a
generation above all of its aliases'. Per request event id: the record that answered it, so a
redelivered request causes no second copy, load or announcement; and which of those answers are
not yet known to be on the log (published, broker confirmation pending or failed).
Per Triton model: the latest announced record (digest, signature), for reuse and retirement.

Prepared versions (``model.prepared`` on the same log): loaded and proved, routed by no alias. Each
awaits an alias until its ``expires_at``; at most ``max_prepared_per_model`` per registered model
await one (a newer preparation pushes the oldest out). A ``model.ready`` naming it ends the wait:
from then on it is a served version like any other. Expiry is judged by the record's own
``expires_at``, so a replica replaying the log reaches the same view as the one that prepared it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from schemas.envelope import utc_now
from schemas.generations import AliasGenerations
from schemas.model_ready import ModelReadyData, ServableVersionData, ServingStoppedData
from schemas.prepared_version import ModelPreparedData

MAX_REMEMBERED_REQUESTS = 100_000


@dataclass
class ServingState:
    routes: dict[tuple[str, str], ModelReadyData] = field(default_factory=dict)
    generations: dict[str, AliasGenerations] = field(default_factory=dict)  # per registered model
    answered: OrderedDict[str, ModelReadyData | ModelPreparedData] = field(default_factory=OrderedDict)
    by_triton_model: dict[str, ModelReadyData] = field(default_factory=dict)  # latest announced, per Triton model
    unconfirmed: set[str] = field(default_factory=set)  # answered event ids not yet seen on or confirmed by the log
    prepared: dict[str, ModelPreparedData] = field(default_factory=dict)  # latest preparation, per Triton model
    awaiting_alias: dict[str, ModelPreparedData] = field(default_factory=dict)  # prepared, not taken; oldest first
    max_prepared_per_model: int = 2

    def apply(self, record: ModelReadyData | ServingStoppedData) -> bool:
        """Apply one record of the log; False when it is stale (generation not above its alias')."""
        if isinstance(record, ModelReadyData):
            self._note(record)
        applied = self._generations(record.model_name).apply(record.alias, record.generation)
        if applied is None:
            return False
        self.generations[record.model_name] = applied
        key = (record.model_name, record.alias)
        if isinstance(record, ModelReadyData):
            self.routes[key] = record
        else:
            self.routes.pop(key, None)
        return True

    def prepare(self, record: ModelPreparedData) -> list[str]:
        """Apply one ``model.prepared``; the Triton models it pushed out of the per-model bound (oldest first)."""
        name = record.triton_model_name
        self.prepared[name] = record
        self.awaiting_alias.pop(name, None)  # prepared again: the newest of its model now
        if record.request_event_id is not None:
            self._answer(record.request_event_id, record)
            self.unconfirmed.discard(record.request_event_id)
        if self.is_routed(name):
            return []  # an alias serves it already: nothing awaits an alias
        self.awaiting_alias[name] = record
        same_model = [n for n, r in self.awaiting_alias.items() if r.model_name == record.model_name]
        evicted = same_model[: max(0, len(same_model) - self.max_prepared_per_model)]
        for evicted_name in evicted:
            del self.awaiting_alias[evicted_name]
        return evicted

    def prepared_to_hold(self, now: datetime | None = None) -> set[str]:
        """Triton models prepared, not taken by an alias, not expired: every endpoint holds them."""
        now = now or utc_now()
        return {name for name, record in self.awaiting_alias.items() if record.expires_at > now}

    def _note(self, record: ModelReadyData) -> None:
        self.by_triton_model[record.triton_model_name] = record
        self.awaiting_alias.pop(record.triton_model_name, None)  # an alias took it
        if record.request_event_id is not None:
            self._answer(record.request_event_id, record)
            self.unconfirmed.discard(record.request_event_id)  # read back from the log: it is there

    def _answer(self, event_id: str, record: ModelReadyData | ModelPreparedData) -> None:
        self.answered[event_id] = record
        self.answered.move_to_end(event_id)
        while len(self.answered) > MAX_REMEMBERED_REQUESTS:
            forgotten, _ = self.answered.popitem(last=False)
            self.unconfirmed.discard(forgotten)

    def remember(self, event_id: str, record: ModelReadyData | ModelPreparedData) -> None:
        """``event_id`` was answered by ``record``, published but not yet confirmed (see :meth:`confirm_answers`)."""
        if isinstance(record, ModelReadyData):
            self.by_triton_model[record.triton_model_name] = record
        self._answer(event_id, record)
        self.unconfirmed.add(event_id)

    def confirm_answers(self, event_ids: list[str]) -> None:
        """The broker acknowledged the answers to ``event_ids``: they are on the log."""
        self.unconfirmed.difference_update(event_ids)

    def answer_confirmed(self, event_id: str) -> bool:
        """True when the answer to ``event_id`` is known to be on the log (not only published)."""
        return event_id in self.answered and event_id not in self.unconfirmed

    def is_served_record(self, record: ModelReadyData) -> bool:
        """True when ``record`` restates what its alias serves now (same Triton model and generation)."""
        served = self.routes.get((record.model_name, record.alias))
        return (
            served is not None
            and served.generation == record.generation
            and served.triton_model_name == record.triton_model_name
        )

    def _generations(self, model_name: str) -> AliasGenerations:
        return self.generations.get(model_name) or AliasGenerations()

    def next_generation(self, model_name: str) -> int:
        return self._generations(model_name).next_generation()

    def served(self, model_name: str, alias: str) -> ModelReadyData | None:
        return self.routes.get((model_name, alias))

    def answer_to(self, event_id: str) -> ModelReadyData | ModelPreparedData | None:
        return self.answered.get(event_id)

    def is_routed(self, triton_model_name: str) -> bool:
        """True while some alias of some model is served by ``triton_model_name``."""
        return any(record.triton_model_name == triton_model_name for record in self.routes.values())

    def loaded_versions(self) -> dict[str, dict[str, int]]:
        """Registered model -> {Triton model: version} of every version announced as served."""
        return _by_model(self.by_triton_model.values())

    def staged_versions(self) -> dict[str, dict[str, int]]:
        """Registered model -> {Triton model: version} of every version announced as served or prepared."""
        return _by_model([*self.by_triton_model.values(), *self.prepared.values()])

    def known_model(self, triton_model_name: str) -> ServableVersionData | None:
        """The latest announced record of this Triton model (its digest, signature, flavor), served or prepared."""
        return self.by_triton_model.get(triton_model_name) or self.prepared.get(triton_model_name)


def _by_model(records: Iterable[ServableVersionData]) -> dict[str, dict[str, int]]:
    versions: dict[str, dict[str, int]] = {}
    for record in records:
        versions.setdefault(record.model_name, {})[record.triton_model_name] = record.version
    return versions
