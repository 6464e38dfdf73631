"""How a promotion fails: permanently (reject now, with a reason code) or transiently (retry).

Every stage raises one of these; the pipeline turns a :class:`PermanentFailure` into
``model.rejected`` + a dead letter, and retries a :class:`TransientFailure` with backoff before
dead-lettering it with reason ``retries_exhausted``. Messages are written for the on-call
engineer: what failed, on what, and what to do next.
"""

from __future__ import annotations

from schemas.promotion_rejected import ReasonCode


class PromotionFailure(Exception):
    """Base of every failure a promotion stage reports."""

    def __init__(self, reason: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PermanentFailure(PromotionFailure):
    """Retrying cannot help: the request, the model or the policy is wrong."""


class TransientFailure(PromotionFailure):
    """MLflow or Triton is unreachable, overloaded or slow: retry with backoff."""

    def __init__(self, message: str) -> None:
        super().__init__(ReasonCode.RETRIES_EXHAUSTED, message)
