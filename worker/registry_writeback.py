"""Write the worker's decisions back onto the MLflow registry, in the background.

After a decision is published and confirmed, the worker tags the model version (``promoter.status``,
``promoter.aliases``, ``promoter.since``, ``promoter.triton_model``, ``promoter.digest``, and on a
rejection ``promoter.reason_code`` / ``promoter.message``) and keeps a bounded alias history on the
registered model (``promoter.alias_history``). Serving never waits for this: decisions go into a
small bounded queue that one task drains, MLflow calls run in threads, failures are retried with
backoff and counted, and a read-only MLflow identity turns write-back off for the run.
The newest decision per version wins while MLflow is down; the history keeps every change.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH

from runtime.logging import get_logger
from schemas.model_ready import ModelReadyData
from schemas.promotion_rejected import PromotionRejectedData, ReasonCode
from worker.metrics import WorkerMetrics
from worker.registry_priority import PromotionsFirst
from worker.retry import backoff_delay
from worker.serving_state import ServingState

log = get_logger(__name__)

TAG_PREFIX = "promoter."
STATUS_TAG = "promoter.status"
ALIASES_TAG = "promoter.aliases"
SINCE_TAG = "promoter.since"
TRITON_MODEL_TAG = "promoter.triton_model"
DIGEST_TAG = "promoter.digest"
REASON_CODE_TAG = "promoter.reason_code"
MESSAGE_TAG = "promoter.message"
ALIAS_HISTORY_TAG = "promoter.alias_history"
#: MLflow 3.x servers accept 5000 characters per registry tag value (newer ones more): stay under both.
MAX_HISTORY_CHARS = min(5000, MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH)
MAX_MESSAGE_CHARS = 4000
MAX_PENDING = 1000

_FORBIDDEN = {"PERMISSION_DENIED", "UNAUTHENTICATED"}
_SERVING_ONLY = (TRITON_MODEL_TAG, DIGEST_TAG)
_REJECTION_ONLY = (REASON_CODE_TAG, MESSAGE_TAG)
#: Rejections about a model, version or alias the registry does not have: there is no version to tag.
_NO_VERSION_TO_TAG = {
    ReasonCode.INVALID_EVENT.value,
    ReasonCode.MODEL_NOT_FOUND.value,
    ReasonCode.VERSION_NOT_FOUND.value,
    ReasonCode.ALIAS_NOT_FOUND.value,
}


class TagWriter(Protocol):
    """The registry calls write-back needs (``worker.registry.Registry`` in production)."""

    async def write_version_tags(
        self,
        name: str,
        version: int,
        tags: Mapping[str, str],
        remove: Iterable[str],
        *,
        before_each_call: Callable[[], Awaitable[None]] | None = None,
    ) -> None: ...

    async def alias_version(self, name: str, alias: str) -> int: ...

    async def model_tag(self, name: str, key: str) -> str | None: ...

    async def set_model_tag(self, name: str, key: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class VersionTags:
    """The ``promoter.*`` tags one version should carry now; ``version`` None: the one ``alias`` points at.

    ``tags`` are written in order and ``promoter.status`` comes last (MLflow sets one tag per call), so
    a reader who sees a status also sees the other tags of that decision.
    """

    model_name: str
    version: int | None
    alias: str | None
    tags: dict[str, str]
    remove: tuple[str, ...]
    unless_version_in: frozenset[int] = frozenset()  # versions serving when a rejection was decided

    @property
    def key(self) -> tuple[str, str]:
        return self.model_name, str(self.version) if self.version is not None else f"@{self.alias}"


@dataclass(frozen=True, slots=True)
class AliasChange:
    """``alias`` of ``model_name`` moved to ``version`` (None: stopped serving) at ``at``."""

    model_name: str
    alias: str
    version: int | None
    at: str


Decision = VersionTags | AliasChange
_Item = VersionTags | tuple[str, list[AliasChange]]  # one pending write: a version's tags, or a model's history


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def version_tags(state: ServingState, model_name: str, version: int, at: str) -> VersionTags:
    """The tags of ``version`` after the state changed: serving under its aliases, else retired."""
    routes = [r for (model, _), r in state.routes.items() if model == model_name and r.version == version]
    if not routes:
        tags = {SINCE_TAG: at, STATUS_TAG: "retired"}
        return VersionTags(model_name, version, None, tags, (ALIASES_TAG, *_REJECTION_ONLY))
    record = routes[0]
    tags = {
        ALIASES_TAG: ",".join(sorted(r.alias for r in routes)),
        SINCE_TAG: at,
        TRITON_MODEL_TAG: record.triton_model_name,
        DIGEST_TAG: record.artifact_sha256,
        STATUS_TAG: "serving",
    }
    return VersionTags(model_name, version, None, tags, _REJECTION_ONLY)


def alias_moved(
    state: ServingState, model_name: str, alias: str, now: ModelReadyData | None, before: int | None
) -> list[Decision]:
    """What to write after ``alias`` moved from version ``before`` to ``now`` (None: stopped serving)."""
    at = now_iso()
    decisions: list[Decision] = [AliasChange(model_name, alias, now.version if now else None, at)]
    changed = {before} if before is not None else set()
    if now is not None:
        changed.add(now.version)
    decisions += [version_tags(state, model_name, version, at) for version in sorted(changed)]
    return decisions


def rejection(state: ServingState, data: PromotionRejectedData) -> list[Decision]:
    """The tags of a rejected version (the alias's version at write time when the request named none)."""
    if data.reason_code in _NO_VERSION_TO_TAG or (data.version is None and data.alias is None):
        return []
    serving = frozenset(r.version for (model, _), r in state.routes.items() if model == data.model_name)
    if data.version is not None and data.version in serving:
        return []  # the version serves under another alias: that stays its status
    tags = {
        SINCE_TAG: now_iso(),
        REASON_CODE_TAG: data.reason_code,
        MESSAGE_TAG: data.message[:MAX_MESSAGE_CHARS],
        STATUS_TAG: "rejected",
    }
    return [VersionTags(data.model_name, data.version, data.alias, tags, (ALIASES_TAG, *_SERVING_ONLY), serving)]


def updated_history(entries: list[dict[str, Any]], changes: Iterable[AliasChange], size: int) -> list[dict[str, Any]]:
    """``entries`` (newest first) after ``changes``: the alias's open entry closes, a new one opens."""
    history = list(entries)
    for change in changes:
        current = next((e for e in history if e.get("alias") == change.alias and e.get("to") is None), None)
        if current is not None and current.get("version") == change.version:
            continue  # re-announced: nothing moved
        if current is not None:
            current["to"] = change.at
        if change.version is not None:
            history.insert(0, {"alias": change.alias, "version": change.version, "from": change.at, "to": None})
    return history[:size]


def encode_history(entries: list[dict[str, Any]]) -> str:
    """Compact JSON, oldest entries dropped until it fits an MLflow tag value."""
    kept = list(entries)
    while True:
        text = json.dumps(kept, separators=(",", ":"))
        if len(text) <= MAX_HISTORY_CHARS or not kept:
            return text
        kept.pop()


def decode_history(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    try:
        entries = json.loads(text)
    except json.JSONDecodeError:
        log.warning("alias history tag is not JSON; starting it again", tag=ALIAS_HISTORY_TAG)
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


@dataclass
class _Pending:
    versions: OrderedDict[tuple[str, str], VersionTags] = field(default_factory=OrderedDict)
    history: OrderedDict[str, list[AliasChange]] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self.versions) + sum(len(c) for c in self.history.values())


class RegistryWriteback:
    """A bounded queue of decisions and the one task that writes them to MLflow."""

    def __init__(
        self,
        writer: TagWriter,
        metrics: WorkerMetrics,
        *,
        history_size: int = 20,
        max_pending: int = MAX_PENDING,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        promotions_first: PromotionsFirst | None = None,
    ) -> None:
        self.writer = writer
        self.promotions_first = promotions_first or PromotionsFirst(max_wait_s=0.0)
        self.metrics = metrics
        self.history_size = history_size
        self.max_pending = max_pending
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.enabled = True
        self.pending = _Pending()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- the serving path: never waits -----------------------------------------------------------

    def submit(self, decisions: Iterable[Decision]) -> None:
        """Queue decisions (newest per version wins); returns at once."""
        if not self.enabled:
            return
        for decision in decisions:
            if isinstance(decision, VersionTags):
                self.pending.versions.pop(decision.key, None)
                self.pending.versions[decision.key] = decision
            else:
                self.pending.history.setdefault(decision.model_name, []).append(decision)
                self.pending.history.move_to_end(decision.model_name)
        self._drop_overflow()
        if len(self.pending):
            self._idle.clear()
            self._wake.set()

    def _drop_overflow(self) -> None:
        while len(self.pending) > self.max_pending:
            if self.pending.versions:
                (model, version), _ = self.pending.versions.popitem(last=False)
            else:
                model, changes = next(iter(self.pending.history.items()))
                version = f"alias history ({changes.pop(0).alias})"
                if not changes:
                    del self.pending.history[model]
            self.metrics.registry_writebacks.labels("dropped").inc()
            log.warning("write-back queue full: oldest decision dropped", model=model, version=version)

    async def wait_idle(self) -> None:
        """Until nothing is pending (or write-back stopped)."""
        await self._idle.wait()

    # -- the background task ---------------------------------------------------------------------

    async def run_forever(self) -> None:
        failures = 0
        while self.enabled:
            await self._wake.wait()
            self._wake.clear()
            while self.enabled and len(self.pending):
                if await self._write_next():
                    failures = 0
                    continue
                failures += 1
                delay = backoff_delay(failures, initial_s=self.backoff_initial_s, max_s=self.backoff_max_s)
                await asyncio.sleep(delay)  # backoff before trying MLflow again
            self._idle.set()

    async def _write_next(self) -> bool:
        """Write the oldest pending item; False on a failure worth retrying (the item stays pending)."""
        if self.pending.versions:
            _, item = self.pending.versions.popitem(last=False)
            return await self._attempt(item.model_name, item.version, lambda: self._write_version(item), item)
        model, changes = self.pending.history.popitem(last=False)
        return await self._attempt(model, None, lambda: self._write_history(model, changes), (model, changes))

    async def _attempt(
        self, model: str, version: int | None, write: Callable[[], Awaitable[None]], item: _Item
    ) -> bool:
        try:
            await write()
        except MlflowException as error:
            if error.error_code in _FORBIDDEN:
                self._stop(model, version, error)
                return True
            self.metrics.registry_writebacks.labels("dropped").inc()
            log.warning("MLflow refused a write-back; dropped", model=model, version=version, error=error.message)
            return True
        except Exception as error:  # MLflow down or failing: keep it and try again after a backoff
            self._requeue(item)
            self.metrics.registry_writebacks.labels("failed").inc()
            log.warning(
                "could not write the decision back to MLflow; will retry (serving is not affected)",
                model=model,
                version=version,
                error=str(error),
                pending=len(self.pending),
            )
            return False
        self.metrics.registry_writebacks.labels("written").inc()
        return True

    def _requeue(self, item: _Item) -> None:
        if isinstance(item, VersionTags):
            if item.key not in self.pending.versions:  # a newer decision for it wins
                self.pending.versions[item.key] = item
                self.pending.versions.move_to_end(item.key, last=False)
            return
        model, changes = item
        self.pending.history[model] = changes + self.pending.history.get(model, [])
        self.pending.history.move_to_end(model, last=False)

    def _stop(self, model: str, version: int | None, error: MlflowException) -> None:
        self.enabled = False
        dropped = len(self.pending) + 1
        self.pending = _Pending()
        self.metrics.registry_writebacks.labels("forbidden").inc()
        log.warning(
            "MLflow refused the worker's write to registry tags: write-back is off until the worker restarts; "
            "serving is not affected. Give the worker's MLflow identity EDIT on registered models, or set "
            "PROMOTER_WORKER_REGISTRY_WRITEBACK=false to silence this",
            model=model,
            version=version,
            error=error.message,
            dropped=dropped,
        )
        self._idle.set()

    async def _write_version(self, item: VersionTags) -> None:
        version = item.version
        turn = self.promotions_first.wait_turn
        if version is None:
            assert item.alias is not None  # noqa: S101 - VersionTags without a version always names an alias
            await turn()
            version = await self.writer.alias_version(item.model_name, item.alias)
            if version in item.unless_version_in:
                return  # the alias points at a version that serves: a rejection does not change it
        await turn()
        await self.writer.write_version_tags(item.model_name, version, item.tags, item.remove, before_each_call=turn)
        log.info("decision written to MLflow", model=item.model_name, version=version, status=item.tags[STATUS_TAG])

    async def _write_history(self, model: str, changes: list[AliasChange]) -> None:
        await self.promotions_first.wait_turn()
        entries = decode_history(await self.writer.model_tag(model, ALIAS_HISTORY_TAG))
        history = updated_history(entries, changes, self.history_size)
        await self.promotions_first.wait_turn()
        await self.writer.set_model_tag(model, ALIAS_HISTORY_TAG, encode_history(history))
