"""Remember MLflow delivery ids: MLflow retries reuse them, and concurrent retries must not both publish."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Literal

DeliveryState = Literal["new", "in_flight", "done"]

#: Event ids are derived from delivery ids, so the worker's dedupe also catches retries that
#: reach a restarted (or another) ingress replica.
_EVENT_NAMESPACE = uuid.UUID("6f1c1a3e-2d7b-4c35-9a55-8a3f0c1e7b42")


def event_id_for(delivery_id: str) -> str:
    return str(uuid.uuid5(_EVENT_NAMESPACE, delivery_id))


class DeliveryLog:
    """Bounded memory of deliveries: ``claim`` once per id; ``release`` on failure so a retry can win."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._states: OrderedDict[str, DeliveryState] = OrderedDict()

    def claim(self, delivery_id: str) -> DeliveryState:
        """``new`` (now in flight) for the first caller; the current state for everyone else."""
        state = self._states.get(delivery_id)
        if state is not None:
            return state
        self._states[delivery_id] = "in_flight"
        while len(self._states) > self._capacity:
            self._states.popitem(last=False)
        return "new"

    def complete(self, delivery_id: str) -> None:
        self._states[delivery_id] = "done"

    def release(self, delivery_id: str) -> None:
        self._states.pop(delivery_id, None)
