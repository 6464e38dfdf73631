"""Which Triton endpoint an inference goes to: round robin over those in rotation, failing ones ejected.

An inference that failed on an endpoint before Triton ran it ejects what failed for a backoff: the whole
endpoint when it could not be reached or dropped the connection before answering (``scope="endpoint"``),
else the (endpoint, Triton model) pair when Triton answered that it does not have that model ready or is
unavailable (``scope="model"``). The backoff starts at ``Backoff.initial_s`` and doubles after every failed
trial up to ``Backoff.max_s``. Once it passed, one caller's request at a time goes there as a trial (a
circuit breaker's half-open state); any answer from Triton for it lets the pair (and the endpoint) back in.
A trial that fails is sent again elsewhere by the caller of this class, like any first failure.

While nothing is ejected, choosing is one index step: nothing is allocated per request. When every
endpoint is ejected for a model, the one that failed least recently is still tried rather than failing
fast. An ejection nobody tried for ``FORGET_AFTER_S`` (no requests for that model) is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.metrics import GatewayMetrics
from runtime.logging import get_logger

log = get_logger(__name__)

ENDPOINT_SCOPE = "endpoint"
MODEL_SCOPE = "model"
#: An ejection whose trial is this much overdue (nobody asked for that model since) is forgotten.
FORGET_AFTER_S = 60.0
_SWEEP_INTERVAL_S = 1.0

Key = tuple[int, str | None]  # endpoint index, Triton model (None: the whole endpoint)


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 5.0

    def after(self, backoff_s: float | None) -> float:
        """The next backoff: ``initial_s`` first, then twice the previous one, at most ``max_s``."""
        return min(self.max_s, self.initial_s if backoff_s is None else backoff_s * 2)


@dataclass(slots=True)
class _Ejection:
    reason: str
    backoff_s: float
    trial_at: float  # clock time from which one trial request may go
    failed_at: float  # clock time of the last failure seen
    on_trial: bool = False


@dataclass(frozen=True, slots=True)
class Choice:
    """An endpoint to send one inference to; ``trials`` are the ejections this request is the trial of."""

    index: int
    trials: tuple[Key, ...] = field(default=())


class EndpointRotation:
    """Round robin over ``endpoints`` (their names label metrics and logs) with ejections as the module doc says."""

    def __init__(
        self,
        endpoints: Sequence[str],
        backoff: Backoff,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one Triton endpoint is required")
        self.endpoints = list(endpoints)
        self.backoff = backoff
        self.metrics = metrics
        self._clock = clock
        self._plain = [Choice(index) for index in range(len(endpoints))]  # reused: no allocation per request
        self._next = 0
        self._ejected: dict[Key, _Ejection] = {}
        self._swept_at = 0.0
        self.listeners: list[Callable[[], None]] = []  # told after every ejection and readmission

    def ejected_keys(self) -> list[Key]:
        """What is out of rotation now, by endpoint index: (index, Triton model or None for all)."""
        return list(self._ejected)

    def ejected(self) -> dict[tuple[str, str | None], str]:
        """What is out of rotation now: (endpoint, Triton model or None for all) -> reason."""
        return {(self.endpoints[index], model): e.reason for (index, model), e in self._ejected.items()}

    def choose(self, triton_model: str) -> Choice:
        """The endpoint for the next inference of ``triton_model``."""
        if not self._ejected:
            index = self._next
            self._next = index + 1 if index + 1 < len(self._plain) else 0
            return self._plain[index]
        choice = self._choose_around(triton_model, None)
        assert choice is not None  # noqa: S101 - without an endpoint to avoid, some endpoint is always left
        return choice

    def choose_other(self, triton_model: str, avoid: int) -> Choice | None:
        """For a retry: another endpoint than ``avoid`` (none on trial if any is in rotation); None without one."""
        return self._choose_around(triton_model, avoid)

    def answered(self, choice: Choice, triton_model: str) -> None:
        """Triton answered the request (whatever the answer): the endpoint and the pair are good."""
        if self._ejected:
            self._readmit((choice.index, None))
            self._readmit((choice.index, triton_model))

    def failed(self, choice: Choice, triton_model: str, *, scope: str, reason: str) -> None:
        """The request failed on ``choice`` before Triton ran it: eject what failed (or keep it out longer)."""
        if scope == MODEL_SCOPE:
            self._readmit((choice.index, None))  # Triton answered, so the endpoint itself is up
            key: Key = (choice.index, triton_model)
        else:
            key = (choice.index, None)
            self._end_trials(choice)  # nothing is known about the pair: its trial may go again
        now = self._clock()
        ejection = self._ejected.get(key)
        if ejection is None:
            backoff_s = self.backoff.after(None)
            self._ejected[key] = _Ejection(reason, backoff_s, now + backoff_s, now)
            self.metrics.ejections.labels(self.endpoints[choice.index], scope).inc()
            self._count_ejected()
            log.warning(
                "Triton endpoint out of rotation",
                endpoint=self.endpoints[choice.index],
                triton_model=triton_model if scope == MODEL_SCOPE else "*",
                reason=reason,
                backoff_s=backoff_s,
            )
            return
        ejection.failed_at = now
        ejection.reason = reason
        if key in choice.trials:
            ejection.on_trial = False
            ejection.backoff_s = self.backoff.after(ejection.backoff_s)
            ejection.trial_at = now + ejection.backoff_s
            log.info(
                "trial request failed, Triton endpoint stays out of rotation",
                endpoint=self.endpoints[choice.index],
                triton_model=triton_model if scope == MODEL_SCOPE else "*",
                reason=reason,
                backoff_s=ejection.backoff_s,
            )

    def released(self, choice: Choice) -> None:
        """The request ended without telling (timeout, cancelled, unreadable answer): a trial it carried may go
        again after its backoff."""
        if choice.trials:
            self._end_trials(choice)

    def _end_trials(self, choice: Choice) -> None:
        now = self._clock()
        for key in choice.trials:
            ejection = self._ejected.get(key)
            if ejection is not None and ejection.on_trial:
                ejection.on_trial = False
                ejection.trial_at = now + ejection.backoff_s

    def _choose_around(self, triton_model: str, avoid: int | None) -> Choice | None:
        now = self._clock()
        if now - self._swept_at >= _SWEEP_INTERVAL_S:
            self._forget_idle(now)
        count = len(self._plain)
        start = self._next
        healthy: int | None = None
        for step in range(count):
            index = (start + step) % count
            if index == avoid:
                continue
            keys = self._keys_of(index, triton_model)
            if not keys:
                if healthy is None:
                    healthy = index
                continue
            due = [self._ejected[key] for key in keys]
            # A first try may be the trial; a retry goes where nothing is in doubt, if anywhere.
            if avoid is None and all(not e.on_trial and e.trial_at <= now for e in due):
                for ejection in due:
                    ejection.on_trial = True
                self._next = (index + 1) % count
                return Choice(index, keys)
        if healthy is not None:
            self._next = (healthy + 1) % count
            return self._plain[healthy]
        others = [index for index in range(count) if index != avoid]
        if not others:
            return None
        return self._plain[min(others, key=lambda index: self._last_failure(index, triton_model))]

    def _keys_of(self, index: int, triton_model: str) -> tuple[Key, ...]:
        return tuple(key for key in ((index, None), (index, triton_model)) if key in self._ejected)

    def _last_failure(self, index: int, triton_model: str) -> float:
        return max(self._ejected[key].failed_at for key in self._keys_of(index, triton_model))

    def _readmit(self, key: Key, why: str = "a request was answered") -> None:
        ejection = self._ejected.pop(key, None)
        if ejection is None:
            return
        index, triton_model = key
        scope = ENDPOINT_SCOPE if triton_model is None else MODEL_SCOPE
        self.metrics.readmissions.labels(self.endpoints[index], scope).inc()
        self._count_ejected()
        log.info(
            "Triton endpoint back in rotation",
            endpoint=self.endpoints[index],
            triton_model=triton_model or "*",
            reason=ejection.reason,
            why=why,
        )

    def _forget_idle(self, now: float) -> None:
        self._swept_at = now
        idle = [key for key, e in self._ejected.items() if not e.on_trial and now - e.trial_at > FORGET_AFTER_S]
        for key in idle:
            self._readmit(key, why=f"no request tried it for {FORGET_AFTER_S:g} s")

    def _count_ejected(self) -> None:
        endpoints = sum(1 for _, model in self._ejected if model is None)
        self.metrics.ejected.labels(ENDPOINT_SCOPE).set(endpoints)
        self.metrics.ejected.labels(MODEL_SCOPE).set(len(self._ejected) - endpoints)
        for listener in self.listeners:
            listener()
