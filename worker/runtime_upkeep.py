"""Upkeep of the shared scikit-learn runtime: loaded on every endpoint at start, old releases' runtimes removed.

**Preload.** A Triton without the runtime makes the first sklearn promotion on it pay the runtime's
load (~2 s, scikit-learn's imports) on top of its own. So the worker stages :data:`RUNTIME_MODEL`
and loads it on every endpoint at start-up, in the background: readiness does not wait for it, a
Triton that is down or refuses is retried with the worker's backoff up to
``PROMOTER_WORKER_MAX_ATTEMPTS`` times and then left to the first promotion (which loads the
runtime first anyway, :func:`worker.shared_runtime.load_runtime_first`). It takes the runtime's
load lock, so a promotion arriving meanwhile waits for this load instead of starting a second one.

**Old runtimes.** Each worker release whose runtime files differ stages a runtime of its own
(``promoter-sklearn-runtime-<digest>``); versions staged by an older release keep delegating to
theirs. A runtime other than this release's is removed (unloaded on every endpoint, then its
directory deleted) once no model directory of the repository names it in its ``serving.json``,
scratch directories of stagings under way included: a version that still delegates to it has its
directory (retirement deletes a version's directory only after unloading it), so it is never
removed under a live version. A replica of the older release still running (a rolling upgrade)
stages its runtime again when it next needs it. This release's runtime is never removed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from runtime.logging import get_logger
from worker.errors import PermanentFailure, TransientFailure
from worker.model_loads import ModelLoads
from worker.retry import backoff_delay
from worker.shared_runtime import RUNTIME_MODEL, RUNTIME_PREFIX, required_runtime, stage_runtime
from worker.staging import StagingLease, remove_staged_model
from worker.triton_fleet import TritonEndpoint, TritonFleet

log = get_logger(__name__)


async def preload_runtime(
    endpoints: Sequence[TritonEndpoint],
    repository: Path,
    loads: ModelLoads,
    lease: StagingLease | None,
    *,
    max_attempts: int,
    backoff_initial_s: float,
    backoff_max_s: float,
) -> None:
    """Stage :data:`RUNTIME_MODEL` if missing and load it on every endpoint lacking it; never raises for Triton."""
    try:
        if await asyncio.to_thread(stage_runtime, repository, lease):
            log.info("staged the shared sklearn runtime", triton_model=RUNTIME_MODEL)
    except OSError as error:
        log.warning(
            "could not stage the shared sklearn runtime at start-up; the first sklearn promotion tries again",
            triton_model=RUNTIME_MODEL,
            repository=str(repository),
            error=str(error),
        )
        return
    await asyncio.gather(
        *(
            _preload_on(endpoint, loads, max_attempts, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s)
            for endpoint in endpoints
        )
    )


async def _preload_on(
    endpoint: TritonEndpoint, loads: ModelLoads, max_attempts: int, *, backoff_initial_s: float, backoff_max_s: float
) -> None:
    for attempt in range(1, max_attempts + 1):
        try:
            async with loads.exclusive(RUNTIME_MODEL):
                if await endpoint.is_ready(RUNTIME_MODEL):
                    return
                began = time.perf_counter()
                await endpoint.load(RUNTIME_MODEL)
        except PermanentFailure as failure:
            log.error(  # noqa: TRY400 - the reason, without a traceback
                "the shared sklearn runtime does not load; sklearn promotions on this endpoint will fail the same way",
                triton_model=RUNTIME_MODEL,
                endpoint=endpoint.url,
                error=failure.message,
            )
            return
        except TransientFailure as failure:
            if attempt == max_attempts:
                log.warning(
                    "gave up preloading the shared sklearn runtime; the first sklearn promotion loads it",
                    triton_model=RUNTIME_MODEL,
                    endpoint=endpoint.url,
                    attempts=attempt,
                    error=failure.message,
                )
                return
            delay = backoff_delay(attempt, initial_s=backoff_initial_s, max_s=backoff_max_s)
            log.info(
                "could not preload the shared sklearn runtime yet; retrying",
                endpoint=endpoint.url,
                retry_in_s=round(delay, 2),
                error=failure.message,
            )
            await asyncio.sleep(delay)  # backoff before asking that Triton again
        else:
            log.info(
                "preloaded the shared sklearn runtime",
                triton_model=RUNTIME_MODEL,
                endpoint=endpoint.url,
                seconds=round(time.perf_counter() - began, 3),
            )
            return


def runtimes_in_use(repository: Path) -> set[str]:
    """The runtimes named by the ``serving.json`` of every model directory, scratch ones included (blocking)."""
    used: set[str] = set()
    for path in repository.iterdir() if repository.is_dir() else ():
        if path.is_dir() and not path.name.startswith(RUNTIME_PREFIX):
            runtime = required_runtime(path)
            if runtime is not None:
                used.add(runtime)
    return used


def unused_old_runtimes(repository: Path) -> list[str]:
    """Runtime directories of other releases that no model directory delegates to (blocking)."""
    if not repository.is_dir():
        return []
    old = sorted(
        path.name
        for path in repository.iterdir()
        if path.name.startswith(RUNTIME_PREFIX) and path.name != RUNTIME_MODEL and path.is_dir()
    )
    if not old:
        return []
    used = runtimes_in_use(repository)
    return [runtime for runtime in old if runtime not in used]


async def remove_unused_runtimes(
    fleet: TritonFleet, repository: Path, loads: ModelLoads, lease: StagingLease | None
) -> list[str]:
    """Unload and delete every old release's runtime no version delegates to; the ones removed."""
    removed: list[str] = []
    for runtime in await asyncio.to_thread(unused_old_runtimes, repository):
        async with loads.exclusive(runtime):
            if runtime not in await asyncio.to_thread(unused_old_runtimes, repository):
                continue  # a version naming it was staged meanwhile
            try:
                await fleet.unload_everywhere(runtime)
            except TransientFailure as error:
                log.warning(
                    "old sklearn runtime kept for now: its unload failed", triton_model=runtime, error=error.message
                )
                continue
            if await asyncio.to_thread(remove_staged_model, repository, runtime, lease):
                removed.append(runtime)
                log.info(
                    "removed an old shared sklearn runtime no version delegates to",
                    triton_model=runtime,
                    current=RUNTIME_MODEL,
                )
    return removed


async def remove_unused_runtimes_forever(
    fleet: TritonFleet, repository: Path, loads: ModelLoads, lease: StagingLease | None, interval_s: float
) -> None:
    """:func:`remove_unused_runtimes` now and every ``interval_s``; a failure is logged, never fatal."""
    while True:
        try:
            await remove_unused_runtimes(fleet, repository, loads, lease)
        except Exception:  # a broken repository entry must not stop the worker: logged, tried again
            log.exception("removing old sklearn runtimes failed; tried again later", repository=str(repository))
        await asyncio.sleep(interval_s)  # periodic: versions of older releases retire at any time
