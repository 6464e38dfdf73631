"""What a failed MLflow call becomes: transient (retry), permanent with a reason, or a bug left to surface.

The exceptions are MLflow's and requests' own classes, built the way the MLflow client raises them.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import socket
import sys
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import pytest
import requests
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException, RestException
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.tracking.request_header.registry import resolve_request_headers

import worker.registry as registry_module
from runtime.settings import MLflowSettings
from schemas.promotion_rejected import ReasonCode
from schemas.promotion_requested import PromotionRequestedData
from worker.errors import PermanentFailure, TransientFailure
from worker.registry import (
    PLATFORM_PROBE_MODULES,
    KnownAbsentModules,
    Registry,
    download_model_tree,
    http_status,
    is_transient,
    remember_absent_platform_modules,
)

pytestmark = pytest.mark.usefixtures("mlflow_client_env")


def rest(error_code: str, message: str) -> MlflowException:
    """What the MLflow client raises for a JSON error answer of the server."""
    return RestException({"error_code": error_code, "message": message})  # type: ignore[no-untyped-call]


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Server Error", response=response)


UNREACHABLE = MlflowException("API request to http://mlflow:5000/api/2.0/x failed with exception Connection refused")


@pytest.mark.parametrize(
    "error",
    [
        UNREACHABLE,  # MLflow wraps connection errors in an INTERNAL_ERROR MlflowException
        rest("TEMPORARILY_UNAVAILABLE", "try later"),
        rest("REQUEST_LIMIT_EXCEEDED", "slow down"),
        rest("DEADLINE_EXCEEDED", "took too long"),
        requests.ConnectionError("connection reset"),
        requests.Timeout("read timed out"),
        _http_error(503),
        TimeoutError(),
    ],
)
def test_unreachable_overloaded_or_failing_mlflow_is_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (rest("RESOURCE_DOES_NOT_EXIST", "no such model"), 404),
        (rest("PERMISSION_DENIED", "no"), 403),
        (MlflowException.invalid_parameter_value("Registered model alias x not found."), 400),
        (_http_error(401), 401),
    ],
)
def test_a_4xx_answer_is_not_transient(error: Exception, status: int) -> None:
    assert not is_transient(error)
    assert http_status(error) == status


@pytest.mark.parametrize("error", [TypeError("unsupported operand"), KeyError("run_id"), ValueError("bad"), OSError()])
def test_a_bug_is_neither_transient_nor_an_mlflow_answer(error: Exception) -> None:
    assert not is_transient(error)
    assert http_status(error) is None


class FailingClient:
    """Stands in for MlflowClient: every call raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return call


class AliasClient:
    """The model exists; the alias lookup raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_registered_model(self, name: str) -> RegisteredModel:
        return RegisteredModel(name)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        raise self.error


def registry(client: Any) -> Registry:
    return Registry(MLflowSettings(tracking_uri="http://127.0.0.1:9"), client=client)


REQUEST = PromotionRequestedData(model_name="iris", alias="champion", requester="tests", origin="cli")


async def test_a_bug_in_the_registry_stage_propagates_unchanged() -> None:
    with pytest.raises(TypeError, match="unsupported operand"):
        await registry(FailingClient(TypeError("unsupported operand"))).resolve(REQUEST)


async def test_an_unreachable_mlflow_is_a_transient_failure() -> None:
    with pytest.raises(TransientFailure, match=r"MLflow registry call failed \(get model 'iris'\)"):
        await registry(FailingClient(UNREACHABLE)).resolve(REQUEST)


@pytest.mark.parametrize(
    ("client", "reason", "words"),
    [
        (
            FailingClient(rest("RESOURCE_DOES_NOT_EXIST", "x")),
            ReasonCode.MODEL_NOT_FOUND,
            "registered model 'iris' does not exist in MLflow",
        ),
        (
            FailingClient(rest("PERMISSION_DENIED", "user bob cannot read")),
            ReasonCode.REGISTRY_REFUSED,
            "MLflow refused to get model 'iris' (PERMISSION_DENIED): user bob cannot read; "
            "check that the worker's MLflow credentials",
        ),
        (
            AliasClient(MlflowException.invalid_parameter_value("Registered model alias champion not found.")),
            ReasonCode.ALIAS_NOT_FOUND,
            "model 'iris' has no alias 'champion' in MLflow (deleted or never set): Registered model alias",
        ),
        (
            AliasClient(rest("UNAUTHENTICATED", "token expired")),
            ReasonCode.REGISTRY_REFUSED,
            "MLflow refused to get iris@champion (UNAUTHENTICATED)",
        ),
    ],
)
async def test_a_4xx_answer_is_permanent_with_its_own_reason(client: Any, reason: ReasonCode, words: str) -> None:
    with pytest.raises(PermanentFailure) as caught:
        await registry(client).resolve(REQUEST)
    assert caught.value.reason == reason
    assert words in caught.value.message


class FailingArtifacts:
    """Stands in for MLflow's artifact repository: every listing and download answers HTTP ``status``."""

    def __init__(self, status: int) -> None:
        self.status = status

    def list_artifacts(self, path: str | None = None) -> list[Any]:
        raise _http_error(self.status)

    def download_artifacts(self, artifact_path: str, dst_path: str | None = None) -> str:
        raise _http_error(self.status)


async def test_a_4xx_artifact_download_is_refused_and_a_5xx_retried(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("worker.registry.get_artifact_repository", lambda *_, **__: FailingArtifacts(403))
        with pytest.raises(PermanentFailure) as refused:
            await registry(PinnedClient()).download("iris", 1, tmp_path)
        patch.setattr("worker.registry.get_artifact_repository", lambda *_, **__: FailingArtifacts(502))
        with pytest.raises(TransientFailure):
            await registry(PinnedClient()).download("iris", 1, tmp_path)
    assert refused.value.reason == ReasonCode.REGISTRY_REFUSED
    assert "(HTTP 403)" in refused.value.message


async def test_a_real_client_against_a_closed_port_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    real = Registry(MLflowSettings(tracking_uri=f"http://127.0.0.1:{port}", request_timeout_s=2))
    with pytest.raises(TransientFailure, match="MLflow registry call failed"):
        await real.resolve(REQUEST)


class PinnedClient:
    """The model exists; the version and its artifact location fail with ``version_error``; calls are recorded."""

    def __init__(self, version_error: Exception | None = None) -> None:
        self.version_error = version_error
        self.calls: list[str] = []

    def _get_registry_client(self) -> PinnedClient:  # MlflowClient's registry calls, answered here
        return self

    def get_registered_model(self, name: str) -> RegisteredModel:
        self.calls.append("registered model")
        return RegisteredModel(name)

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        self.calls.append("version")
        if self.version_error is not None:
            raise self.version_error
        return ModelVersion(name, version, creation_timestamp=0, source="models:/m-1", status="READY")

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        self.calls.append("download uri")
        if self.version_error is not None:
            raise self.version_error
        return f"mlflow-artifacts:/0/models/m-1/artifacts/{name}-{version}"


PINNED = PromotionRequestedData(model_name="iris", alias="champion", version=3, requester="tests", origin="cli")


async def test_the_resolve_hands_the_version_over_as_soon_as_it_is_read_and_looks_up_no_artifacts() -> None:
    client = PinnedClient()
    started: list[int] = []
    resolved = await registry(client).resolve(PINNED, on_version=started.append)
    assert resolved.version == 3
    assert started == [3]
    assert sorted(client.calls) == ["registered model", "version"], "the download looks its artifacts up itself"
    failing = PinnedClient(rest("RESOURCE_DOES_NOT_EXIST", "no version 3"))
    with pytest.raises(PermanentFailure):
        await registry(failing).resolve(PINNED, on_version=started.append)
    assert started == [3], "no version read: nothing handed over"


async def test_a_missing_version_is_reported_once_whichever_call_fails_first() -> None:
    client = PinnedClient(rest("RESOURCE_DOES_NOT_EXIST", "no version 3"))
    with pytest.raises(PermanentFailure) as caught:
        await registry(client).resolve(PINNED)
    assert caught.value.reason == ReasonCode.VERSION_NOT_FOUND
    assert caught.value.message == "model 'iris' has no version 3 in MLflow"


async def test_the_artifact_location_costs_one_registry_call_not_two(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MlflowClient reads the registered model before it asks where a version's artifacts are (its prompt check);
    the worker asks the registry client under it directly (the resolve already refused a prompt)."""
    recording = PinnedClient()
    monkeypatch.setattr("mlflow.tracking.client.ModelRegistryClient", lambda *_: recording)
    monkeypatch.setattr("worker.registry.download_model_tree", lambda *_: None)
    await Registry(MLflowSettings(tracking_uri="http://127.0.0.1:9")).download("iris", 3, tmp_path)
    assert recording.calls == ["download uri"]


class CountingRepository(LocalArtifactRepository):
    """MLflow's own local artifact repository, counting its listings (each a round trip on an HTTP one)."""

    listed: ClassVar[list[str]] = []

    def list_artifacts(self, path: str | None = None) -> list[Any]:
        CountingRepository.listed.append(path or "")
        return list(super().list_artifacts(path))  # type: ignore[no-untyped-call]


def test_a_download_lists_each_directory_of_the_model_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stored = tmp_path / "stored"
    (stored / "extra").mkdir(parents=True)
    for name, text in {"MLmodel": "flavors: {}\n", "model.pkl": "weights", "extra/notes.txt": "n"}.items():
        (stored / name).write_text(text)
    CountingRepository.listed = []
    monkeypatch.setattr("worker.registry.get_artifact_repository", lambda uri, **_: CountingRepository(stored.as_uri()))
    download_model_tree("models:/iris/3", tmp_path / "downloaded", "http://127.0.0.1:9", "iris", 3)
    assert sorted(CountingRepository.listed) == ["", "extra"]  # MLflow alone lists the root twice
    downloaded = sorted(str(p.relative_to(tmp_path / "downloaded")) for p in (tmp_path / "downloaded").rglob("*"))
    assert downloaded == ["MLmodel", "extra", "extra/notes.txt", "model.pkl", "registered_model_meta"]


def test_mlflows_connection_pool_holds_every_call_a_worker_makes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    Registry(MLflowSettings(tracking_uri="http://127.0.0.1:1"), concurrent_promotions=4)
    # 4 promotions, each downloading on MLflow's 4 threads (2 per core) beside its 2 registry calls.
    assert os.environ["MLFLOW_HTTP_POOL_MAXSIZE"] == "24"

    monkeypatch.setenv("MLFLOW_HTTP_POOL_MAXSIZE", "7")  # the operator's value wins
    Registry(MLflowSettings(tracking_uri="http://127.0.0.1:1"), concurrent_promotions=4)
    assert os.environ["MLFLOW_HTTP_POOL_MAXSIZE"] == "7"


@pytest.fixture
def searched_modules(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The top-level names searched on sys.path from now on; sys.meta_path restored afterwards."""
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, KnownAbsentModules)])
    searched: list[str] = []
    original = importlib.machinery.PathFinder.find_spec

    def find_spec(fullname: str, path: Any = None, target: Any = None) -> Any:
        searched.append(fullname.partition(".")[0])
        return original(fullname, path, target)

    monkeypatch.setattr(importlib.machinery.PathFinder, "find_spec", staticmethod(find_spec))
    return searched


def test_mlflow_calls_search_sys_path_for_no_databricks_module(searched_modules: list[str]) -> None:
    resolve_request_headers()  # type: ignore[no-untyped-call]  # what MLflow's client does before each REST call
    assert set(PLATFORM_PROBE_MODULES) <= set(searched_modules), "the probes were expected to search"
    assert remember_absent_platform_modules() == list(PLATFORM_PROBE_MODULES)
    assert remember_absent_platform_modules() == []  # once per process
    searched_modules.clear()
    assert resolve_request_headers() == {  # type: ignore[no-untyped-call]
        "User-Agent": f"mlflow-python-client/{mlflow.__version__}",
        "X-MLflow-Client-Version": mlflow.__version__,
    }
    assert not set(PLATFORM_PROBE_MODULES) & set(searched_modules)
    with pytest.raises(ModuleNotFoundError, match="dbruntime"):
        importlib.import_module("dbruntime.databricks_repl_context")
    assert "dbruntime" not in sys.modules  # libraries read presence there as "imported"


def test_an_installed_probe_module_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, KnownAbsentModules)])
    monkeypatch.setattr(registry_module, "PLATFORM_PROBE_MODULES", ("colorsys", "surely_not_a_module_here"))
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    assert remember_absent_platform_modules() == ["surely_not_a_module_here"]
    import colorsys

    assert colorsys.rgb_to_hsv(0, 0, 0) == (0.0, 0.0, 0.0)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("surely_not_a_module_here")
