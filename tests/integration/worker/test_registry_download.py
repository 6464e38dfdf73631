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
from worker.registry import Registry

pytestmark = pytest.mark.integration

MAX_BYTES = 1024**3


async def test_the_download_is_the_tree_mlflow_downloads_with_the_same_digest(
    local_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):  # Registry() sets them
        monkeypatch.setenv(name, "restored after the test")
        monkeypatch.delenv(name)
    uri = local_stack.mlflow_tracking_uri
    model = f"download-{uuid.uuid4().hex[:6]}"
    version = register_iris(uri, model)
    registry = Registry(MLflowSettings(tracking_uri=uri))
    request = PromotionRequestedData(model_name=model, version=version, requester="tests", origin="cli")
    resolved = await registry.resolve(request, with_download_uri=True)
    assert resolved.download_uri is not None, "a pinned version to download is resolved with its artifacts' place"
    ours = await registry.download(resolved, tmp_path / "ours")
    without_location = await registry.download(await registry.resolve(request), tmp_path / "looked-up")
    theirs = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model}/{version}", dst_path=str(tmp_path / "theirs"), tracking_uri=uri
        )
    )
    expected = inspect_tree(theirs, max_bytes=MAX_BYTES)
    for tree in (inspect_tree(ours, max_bytes=MAX_BYTES), inspect_tree(without_location, max_bytes=MAX_BYTES)):
        assert tree.files == expected.files
        assert tree.sha256 == expected.sha256
    assert (ours / "registered_model_meta").read_text() == (theirs / "registered_model_meta").read_text()
