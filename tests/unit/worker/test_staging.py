from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker.flavors.sklearn import FLAVOR as SKLEARN
from worker.staging import (
    ABANDONED_AFTER_S,
    LEASES_DIR,
    DigestConflictError,
    StagedModel,
    StagingLease,
    leftover_staging_dirs,
    recorded_digest,
    remove_leftover_staging_dirs,
    remove_staged_model,
    stage_model,
    staging_owner,
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


def _scratch(repo: Path, name: str, *, age_s: float = 0.0) -> Path:
    scratch = repo / name
    (scratch / "1" / "model").mkdir(parents=True)
    (scratch / "1" / "model" / "model.skops").write_bytes(b"half-copied")
    moment = time.time() - age_s
    for path in (scratch / "1" / "model" / "model.skops", scratch / "1" / "model", scratch / "1", scratch):
        os.utime(path, (moment, moment))
    return scratch


def _lease(repo: Path, replica: str) -> StagingLease:
    lease = StagingLease(repo, replica)
    lease.acquire()
    return lease


def test_staging_names_its_scratch_directory_after_the_lease_owner(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    lease = _lease(repo, "w-0")
    seen: list[str] = []

    def stage_files(spec: ServingSpec, model_dir: Path, version_dir: Path) -> None:
        seen.append(version_dir.parent.name)
        SKLEARN.stage_files(spec, model_dir, version_dir)

    stage_model(
        repo,
        "iris--00000000--v1",
        mlflow_model_dir=_mlflow_dir(tmp_path / "dl"),
        sha256="a" * 64,
        config_pbtxt='name: "x"\n',
        serving_spec=ServingSpec(loader="sklearn", input="input", output="output"),
        stage_files=stage_files,
        metadata={},
        lease=lease,
    )

    assert seen[0].startswith(f".staging-{lease.owner}.iris--00000000--v1-")
    assert staging_owner(repo / seen[0]) == lease.owner
    holder = json.loads((repo / LEASES_DIR / f"{lease.owner}.lock").read_text())
    assert (holder["replica_id"], holder["pid"]) == ("w-0", os.getpid())


_DIES_STAGING = """
import os, sys
from pathlib import Path
from worker.staging import StagingLease
lease = StagingLease(Path(sys.argv[1]), "w-dead")
lease.acquire()
(Path(sys.argv[1]) / f"{lease.prefix}iris--00000000--v2-x" / "1").mkdir(parents=True)
print("OWNER", lease.owner, flush=True)
sys.stdin.read()
"""


def test_start_up_removes_a_dead_owners_staging_dirs_and_never_a_live_ones(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    dying = subprocess.Popen(
        [sys.executable, "-c", _DIES_STAGING, str(repo)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert dying.stdout is not None
    dead_owner = next(line.split()[1] for line in dying.stdout if line.startswith("OWNER "))
    dying.kill()  # SIGKILL mid-staging: no clean-up ran; the kernel dropped its lock
    dying.wait(timeout=10)
    other = _lease(repo, "w-live")  # another replica, staging right now (and for long)
    live = _scratch(repo, f"{other.prefix}iris--00000000--v3-y", age_s=ABANDONED_AFTER_S + 60)
    unowned_old = _scratch(repo, ".staging-iris--00000000--v4-old", age_s=ABANDONED_AFTER_S + 60)
    unowned_recent = _scratch(repo, ".staging-iris--00000000--v5-recent")
    restarted = _lease(repo, "w-dead")

    removed = remove_leftover_staging_dirs(repo, restarted)

    dead_dir = repo / f".staging-{dead_owner}.iris--00000000--v2-x"
    assert sorted(removed) == sorted([dead_dir, unowned_old])
    assert leftover_staging_dirs(repo) == sorted([live, unowned_recent])
    leases = sorted(path.name for path in (repo / LEASES_DIR).iterdir())
    assert leases == sorted([f"{other.owner}.lock", f"{restarted.owner}.lock"]), "the dead owner's lease is dropped"
    other.release()
    assert remove_leftover_staging_dirs(repo, restarted) == [live], "released: its owner is gone"
    assert remove_leftover_staging_dirs(tmp_path / "no-repository-yet", restarted) == []


def test_a_lease_released_at_shutdown_leaves_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    lease = _lease(repo, "w-0")
    owner = lease.owner

    lease.release()

    assert list((repo / LEASES_DIR).iterdir()) == []
    assert owner is not None
    with pytest.raises(RuntimeError, match="not held"):
        _ = lease.prefix
