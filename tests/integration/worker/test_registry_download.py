"""The worker's download of a version, against a real MLflow server: the tree (and digest) MLflow's own gives."""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow.artifacts
import pytest

from deploy.stack.local_stack import LocalStack
from runtime.settings import MLflowSettings
from schemas.promotion_requested import PromotionRequestedData
from tests.worker_harness import register_iris
from worker.artifact_check import inspect_tree
from worker.registry import MLFLOW_CLIENT_VARIABLES, Registry

pytestmark = pytest.mark.integration

MAX_BYTES = 1024**3


async def test_the_download_is_the_tree_mlflow_downloads_with_the_same_digest(
    local_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in MLFLOW_CLIENT_VARIABLES:  # Registry() sets them for the process: restored (unset) afterwards
        monkeypatch.setenv(name, "restored after the test")
        monkeypatch.delenv(name)
    uri = local_stack.mlflow_tracking_uri
    model = f"download-{uuid.uuid4().hex[:6]}"
    version = register_iris(uri, model)
    registry = Registry(MLflowSettings(tracking_uri=uri))
    request = PromotionRequestedData(model_name=model, version=version, requester="tests", origin="cli")
    started: list[int] = []
    resolved = await registry.resolve(request, on_version=started.append)
    assert started == [version], "the version is handed over as soon as it is read"
    ours = await registry.download(resolved.model_name, resolved.version, tmp_path / "ours")
    theirs = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model}/{version}", dst_path=str(tmp_path / "theirs"), tracking_uri=uri
        )
    )
    expected = inspect_tree(theirs, max_bytes=MAX_BYTES)
    tree = inspect_tree(ours, max_bytes=MAX_BYTES)
    assert tree.files == expected.files
    assert tree.sha256 == expected.sha256
    assert (ours / "registered_model_meta").read_text() == (theirs / "registered_model_meta").read_text()
