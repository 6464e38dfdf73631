"""The promotion pipeline: resolve -> check -> stage -> load -> prove, for one request.

:meth:`Promoter.prepare` runs the same pipeline for a pinned version without an alias: the
caller announces ``model.prepared`` instead, and a later promotion to that version finds it
staged and READY everywhere, so it loads nothing (no ``load`` stage in its ``stage_seconds``).

Each stage is timed (``stage_seconds`` in ``model.ready``, and a histogram). Failures raise
:class:`PermanentFailure` or :class:`TransientFailure`; the caller decides about retries, the
DLQ and announcing. Nothing here changes what is served: the new version is loaded *next to* the
old one, and only the ``model.ready`` the caller publishes moves the gateways.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import structlog

from runtime.logging import get_logger
from runtime.settings import TritonSettings
from schemas.envelope import utc_now
from schemas.model_ready import ModelReadyData, ServableVersionData, SignatureSummary
from schemas.prepared_version import ModelPreparedData, PrepareRequestedData
from schemas.promotion_rejected import ReasonCode
from schemas.promotion_requested import PromotionRequestedData
from worker.artifact_check import ArtifactRejectedError, inspect_tree
from worker.early_download import EarlyDownload
from worker.errors import PermanentFailure
from worker.model_loads import ModelLoads
from worker.parity import ParityCase, prepare_case
from worker.proof import prove_on
from worker.registry import Registry, ResolvedVersion
from worker.registry_priority import PromotionsFirst
from worker.serving_plan import check_metrics, check_required_tag, metric_thresholds, plan_serving
from worker.serving_state import ServingState
from worker.settings import WorkerSettings
from worker.shared_runtime import load_runtime_first
from worker.staging import (
    DigestConflictError,
    StagingLease,
    recorded_digest,
    stage_model,
)
from worker.triton_config import BatchingOptions, InvalidModelTagError, render_config
from worker.triton_fleet import TritonFleet
from worker.triton_naming import triton_model_name

log = get_logger(__name__)


def servable_fields(record: ServableVersionData) -> dict[str, Any]:
    """The fields a served and a prepared record share, as values (nested models kept as they are)."""
    return {field: getattr(record, field) for field in ServableVersionData.model_fields}


class StageClock:
    """Seconds spent per stage; also tells the log which stage a failure happened in."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.current: str | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.current = name
        log.info("stage started", stage=name)  # on-call (and the fault suite) can tell where a promotion is
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - began, 4)


class Promoter:
    def __init__(
        self,
        settings: WorkerSettings,
        triton: TritonSettings,
        registry: Registry,
        fleet: TritonFleet,
        state: ServingState,
        loads: ModelLoads | None = None,
        lease: StagingLease | None = None,
        promotions_first: PromotionsFirst | None = None,
    ) -> None:
        self.settings = settings
        # Marks each promotion under way, so the registry write-back waits for it (worker/registry_priority.py).
        self.promotions_first = promotions_first or PromotionsFirst()
        self.lease = lease  # names this process's scratch directories (worker/staging.py)
        self.repository = triton.model_repository
        self.registry = registry
        self.fleet = fleet
        self.state = state
        self.loads = loads or ModelLoads()  # shared with the fleet repairer: one load of a model at a time

    async def promote(
        self, request: PromotionRequestedData, request_event_id: str, clock: StageClock
    ) -> ModelReadyData:
        """Make the requested version servable and return the ``model.ready`` payload to announce."""
        with self.promotions_first.promoting():
            return await self._promote(request, request_event_id, clock)

    async def _promote(
        self, request: PromotionRequestedData, request_event_id: str, clock: StageClock
    ) -> ModelReadyData:
        async with self._early_download(request.model_name) as download:
            with clock.stage("resolve"):
                if request.version is not None:
                    download.start(request.version)
                resolved = await self.registry.resolve(request, on_version=download.start)
            # An alias request learns its version here: every later log line of this promotion names it.
            with structlog.contextvars.bound_contextvars(version=resolved.version):
                return await self._promote_resolved(resolved, request_event_id, clock, download)

    async def prepare(
        self, request: PrepareRequestedData, request_event_id: str, clock: StageClock
    ) -> ModelPreparedData:
        """Make the pinned version servable, routed by no alias; the ``model.prepared`` payload to announce."""
        with self.promotions_first.promoting():
            return await self._prepare(request, request_event_id, clock)

    async def _prepare(
        self, request: PrepareRequestedData, request_event_id: str, clock: StageClock
    ) -> ModelPreparedData:
        pinned = PromotionRequestedData(  # resolution only: the alias plays no part for a pinned version
            model_name=request.model_name, version=request.version, origin=request.origin, requester=request.requester
        )
        async with self._early_download(request.model_name) as download:
            with clock.stage("resolve"):
                download.start(request.version)
                resolved = await self.registry.resolve(pinned)
            with structlog.contextvars.bound_contextvars(version=resolved.version):
                name = triton_model_name(resolved.model_name, resolved.version)
                ready = await self._make_servable(resolved, name, request_event_id, clock, download)
        return ModelPreparedData(
            **servable_fields(ready),
            expires_at=utc_now() + timedelta(seconds=self.settings.prepared_ttl_s),
        )

    def _early_download(self, model_name: str) -> EarlyDownload:
        """The promotion's download, started once its version is known unless this worker staged that version."""

        def not_staged(version: int) -> bool:
            return self.state.known_model(triton_model_name(model_name, version)) is None

        return EarlyDownload(self.registry, model_name, self.settings.download_dir, wanted=not_staged)

    async def _promote_resolved(
        self, resolved: ResolvedVersion, request_event_id: str, clock: StageClock, download: EarlyDownload
    ) -> ModelReadyData:
        name = triton_model_name(resolved.model_name, resolved.version)
        current = self.state.served(resolved.model_name, resolved.alias)
        if current is not None and current.triton_model_name == name and await self.fleet.ready_everywhere(name):
            # Already served under this alias: nothing to do. The served record (same generation),
            # addressed to this request; the caller decides whether anybody needs it announced.
            return current.model_copy(update={"request_event_id": request_event_id})
        return await self._make_servable(resolved, name, request_event_id, clock, download)

    async def _make_servable(
        self,
        resolved: ResolvedVersion,
        name: str,
        request_event_id: str,
        clock: StageClock,
        download: EarlyDownload,
    ) -> ModelReadyData:
        """Policy, then reuse what is staged (loading it only where it is not READY) or stage it anew."""
        with clock.stage("policy"):
            await self._check_policy(resolved)
        known = self.state.known_model(name)
        if known is not None and recorded_digest(self.repository / name) == known.artifact_sha256:
            with self.loads.promoting(name):
                if not await self.fleet.ready_everywhere(name):  # a prepared or kept version: no load, no stage
                    with clock.stage("load"):
                        await self._load_everywhere(name)
            log.info("reusing staged model", triton_model=name)
            return self._ready(resolved, known, request_event_id, clock)
        return await self._promote_new(resolved, name, request_event_id, clock, download)

    async def _check_policy(self, resolved: ResolvedVersion) -> None:
        check_required_tag(resolved, self.settings.required_version_tag)
        thresholds = metric_thresholds(resolved, self.settings.metric_thresholds)
        if not thresholds:
            return
        if resolved.run_id is None:
            raise PermanentFailure(
                ReasonCode.METRIC_BELOW_THRESHOLD,
                f"{resolved.model_name} v{resolved.version} has no run, so its metrics cannot be checked",
            )
        check_metrics(resolved, thresholds, await self.registry.run_metrics(resolved.run_id))

    async def _promote_new(
        self,
        resolved: ResolvedVersion,
        name: str,
        request_event_id: str,
        clock: StageClock,
        download: EarlyDownload,
    ) -> ModelReadyData:
        # The download's scratch directory goes when the promotion ends (`download` removes it).
        with clock.stage("download"):  # what is left of it: it started with the resolve
            model_dir = await download.model_dir(resolved.version)
        with clock.stage("check"):
            try:
                tree = await asyncio.to_thread(inspect_tree, model_dir, max_bytes=self.settings.max_artifact_bytes)
            except ArtifactRejectedError as error:
                raise PermanentFailure(ReasonCode(error.reason_code), str(error)) from None
            plan = await asyncio.to_thread(plan_serving, model_dir, onnx_backend=self.settings.onnx_backend)
            try:
                batching = BatchingOptions(
                    max_batch_size=self.settings.max_batch_size,
                    max_queue_delay_us=self.settings.max_queue_delay_us,
                    instance_count=self.settings.instance_count,
                ).with_tags(resolved.model_tags)
            except InvalidModelTagError as error:
                raise PermanentFailure(ReasonCode.UNSUPPORTED_SIGNATURE, str(error)) from None
        # MLflow's reference prediction for the parity proof is computed from the checked files while the
        # version is staged and loaded: both take longer than staging, so the proof rarely waits for it.
        reference = asyncio.create_task(asyncio.to_thread(prepare_case, model_dir, plan.signature))
        try:
            with clock.stage("stage"):
                try:
                    await asyncio.to_thread(
                        stage_model,
                        self.repository,
                        name,
                        mlflow_model_dir=model_dir,
                        sha256=tree.sha256,
                        config_pbtxt=render_config(name, plan.signature, batching, backend=plan.backend),
                        serving_spec=plan.serving_spec,
                        stage_files=plan.served_by.stage_files,
                        metadata={"model_name": resolved.model_name, "version": resolved.version},
                        lease=self.lease,
                    )
                except DigestConflictError as error:
                    raise PermanentFailure(ReasonCode.DIGEST_CONFLICT, str(error)) from None
        except BaseException:
            reference.cancel()
            raise
        try:
            with self.loads.promoting(name):
                with clock.stage("load"):
                    await self._load_everywhere(name)
                with clock.stage("prove"):
                    await self._prove(name, await reference, plan.signature)
        except BaseException:
            reference.cancel()
            await self._unload_unless_routed(name)
            raise
        known = ServableVersionData(
            model_name=resolved.model_name,
            version=resolved.version,
            triton_model_name=name,
            artifact_sha256=tree.sha256,
            mlflow_run_id=resolved.run_id,
            flavor=plan.flavor,
            signature=plan.signature,
            max_batch_size=batching.max_batch_size,
        )
        return self._ready(resolved, known, request_event_id, clock)

    async def _load_everywhere(self, name: str) -> None:
        async with self.loads.exclusive(name):
            await load_runtime_first(self.fleet.endpoints, self.repository, name, self.loads, self.lease)
            await self.fleet.load_everywhere(name)

    async def _prove(self, name: str, case: ParityCase, signature: SignatureSummary) -> None:
        """Run the parity case through every Triton endpoint, all at once."""
        rtol, atol = self.settings.parity_rtol, self.settings.parity_atol
        await asyncio.gather(
            *(prove_on(endpoint, name, case, signature, rtol=rtol, atol=atol) for endpoint in self.fleet.endpoints)
        )

    async def _unload_unless_routed(self, name: str) -> None:
        if self.state.is_routed(name):
            return
        try:
            await self.fleet.unload_everywhere(name)
        except Exception as error:  # best effort: the failure being reported matters more
            log.warning("could not unload rejected model", triton_model=name, error=str(error))

    def _ready(
        self, resolved: ResolvedVersion, known: ServableVersionData, request_event_id: str, clock: StageClock
    ) -> ModelReadyData:
        return ModelReadyData(
            **{
                **servable_fields(known),
                "model_name": resolved.model_name,
                "alias": resolved.alias,
                "version": resolved.version,
                "mlflow_run_id": resolved.run_id,
                "generation": self.state.next_generation(resolved.model_name),
                "stage_seconds": dict(clock.seconds),
                "request_event_id": request_event_id,
                "pinned": resolved.pinned,
                "registry_version": resolved.registry_version,
            }
        )
