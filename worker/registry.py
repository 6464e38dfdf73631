"""Resolve a promotion request against the MLflow registry: the registry is the truth, the event a hint.

An alias is re-read when the request is handled (webhooks arrive out of order). Missing models,
versions and aliases are permanent rejections; an unreachable or failing server is transient.
MLflow's own HTTP retries are turned down (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``) so the worker's
backoff is the only retry loop and a dead server is noticed in seconds, not minutes. Every call
is blocking, so each runs in a thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from runtime.settings import MLflowSettings
from schemas.promotion_rejected import ReasonCode
from schemas.promotion_requested import PromotionRequestedData
from worker.errors import PermanentFailure, TransientFailure

T = TypeVar("T")

_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
_CLIENT_ERRORS = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
}


@dataclass(frozen=True, slots=True)
class ResolvedVersion:
    model_name: str
    alias: str
    version: int
    run_id: str | None
    source: str
    version_tags: dict[str, str] = field(default_factory=dict)
    model_tags: dict[str, str] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


def configure_mlflow_client(settings: MLflowSettings) -> None:
    """One retry loop (ours) and a bounded request time for MLflow's HTTP client."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(settings.request_timeout_s)))


def _classify(error: Exception, what: str) -> Exception:
    if isinstance(error, MlflowException) and error.error_code in _CLIENT_ERRORS:
        return error
    return TransientFailure(f"MLflow registry call failed ({what}): {error}")


class Registry:
    """The MLflow model registry, as the worker uses it."""

    def __init__(self, settings: MLflowSettings) -> None:
        configure_mlflow_client(settings)
        self.tracking_uri = settings.tracking_uri
        self._client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)

    async def _run(self, what: str, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except Exception as error:
            raise _classify(error, what) from None

    async def resolve(self, request: PromotionRequestedData) -> ResolvedVersion:
        """The version to serve for ``request``, as the registry says now."""
        name = request.model_name
        try:
            registered = await self._run(f"get model {name!r}", lambda: self._client.get_registered_model(name))
        except MlflowException as error:
            if error.error_code == _NOT_FOUND:
                raise PermanentFailure(
                    ReasonCode.MODEL_NOT_FOUND, f"registered model {name!r} does not exist in MLflow"
                ) from None
            raise PermanentFailure(
                ReasonCode.INVALID_EVENT, f"MLflow refused model {name!r}: {error.message}"
            ) from None
        try:
            if request.version is not None:
                version = await self._run(
                    f"get {name} v{request.version}",
                    lambda: self._client.get_model_version(name, str(request.version)),
                )
            else:
                version = await self._run(
                    f"get {name}@{request.alias}",
                    lambda: self._client.get_model_version_by_alias(name, request.alias),
                )
        except MlflowException as error:
            if request.version is not None:
                raise PermanentFailure(
                    ReasonCode.VERSION_NOT_FOUND, f"model {name!r} has no version {request.version} in MLflow"
                ) from None
            raise PermanentFailure(
                ReasonCode.ALIAS_NOT_FOUND,
                f"model {name!r} has no alias {request.alias!r} in MLflow (deleted or never set): {error.message}",
            ) from None
        self._check_status(version)
        return ResolvedVersion(
            model_name=name,
            alias=request.alias,
            version=int(version.version),
            run_id=version.run_id or None,
            source=version.source or "",
            version_tags=dict(version.tags or {}),
            model_tags=dict(registered.tags or {}),
        )

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

    async def download(self, resolved: ResolvedVersion, destination: Path) -> Path:
        """Download the version's artifacts into ``destination`` (a fresh directory)."""
        path = await self._run(
            f"download {resolved.model_uri}",
            lambda: mlflow.artifacts.download_artifacts(
                artifact_uri=resolved.model_uri, dst_path=str(destination), tracking_uri=self.tracking_uri
            ),
        )
        return Path(path)

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

    async def write_version_tags(self, name: str, version: int, tags: Mapping[str, str], remove: Iterable[str]) -> None:
        """Delete ``remove`` where present, then set ``tags`` in their order; unchanged tags are not rewritten."""

        def write() -> None:
            current = self._client.get_model_version(name, str(version)).tags or {}
            for key in remove:
                if key in current:
                    self._client.delete_model_version_tag(name, str(version), key)
            for key, value in tags.items():
                if current.get(key) != value:
                    self._client.set_model_version_tag(name, str(version), key, value)

        await self._run(f"write tags of {name} v{version}", write)

    async def alias_version(self, name: str, alias: str) -> int:
        version = await self._run(f"get {name}@{alias}", lambda: self._client.get_model_version_by_alias(name, alias))
        return int(version.version)

    async def model_tag(self, name: str, key: str) -> str | None:
        registered = await self._run(f"get model {name!r}", lambda: self._client.get_registered_model(name))
        return (registered.tags or {}).get(key)

    async def set_model_tag(self, name: str, key: str, value: str) -> None:
        await self._run(f"tag model {name!r}", lambda: self._client.set_registered_model_tag(name, key, value))
