"""Resolve a promotion request against the MLflow registry: the registry is the truth, the event a hint.

An alias is re-read when the request is handled (webhooks arrive out of order). How a failed call
ends is decided by what MLflow answered, never by a catch-all:

- unreachable, timed out, 429 or 5xx (MLflow turns connection errors into an ``INTERNAL_ERROR``
  :class:`MlflowException`, a 5xx): :class:`TransientFailure`, retried with backoff;
- a 4xx answer: :class:`PermanentFailure`, ``model_not_found`` / ``version_not_found`` /
  ``alias_not_found`` when the registry has no such thing, ``registry_refused`` when it refused
  the worker (credentials, permissions) or the call;
- any other exception is a bug: it propagates unchanged and the pipeline reports ``internal_error``.

MLflow's own HTTP retries are turned down (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``) so the worker's
backoff is the only retry loop and a dead server is noticed in seconds, not minutes. Every call
is blocking, so each runs in a thread.

Round trips are on a promotion's critical path (issue 14: a light version loads in ~0.2 s), so the
calls that do not depend on each other run at once: the registered model and the version; and the
caller may start the download as soon as the version number is known (``on_version``), beside the
rest of the resolve. The download looks up where the version's artifacts are stored, lists that
location and fetches its files in parallel: what ``mlflow.artifacts.download_artifacts`` does for a
``models:/`` URI, with the same ``registered_model_meta`` file, so the tree and its digest are the same.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from importlib.abc import MetaPathFinder
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

import requests
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import ERROR_CODE_TO_HTTP_STATUS, MlflowException
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.models_artifact_repo import REGISTERED_MODEL_META_FILE_NAME
from mlflow.utils.yaml_utils import write_yaml

from runtime.settings import MLflowSettings
from schemas.promotion_rejected import ReasonCode
from schemas.promotion_requested import PromotionRequestedData
from worker.errors import PermanentFailure, TransientFailure

T = TypeVar("T")

#: MLflow answers an alias that is not set with INVALID_PARAMETER_VALUE, a missing model or version
#: with RESOURCE_DOES_NOT_EXIST.
_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST"})
_ALIAS_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
_TOO_MANY_REQUESTS = 429
_ACCESS_DENIED = frozenset({401, 403})
_SERVER_ERROR = 500


@dataclass(frozen=True, slots=True)
class ResolvedVersion:
    model_name: str
    alias: str
    version: int
    run_id: str | None
    source: str
    version_tags: dict[str, str] = field(default_factory=dict)
    model_tags: dict[str, str] = field(default_factory=dict)
    registry_version: int | None = None  # what the MLflow alias points at now (None: it does not exist)

    @property
    def pinned(self) -> bool:
        """True when the request pinned a version the MLflow alias does not point at."""
        return self.registry_version != self.version

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


#: The environment variables of MLflow's HTTP client that :func:`configure_mlflow_client` sets for the process.
MLFLOW_CLIENT_VARIABLES = _RETRIES, _TIMEOUT, _POOL = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_POOL_MAXSIZE",
)


#: What MLflow's client imports on every REST call to learn whether it runs on Databricks (its request header
#: provider asks for a notebook context, IPython, a Spark session): 11 imports per call.
PLATFORM_PROBE_MODULES = ("dbruntime", "IPython", "pyspark")


class KnownAbsentModules(MetaPathFinder):
    """First on ``sys.meta_path``: fails the import of these top-level modules (and their submodules) at once.

    Python remembers no failed import: each searched every ``sys.path`` entry again under the import lock. Unlike
    a ``None`` in ``sys.modules``, this leaves ``"name" in sys.modules`` false, which libraries read as "never
    imported" (MLflow's dataset code, pandas, matplotlib do).
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


def remember_absent_platform_modules() -> list[str]:
    """Make the imports of the probe modules not installed here fail at once, and return their names.

    Their failed imports cost 0.66 ms of CPU per MLflow call (0.14 ms after), ~20 calls per promotion, and the
    download's parallel file fetches queued on the import lock behind them. An installed module is never touched;
    called again, it changes nothing.
    """
    if any(isinstance(finder, KnownAbsentModules) for finder in sys.meta_path):
        return []
    absent = [name for name in PLATFORM_PROBE_MODULES if name not in sys.modules and find_spec(name) is None]
    if absent:
        sys.meta_path.insert(0, KnownAbsentModules(absent))
    return absent


def configure_mlflow_client(settings: MLflowSettings, concurrent_promotions: int = 1) -> None:
    """One retry loop (ours), a bounded request time, connections kept for every call that runs at once, and no
    search for Databricks' modules on each call (:func:`remember_absent_platform_modules`)."""
    remember_absent_platform_modules()
    os.environ[_RETRIES] = "0"
    os.environ[_TIMEOUT] = str(max(1, round(settings.request_timeout_s)))
    # Each download fetches its files on MLflow's own threads (2 per core, at most 20), beside the resolve's two
    # calls. MLflow's pool keeps 10 connections: at concurrency 4 on 2 cores the others were closed after each
    # call ("Connection pool is full, discarding connection") and opened again for the next. An operator's value wins.
    calls_at_once = concurrent_promotions * (min(20, 2 * (os.cpu_count() or 1)) + 2)
    os.environ.setdefault(_POOL, str(max(10, calls_at_once)))


def http_status(error: Exception) -> int | None:
    """The HTTP status of MLflow's answer in ``error``; None when the error is not an MLflow answer."""
    if isinstance(error, MlflowException):
        return ERROR_CODE_TO_HTTP_STATUS.get(error.error_code, _SERVER_ERROR)
    if isinstance(error, requests.HTTPError) and error.response is not None:  # artifact listing
        return error.response.status_code
    return None


def is_transient(error: Exception) -> bool:
    """True for what retrying can fix: MLflow unreachable, slow, overloaded or failing."""
    if isinstance(error, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
        return True
    status = http_status(error)
    return status is not None and (status >= _SERVER_ERROR or status == _TOO_MANY_REQUESTS)


def _mlflow_message(error: Exception) -> str:
    if isinstance(error, MlflowException):
        return error.message.removeprefix(f"{error.error_code}: ")  # a RestException repeats its code
    return str(error)


def _error_code(error: Exception) -> str:
    return error.error_code if isinstance(error, MlflowException) else f"HTTP {http_status(error)}"


@dataclass(frozen=True, slots=True)
class Missing:
    """What a 4xx answer to one call means when MLflow says the thing does not exist."""

    codes: frozenset[str]
    reason: ReasonCode
    message: Callable[[str], str]  # MLflow's message -> ours


def refusal(error: Exception, what: str, missing: Missing | None) -> PermanentFailure:
    """The permanent failure for MLflow's 4xx answer ``error`` to the call ``what``."""
    if missing is not None and isinstance(error, MlflowException) and error.error_code in missing.codes:
        return PermanentFailure(missing.reason, missing.message(error.message))
    message = f"MLflow refused to {what} ({_error_code(error)}): {_mlflow_message(error)}"
    if http_status(error) in _ACCESS_DENIED:
        message += (
            "; check that the worker's MLflow credentials (MLFLOW_TRACKING_TOKEN or "
            "MLFLOW_TRACKING_USERNAME/PASSWORD) may read this model"
        )
    return PermanentFailure(ReasonCode.REGISTRY_REFUSED, message)


class Registry:
    """The MLflow model registry, as the worker uses it."""

    def __init__(
        self, settings: MLflowSettings, client: MlflowClient | None = None, *, concurrent_promotions: int = 1
    ) -> None:
        configure_mlflow_client(settings, concurrent_promotions)
        self.tracking_uri = settings.tracking_uri
        self._client = client or MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)

    @property
    def _registry(self) -> Any:
        """The registry client under MlflowClient (built at its first use, then kept by it), for the calls MlflowClient
        precedes with a read of the registered model to refuse prompts (``_raise_if_prompt``): one MLflow read more per
        download and per write-back call. A prompt never gets that far: MlflowClient's reads of the registered model
        and of the version, which the resolve makes, refuse it from what they read anyway."""
        return self._client._get_registry_client()  # type: ignore[no-untyped-call]

    async def _run(self, what: str, call: Callable[[], T], missing: Missing | None = None) -> T:
        """``call()`` in a thread; MLflow's failures become Transient/PermanentFailure, bugs propagate."""
        try:
            return await asyncio.to_thread(call)
        except Exception as error:
            if is_transient(error):
                raise TransientFailure(f"MLflow registry call failed ({what}): {error}") from error
            if http_status(error) is not None:
                raise refusal(error, what, missing) from error
            raise

    async def resolve(
        self, request: PromotionRequestedData, *, on_version: Callable[[int], None] | None = None
    ) -> ResolvedVersion:
        """The version to serve for ``request``, as the registry says now.

        The registered model and the version are read at once; ``on_version(number)`` is called as soon as
        the version is read (the caller may start its download while the other call is under way). When
        both calls fail, the registered model's failure is the one reported (a missing model, not a
        missing version).
        """
        name = request.model_name
        registered_call = asyncio.ensure_future(self._registered_model(name))
        version_call = asyncio.ensure_future(self._version(request))
        if on_version is not None:
            version_call.add_done_callback(
                lambda call: (
                    on_version(int(call.result().version))
                    if not call.cancelled() and call.exception() is None
                    else None
                )
            )
        calls: list[asyncio.Future[Any]] = [registered_call, version_call]
        try:
            await asyncio.wait(calls)
        finally:
            for call in calls:  # a cancelled resolve leaves no call behind
                call.cancel()
        errors = [error for call in calls if (error := call.exception()) is not None]
        if errors:
            raise errors[0]  # in the order of `calls`: the registered model's failure says the most
        registered, version = registered_call.result(), version_call.result()
        self._check_status(version)
        found = int(version.version)
        alias_version = (registered.aliases or {}).get(request.alias)
        return ResolvedVersion(
            model_name=name,
            alias=request.alias,
            version=found,
            registry_version=found if request.version is None else _int_or_none(alias_version),
            run_id=version.run_id or None,
            source=version.source or "",
            version_tags=dict(version.tags or {}),
            model_tags=dict(registered.tags or {}),
        )

    async def _registered_model(self, name: str) -> RegisteredModel:
        return await self._run(
            f"get model {name!r}",
            lambda: self._client.get_registered_model(name),
            Missing(
                _NOT_FOUND, ReasonCode.MODEL_NOT_FOUND, lambda _: f"registered model {name!r} does not exist in MLflow"
            ),
        )

    async def _version(self, request: PromotionRequestedData) -> ModelVersion:
        name = request.model_name
        if request.version is not None:
            number = request.version
            return await self._run(
                f"get {name} v{number}",
                lambda: self._client.get_model_version(name, str(number)),
                Missing(
                    _NOT_FOUND,
                    ReasonCode.VERSION_NOT_FOUND,
                    lambda _: f"model {name!r} has no version {number} in MLflow",
                ),
            )
        alias = request.alias
        return await self._run(
            f"get {name}@{alias}",
            lambda: self._client.get_model_version_by_alias(name, alias),
            Missing(
                _ALIAS_NOT_FOUND,
                ReasonCode.ALIAS_NOT_FOUND,
                lambda said: f"model {name!r} has no alias {alias!r} in MLflow (deleted or never set): {said}",
            ),
        )

    async def _download_uri(self, name: str, version: int) -> str:
        uri = await self._run(
            f"find the artifacts of {name} v{version}",
            lambda: self._registry.get_model_version_download_uri(name, str(version)),
            Missing(_NOT_FOUND, ReasonCode.VERSION_NOT_FOUND, lambda _: f"model {name!r} has no version {version}"),
        )
        return str(uri)

    @staticmethod
    def _check_status(version: ModelVersion) -> None:
        status = version.status or "READY"
        if status == "PENDING_REGISTRATION":
            raise TransientFailure(f"model {version.name} v{version.version} is still registering in MLflow")
        if status != "READY":
            raise PermanentFailure(
                ReasonCode.VERSION_NOT_READY,
                f"model {version.name} v{version.version} has status {status} in MLflow; only READY versions "
                f"are served ({version.status_message or 'no status message'})",
            )

    async def download(self, name: str, version: int, destination: Path) -> Path:
        """Download the version's artifacts into ``destination`` (a fresh directory); return the model's directory."""
        uri = await self._download_uri(name, version)
        await self._run(
            f"download models:/{name}/{version}",
            lambda: download_model_tree(uri, destination, self.tracking_uri, name, version),
        )
        return destination

    async def aliases(self, name: str) -> dict[str, int] | None:
        """Alias -> version of registered model ``name`` as the registry says now; None once it is deleted."""
        try:
            registered = await self._run(f"get model {name!r}", lambda: self._client.get_registered_model(name))
        except MlflowException as error:
            if error.error_code == _NOT_FOUND:
                return None
            raise TransientFailure(f"MLflow refused to read model {name!r}: {error.message}") from None
        return {alias: int(version) for alias, version in (registered.aliases or {}).items()}

    async def run_metrics(self, run_id: str) -> dict[str, float]:
        run = await self._run(f"get run {run_id}", lambda: self._client.get_run(run_id))
        return dict(run.data.metrics)

    # -- write-back (worker/registry_writeback.py): needs EDIT on the registered model -------------

    async def write_version_tags(
        self,
        name: str,
        version: int,
        tags: Mapping[str, str],
        remove: Iterable[str],
        *,
        before_each_call: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Delete ``remove`` where present, then set ``tags`` in their order; unchanged tags are not rewritten.

        One MLflow call at a time, each after ``before_each_call()`` (the write-back lets promotions go first).
        """
        what = f"write tags of {name} v{version}"

        async def call(run: Callable[[], object]) -> None:
            if before_each_call is not None:
                await before_each_call()
            await self._run(what, run)

        read = await self._run(what, lambda: self._client.get_model_version(name, str(version)))
        current = read.tags or {}
        for key in remove:
            if key in current:
                await call(partial(self._registry.delete_model_version_tag, name, str(version), key))
        for key, value in tags.items():
            if current.get(key) != value:
                await call(partial(self._registry.set_model_version_tag, name, str(version), key, value))

    async def alias_version(self, name: str, alias: str) -> int:
        version = await self._run(f"get {name}@{alias}", lambda: self._client.get_model_version_by_alias(name, alias))
        return int(version.version)

    async def model_tag(self, name: str, key: str) -> str | None:
        registered = await self._run(f"get model {name!r}", lambda: self._client.get_registered_model(name))
        return (registered.tags or {}).get(key)

    async def set_model_tag(self, name: str, key: str, value: str) -> None:
        await self._run(f"tag model {name!r}", lambda: self._registry.set_registered_model_tag(name, key, value))


def download_model_tree(uri: str, destination: Path, tracking_uri: str, name: str, version: int) -> None:
    """Every file under ``uri`` into ``destination`` (fetched in parallel), plus MLflow's ``registered_model_meta``.

    Blocking. The same tree as ``mlflow.artifacts.download_artifacts("models:/<name>/<version>")``:
    MLflow adds that file to a downloaded model directory, and the artifact digest covers it. MLflow lists the
    root twice (to see that it is not empty, then to walk it): each listing is a round trip to the server on the
    promotion's critical path, so this download's repository keeps the listings it read.
    """
    destination.mkdir(parents=True, exist_ok=True)
    repository = get_artifact_repository(uri, tracking_uri=tracking_uri, registry_uri=tracking_uri)
    listed = functools.cache(repository.list_artifacts)
    repository.list_artifacts = listed  # type: ignore[method-assign]  # this repository is ours, for one download
    repository.download_artifacts("", dst_path=str(destination))  # type: ignore[no-untyped-call]
    if (destination / MLMODEL_FILE_NAME).is_file():
        meta = {"model_name": name, "model_version": str(version)}
        write_yaml(  # type: ignore[no-untyped-call]
            str(destination), REGISTERED_MODEL_META_FILE_NAME, meta, overwrite=True, ensure_yaml_extension=False
        )


def _int_or_none(version: object) -> int | None:
    return int(str(version)) if version is not None else None
