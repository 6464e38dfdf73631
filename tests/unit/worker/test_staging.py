from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from worker.flavors.sklearn import FLAVOR as SKLEARN
from worker.staging import (
    ABANDONED_AFTER_S,
    DigestConflictError,
    StagedModel,
    leftover_staging_dirs,
    recorded_digest,
    remove_abandoned_staging_dirs,
    remove_staged_model,
    stage_model,
)
from worker.triton_backend.serving_spec import ServingSpec


def _mlflow_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "model.skops").write_bytes(b"model-bytes")
    return root


def _stage(repo: Path, source: Path, sha: str, name: str = "iris--00000000--v1") -> StagedModel:
    return stage_model(
        repo,
        name,
        mlflow_model_dir=source,
        sha256=sha,
        config_pbtxt='name: "x"\n',
        serving_spec=ServingSpec(loader="sklearn", input="input", output="output"),
        stage_files=SKLEARN.stage_files,
        metadata={"model_name": "iris", "version": 1},
    )


def test_stage_writes_a_complete_precompiled_model(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    staged = _stage(repo, _mlflow_dir(tmp_path / "dl"), "a" * 64)

    model = repo / "iris--00000000--v1"
    assert staged.reused is False
    assert (model / "config.pbtxt").read_text() == 'name: "x"\n'
    assert (model / "1" / "model" / "model.skops").read_bytes() == b"model-bytes"
    assert "class TritonPythonModel" in (model / "1" / "model.py").read_text()
    assert list((model / "1" / "__pycache__").glob("model.cpython-*.pyc"))
    assert list((model / "1" / "__pycache__").glob("serving_spec.cpython-*.pyc"))
    assert json.loads((model / "1" / "serving.json").read_text())["model_dir"] == "model"
    assert recorded_digest(model) == "a" * 64
    assert leftover_staging_dirs(repo) == []


def test_same_digest_is_reused_without_touching_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    source = _mlflow_dir(tmp_path / "dl")
    _stage(repo, source, "a" * 64)
    before = (repo / "iris--00000000--v1" / "1" / "model.py").stat().st_mtime_ns

    again = _stage(repo, source, "a" * 64)

    assert again.reused is True
    assert (repo / "iris--00000000--v1" / "1" / "model.py").stat().st_mtime_ns == before


def test_different_digest_is_never_overwritten(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    source = _mlflow_dir(tmp_path / "dl")
    _stage(repo, source, "a" * 64)

    with pytest.raises(DigestConflictError, match=r"already exists with artifact digest a{64}, not b{64}"):
        _stage(repo, source, "b" * 64)
    assert recorded_digest(repo / "iris--00000000--v1") == "a" * 64


def test_failed_staging_leaves_no_model_and_no_scratch(tmp_path: Path) -> None:
    repo = tmp_path / "repo"

    with pytest.raises(FileNotFoundError):
        _stage(repo, tmp_path / "missing", "a" * 64)

    assert not (repo / "iris--00000000--v1").exists()
    assert leftover_staging_dirs(repo) == []


def test_remove_only_deletes_models_we_staged(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _stage(repo, _mlflow_dir(tmp_path / "dl"), "a" * 64)
    (repo / "hand-made").mkdir()

    assert remove_staged_model(repo, "iris--00000000--v1") is True
    assert remove_staged_model(repo, "hand-made") is False
    assert not (repo / "iris--00000000--v1").exists()
    assert (repo / "hand-made").exists()
    assert leftover_staging_dirs(repo) == []


def test_abandoned_staging_dirs_are_removed_and_recent_ones_kept(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _stage(repo, _mlflow_dir(tmp_path / "dl"), "a" * 64)
    abandoned = repo / ".staging-iris--00000000--v2-crashed"
    (abandoned / "1" / "model").mkdir(parents=True)
    (abandoned / "1" / "model" / "model.skops").write_bytes(b"half-copied")
    long_ago = time.time() - ABANDONED_AFTER_S - 60
    for path in (abandoned / "1" / "model" / "model.skops", abandoned / "1" / "model", abandoned / "1", abandoned):
        os.utime(path, (long_ago, long_ago))
    in_progress = repo / ".staging-iris--00000000--v3-another-replica"
    (in_progress / "1").mkdir(parents=True)
    os.utime(in_progress, (long_ago, long_ago))  # only its newest file counts: it is being written to now

    removed = remove_abandoned_staging_dirs(repo)

    assert removed == [abandoned]
    assert leftover_staging_dirs(repo) == [in_progress]
    assert recorded_digest(repo / "iris--00000000--v1") == "a" * 64
    assert remove_abandoned_staging_dirs(tmp_path / "no-repository-yet") == []
