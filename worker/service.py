"""Handle batches of promotion requests: parse, coalesce, dedupe, promote, then announce or reject.

Every record ends in exactly one place before its offset is committed: ``model.ready`` (served),
``model.rejected`` + the DLQ (permanent failure, or transient failures past the retry limit), the
DLQ alone (bytes that are not a promotion request), or nowhere new when it changes nothing (below).
Requests for the same (model, alias) queued in one batch coalesce to the newest.

When ``model.ready`` is published (one record per decision, plus answers people wait for):

- A request that changes what is served gets a record with the next ``generation``.
- A request already answered on the log (Kafka redelivered it, a dead letter was replayed twice,
  another replica's answer to it arrived while this one promoted it) gets nothing new: its answer
  is on the log, where gateways replay it and a waiting requester (``promoter_client``, which reads
  the log from its start) finds it. It is re-announced only while its answer's publication is not
  confirmed (the batch failed before the broker's acknowledgement, so the record may never have
  reached the log).
- A new request whose outcome is what is served already (same Triton model under the alias,
  READY everywhere) changes nothing. A DAG or the CLI may be waiting for its event id, so it is
  answered with the served record unchanged except ``request_event_id`` (same ``generation``:
  every reader ignores it as a decision). Requests of origin ``mlflow_webhook`` (the ingress and
  the registry reconcile loop) have nobody waiting, so nothing is published for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aiokafka import ConsumerRecord

from runtime.logging import bind_event, get_logger
from runtime.settings import TopicSettings
from schemas.catalog import InvalidEventError, parse_any_event
from schemas.envelope import CONTENT_TYPE, CloudEvent
from schemas.model_ready import ModelReady, ModelReadyData, ServingStopped, ServingStoppedData
from schemas.prepared_version import ModelPrepared, ModelPreparedData, PrepareRequested
from schemas.promotion_rejected import PromotionRejected, PromotionRejectedData, ReasonCode
from schemas.promotion_requested import PromotionRequested, PromotionRequestedData
from schemas.topics import MODEL_READY, PROMOTION_REQUESTED
from worker.dead_lettered_records import DeadLetteredRecords, RecordPlace, place_of
from worker.dead_letters import ErrorType, SourceRecord, dead_letter_headers
from worker.errors import PermanentFailure, TransientFailure
from worker.metrics import WorkerMetrics
from worker.promotion import StageClock
from worker.registry_writeback import Decision, RegistryWriteback, alias_moved, rejection
from worker.retry import RetriesExhaustedError, retry_transient
from worker.serving_state import ServingState
from worker.settings import WorkerSettings

log = get_logger(__name__)

#: Origins whose requests nobody waits an answer for: the ingress answers MLflow before the worker
#: acts, and the registry reconcile loop fires and forgets.
UNWAITED_ORIGINS = frozenset({"mlflow_webhook"})


class Publisher(Protocol):
    async def publish(
        self,
        message: bytes,
        topic: str,
        *,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
        no_confirm: bool = False,
    ) -> Any: ...


class PromotionRunner(Protocol):
    async def promote(self, request: Any, request_event_id: str, clock: StageClock) -> ModelReadyData: ...

    async def prepare(self, request: Any, request_event_id: str, clock: StageClock) -> ModelPreparedData: ...


#: What arrives on the requests topic: serve (or stop serving) an alias, or prepare a version.
Request = PromotionRequested | PrepareRequested
REQUEST_TYPES: tuple[type[CloudEvent], ...] = PROMOTION_REQUESTED.event_types
ResultT = TypeVar("ResultT")


async def publish_event(publisher: Publisher, event: CloudEvent, topic: str, key: str) -> None:
    """Publish one event (CloudEvents structured mode) keyed ``key``, and wait for the broker's confirmation."""
    await publisher.publish(event.to_json_bytes(), topic, key=key.encode(), headers={"content-type": CONTENT_TYPE})


def _source(record: ConsumerRecord[bytes, bytes]) -> SourceRecord:
    return SourceRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value if record.value is not None else b"",
        headers=list(record.headers or ()),
    )


@dataclass
class Outcomes:
    """What one line of work published and decided, confirmed together before its offsets may be committed.

    One per batch at concurrency 1; one per model's lane when several models are worked on at once
    (worker/concurrent_batches.py), so one lane's confirmation never waits for, or covers, another's.
    """

    confirmations: list[Awaitable[Any]] = field(default_factory=list)  # the broker's pending acknowledgements
    answering: list[str] = field(default_factory=list)  # request event ids answered, confirmed with them
    decided: list[Decision] = field(default_factory=list)  # written back to MLflow once confirmed
    lettered: list[RecordPlace] = field(default_factory=list)  # records whose dead letter was published


#: A record of a batch and what is left to do for it: None when nothing (coalesced, malformed, lettered before).
QueuedRecord = tuple[ConsumerRecord[bytes, bytes], "Request | None"]


class PromotionService:
    def __init__(
        self,
        settings: WorkerSettings,
        topics: TopicSettings,
        promoter: PromotionRunner,
        state: ServingState,
        publisher: Publisher,
        metrics: WorkerMetrics,
        writeback: RegistryWriteback | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.promoter = promoter
        self.state = state
        self.publisher = publisher
        self.metrics = metrics
        self.source = f"/model-promoter/worker/{settings.replica_id}"
        self.writeback = writeback
        self.dead_lettered = DeadLetteredRecords()  # a redelivered rejection adds no second letter

    # -- the serving-state log ---------------------------------------------------------------------

    def apply_log_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Rebuild/follow: apply one ``model.ready`` record to the serving state."""
        self.metrics.log_records.inc()
        try:
            event = parse_any_event(record.value or b"", MODEL_READY.event_types)
        except InvalidEventError as error:
            log.warning("unreadable record on the serving-state log", offset=record.offset, error=error.message)
            return
        assert isinstance(event, ModelReady | ServingStopped | ModelPrepared)  # noqa: S101 - narrowed by `allowed`
        if isinstance(event, ModelPrepared):
            self.state.prepare(event.data)
        else:
            self.state.apply(event.data)

    # -- requests ----------------------------------------------------------------------------------

    async def triage(self, records: Sequence[ConsumerRecord[bytes, bytes]], outcomes: Outcomes) -> list[QueuedRecord]:
        """Parse, dead-letter what is malformed, coalesce per (model, alias): each record with its work, in order."""
        queued: list[QueuedRecord] = []
        for record in records:
            if self.dead_lettered.already_lettered(record):
                self.metrics.promotions.labels("duplicate", "").inc()
                log.info("redelivered record: its dead letter is already on the topic", offset=record.offset)
                queued.append((record, None))
                continue
            try:
                event = parse_any_event(record.value or b"", REQUEST_TYPES)
                assert isinstance(event, PromotionRequested | PrepareRequested)  # noqa: S101 - narrowed by the types
                queued.append((record, event))
            except InvalidEventError as error:
                queued.append((record, None))
                await self._dead_letter(
                    outcomes,
                    record,
                    reason_code=ReasonCode.INVALID_EVENT,
                    reason=f"not a valid promotion request: {error.message}",
                    error_type="malformed",
                    attempts=1,
                    first_failure=datetime.now(UTC),
                    event_id=None,
                )
        newest = {
            (request.data.model_name, request.data.alias): request.id
            for _, request in queued
            if isinstance(request, PromotionRequested)
        }
        for index, (record, request) in enumerate(queued):
            if isinstance(request, PromotionRequested) and newest[(request.data.model_name, request.data.alias)] != (
                request.id
            ):
                self.metrics.promotions.labels("coalesced", "").inc()
                log.info("coalesced into a newer request", event_id=request.id, model=request.data.model_name)
                queued[index] = (record, None)
        return queued

    async def confirm(self, outcomes: Outcomes) -> None:
        """Wait until the broker acknowledged every outcome in ``outcomes`` (before committing their offsets).

        On failure nothing counts as confirmed: a redelivery re-announces the answers and letters again.
        """
        await asyncio.gather(*outcomes.confirmations)
        self.state.confirm_answers(outcomes.answering)
        self.dead_lettered.confirm(outcomes.lettered)
        if self.writeback is not None:
            self.writeback.submit(outcomes.decided)  # queued only: MLflow is written in the background

    async def handle_request(self, record: ConsumerRecord[bytes, bytes], event: Request, outcomes: Outcomes) -> None:
        data = event.data
        alias = data.alias if isinstance(data, PromotionRequestedData) else None
        with bind_event(event.id, model=data.model_name, version=data.version, alias=alias):
            answered = self.state.answer_to(event.id)
            if answered is not None:
                await self._answer_duplicate(event.id, answered, outcomes)
                return
            if isinstance(event, PrepareRequested):
                await self._prepare(record, event, outcomes)
                return
            if event.data.action == "unserve":
                await self._unserve(event, outcomes)
                return
            await self._promote(record, event, outcomes)

    async def _attempt(
        self,
        outcomes: Outcomes,
        record: ConsumerRecord[bytes, bytes],
        event: Request,
        run: Callable[[StageClock], Awaitable[ResultT]],
        clock: StageClock,
    ) -> ResultT | None:
        """``run`` with retries of transient failures; None once the request is rejected and dead-lettered."""
        first_failure: datetime | None = None
        attempts = 0

        async def attempt(number: int) -> ResultT:
            nonlocal attempts, first_failure
            attempts = number
            try:
                return await run(clock)
            except (PermanentFailure, TransientFailure):
                first_failure = first_failure or datetime.now(UTC)
                raise

        def on_retry(number: int, failure: TransientFailure, delay: float) -> None:
            self.metrics.retries.inc()
            log.warning("transient failure, retrying", attempt=number, delay_s=round(delay, 2), error=failure.message)

        try:
            result, _ = await retry_transient(
                attempt,
                max_attempts=self.settings.max_attempts,
                initial_s=self.settings.backoff_initial_s,
                max_s=self.settings.backoff_max_s,
                on_retry=on_retry,
            )
        except RetriesExhaustedError as exhausted:
            message = f"gave up after {exhausted.attempts} attempts at stage {clock.current}: {exhausted.last.message}"
            await self._reject(
                outcomes, record, event, ReasonCode.RETRIES_EXHAUSTED, message, "transient", attempts, first_failure
            )
            return None
        except PermanentFailure as failure:
            message = f"stage {clock.current}: {failure.message}"
            await self._reject(outcomes, record, event, failure.reason, message, "permanent", attempts, first_failure)
            return None
        except Exception as error:  # a bug must not stop the consumer: dead-letter it for a person
            log.exception("unexpected error in promotion", stage=clock.current)
            message = f"internal error at stage {clock.current}: {type(error).__name__}: {error}"
            await self._reject(
                outcomes, record, event, ReasonCode.INTERNAL_ERROR, message, "permanent", attempts, first_failure
            )
            return None
        return result

    async def _prepare(self, record: ConsumerRecord[bytes, bytes], event: PrepareRequested, outcomes: Outcomes) -> None:
        """Load and prove a version on every endpoint, route nothing: announce ``model.prepared``."""
        began = time.perf_counter()
        clock = StageClock()
        prepared = await self._attempt(
            outcomes, record, event, lambda clock: self.promoter.prepare(event.data, event.id, clock), clock
        )
        if prepared is None:
            return
        await self._announce(prepared, outcomes)
        outcomes.answering.append(event.id)
        pushed_out = self.state.prepare(prepared)
        self.state.remember(event.id, prepared)
        for stage, seconds in clock.seconds.items():
            self.metrics.stage_seconds.labels(stage).observe(seconds)
        self.metrics.promotions.labels("prepared", "").inc()
        log.info(
            "version prepared: loaded and proved everywhere, routed by no alias",
            version=prepared.version,
            triton_model=prepared.triton_model_name,
            expires_at=prepared.expires_at.isoformat(),
            pushed_out=pushed_out,
            seconds=round(time.perf_counter() - began, 3),
            stages=clock.seconds,
        )

    async def _promote(
        self, record: ConsumerRecord[bytes, bytes], event: PromotionRequested, outcomes: Outcomes
    ) -> None:
        began = time.perf_counter()
        clock = StageClock()
        ready = await self._attempt(
            outcomes, record, event, lambda clock: self.promoter.promote(event.data, event.id, clock), clock
        )
        if ready is None:
            return
        answered = self.state.answer_to(event.id)
        if answered is not None:  # on the log meanwhile: another replica had it too (evicted, its commit lost)
            await self._answer_duplicate(event.id, answered, outcomes)
            return
        if self.state.is_served_record(ready):
            await self._answer_already_served(event, ready, outcomes)
            return
        await self._announce(ready, outcomes)
        outcomes.answering.append(event.id)
        before = self.state.served(ready.model_name, ready.alias)
        stale = not self.state.apply(ready)
        self.state.remember(event.id, ready)
        if stale:  # another replica's newer decision for this alias arrived meanwhile
            self.metrics.promotions.labels("duplicate", "").inc()
            log.info("a newer decision for this alias was applied meanwhile", triton_model=ready.triton_model_name)
            return
        outcomes.decided += alias_moved(
            self.state, ready.model_name, ready.alias, ready, before.version if before else None
        )
        for stage, seconds in clock.seconds.items():
            self.metrics.stage_seconds.labels(stage).observe(seconds)
        self.metrics.promotion_seconds.observe(time.perf_counter() - began)
        self.metrics.promotions.labels("served", "").inc()
        log.info(
            "model served",
            version=ready.version,
            triton_model=ready.triton_model_name,
            generation=ready.generation,
            seconds=round(time.perf_counter() - began, 3),
            stages=clock.seconds,
        )

    async def _answer_duplicate(
        self, event_id: str, answered: ModelReadyData | ModelPreparedData, outcomes: Outcomes
    ) -> None:
        """A request answered before: publish nothing, unless that answer may not have reached the log."""
        self.metrics.promotions.labels("duplicate", "").inc()
        if event_id in outcomes.answering or self.state.answer_confirmed(event_id):
            log.info("duplicate request: its answer is already on the log", triton_model=answered.triton_model_name)
            return
        await self._announce(answered, outcomes)
        outcomes.answering.append(event_id)
        log.info(
            "duplicate request re-announced: its answer was never confirmed", triton_model=answered.triton_model_name
        )

    async def _answer_already_served(
        self, event: PromotionRequested, served: ModelReadyData, outcomes: Outcomes
    ) -> None:
        """The request's outcome is the serving state: no decision; an answer only if somebody may wait."""
        self.metrics.promotions.labels("already_served", "").inc()
        if event.data.origin in UNWAITED_ORIGINS:
            log.info("already served: nothing to announce", triton_model=served.triton_model_name)
            return
        answer = served.model_copy(update={"request_event_id": event.id})  # same generation: no reader moves
        await self._announce(answer, outcomes)
        outcomes.answering.append(event.id)
        self.state.remember(event.id, answer)
        log.info("already served: answered with the served record", triton_model=served.triton_model_name)

    async def _unserve(self, event: PromotionRequested, outcomes: Outcomes) -> None:
        data = event.data
        before = self.state.served(data.model_name, data.alias)
        if before is None:
            # Still announced: the requester gets its answer, and gateways ignore a stop of nothing.
            log.info("alias was not served; stop announced anyway")
        stopped = ServingStoppedData(
            model_name=data.model_name,
            alias=data.alias,
            generation=self.state.next_generation(data.model_name),
            reason=data.reason,
            request_event_id=event.id,
        )
        envelope = ServingStopped(source=self.source, subject=data.model_name, data=stopped)
        await self._publish(self.topics.model_ready, data.model_name, envelope.to_json_bytes(), outcomes)
        if self.state.apply(stopped) and before is not None:
            outcomes.decided += alias_moved(self.state, data.model_name, data.alias, None, before.version)
        self.metrics.promotions.labels("unserved", "").inc()
        log.info("alias no longer served", generation=stopped.generation)

    async def _announce(self, answer: ModelReadyData | ModelPreparedData, outcomes: Outcomes) -> None:
        envelope: ModelReady | ModelPrepared = (
            ModelPrepared(source=self.source, subject=answer.model_name, data=answer)
            if isinstance(answer, ModelPreparedData)
            else ModelReady(source=self.source, subject=answer.model_name, data=answer)
        )
        await self._publish(self.topics.model_ready, answer.model_name, envelope.to_json_bytes(), outcomes)

    async def _publish(self, topic: str, key: str, value: bytes, outcomes: Outcomes) -> None:
        await self._send(value, topic, key.encode(), {"content-type": CONTENT_TYPE}, outcomes)

    async def _send(
        self, value: bytes, topic: str, key: bytes | None, headers: dict[str, str], outcomes: Outcomes
    ) -> None:
        # Sent at once, confirmed in bulk by confirm() before the offsets are committed.
        confirmation = await self.publisher.publish(value, topic, key=key, headers=headers, no_confirm=True)
        outcomes.confirmations.append(confirmation)

    async def _reject(
        self,
        outcomes: Outcomes,
        record: ConsumerRecord[bytes, bytes],
        event: Request,
        reason: ReasonCode,
        message: str,
        error_type: ErrorType,
        attempts: int,
        first_failure: datetime | None,
    ) -> None:
        data = event.data
        rejected = PromotionRejected(
            source=self.source,
            subject=data.model_name,
            data=PromotionRejectedData(
                model_name=data.model_name,
                alias=data.alias if isinstance(data, PromotionRequestedData) else None,
                version=data.version,
                reason_code=reason.value,
                message=message[:4000],
                attempts=max(attempts, 1),
                request_event_id=event.id,
            ),
        )
        await self._publish(self.topics.model_rejected, data.model_name, rejected.to_json_bytes(), outcomes)
        outcomes.decided += rejection(self.state, rejected.data)
        await self._dead_letter(
            outcomes,
            record,
            reason_code=reason,
            reason=message,
            error_type=error_type,
            attempts=max(attempts, 1),
            first_failure=first_failure or datetime.now(UTC),
            event_id=event.id,
        )
        self.metrics.promotions.labels("rejected", reason.value).inc()
        log.warning("promotion rejected", reason=reason.value, error=message, attempts=attempts)

    async def _dead_letter(
        self,
        outcomes: Outcomes,
        record: ConsumerRecord[bytes, bytes],
        *,
        reason_code: ReasonCode,
        reason: str,
        error_type: ErrorType,
        attempts: int,
        first_failure: datetime,
        event_id: str | None,
    ) -> None:
        source = _source(record)
        headers = dead_letter_headers(
            source,
            reason_code=reason_code.value,
            reason=reason,
            error_type=error_type,
            attempts=attempts,
            first_failure=first_failure,
            last_failure=datetime.now(UTC),
            event_id=event_id,
            replica_id=self.settings.replica_id,
        )
        await self._send(source.value, self.topics.promotion_dlq, source.key, headers, outcomes)
        outcomes.lettered.append(place_of(record))
        self.metrics.dead_letters.labels(reason_code.value, error_type).inc()
        if error_type == "malformed":
            log.warning(
                "malformed message dead-lettered", offset=record.offset, partition=record.partition, error=reason
            )
