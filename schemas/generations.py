"""The ordering rule of the serving-state log (``model.ready``), shared by the worker and the gateways.

The worker draws ``generation`` from one counter per registered model: every decision about any
alias of the model (a promotion, a rollback, an unserve) gets a generation above every one applied
for that model before. So a rollback is a new decision, never mistaken for a stale one.

A reader applies a ``model.ready`` or ``serving.stopped`` only when its generation is above the one
it holds for the same (model, alias). A stopped alias keeps its generation as a tombstone, so a
stale ``model.ready`` read after the stop cannot bring it back; a record about one alias never makes
a record about another alias stale (each alias is its own decision). ``routing.updated`` has its own,
model-level generation (the publishing time) and is not ordered here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: Held for an alias nothing was applied for yet; every real generation (>= 0) is above it.
NO_GENERATION = -1


@dataclass(frozen=True, slots=True)
class AliasGenerations:
    """The generations one reader applied for one registered model: per alias, stopped ones included."""

    by_alias: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def apply(self, alias: str, generation: int) -> AliasGenerations | None:
        """The generations once a record (``alias``, ``generation``) is applied; None when it is stale."""
        if generation <= self.by_alias.get(alias, NO_GENERATION):
            return None
        return AliasGenerations(MappingProxyType({**self.by_alias, alias: generation}))

    def next_generation(self) -> int:
        """The generation of the model's next decision: above every one applied for any of its aliases."""
        return max(self.by_alias.values(), default=NO_GENERATION) + 1
