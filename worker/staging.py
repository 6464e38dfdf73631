"""Stage one immutable Triton model into the model repository: written once, never modified.

The model is assembled in a temporary directory inside the repository (same filesystem, so the
final ``rename`` is atomic), precompiled so Triton's stub never writes ``__pycache__`` into it,
fsynced, then renamed into place. A model directory that already exists is reused when its
recorded digest matches and is an error when it does not: a different model under the same
name means the registry changed under us, and overwriting would swap code under Triton.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.triton_backend import MODEL_PY

MARKER_FILE = "promoter.json"
STAGING_PREFIX = ".staging-"
VERSION_DIR = "1"
MODEL_SUBDIR = "model"
ONNX_MODEL_FILE = "model.onnx"


class DigestConflictError(Exception):
    """The Triton model directory exists with a different artifact digest."""


@dataclass(frozen=True, slots=True)
class StagedModel:
    triton_name: str
    path: Path
    sha256: str
    reused: bool


def recorded_digest(model_path: Path) -> str | None:
    """The artifact digest recorded when ``model_path`` was staged, if it was staged by us."""
    try:
        marker = json.loads((model_path / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    digest = marker.get("artifact_sha256") if isinstance(marker, dict) else None
    return digest if isinstance(digest, str) else None


def _reuse_or_conflict(target: Path, sha256: str) -> StagedModel:
    existing = recorded_digest(target)
    if existing != sha256:
        raise DigestConflictError(
            f"Triton model directory {target.name} already exists with artifact digest "
            f"{existing or 'unknown'}, not {sha256}; it is never overwritten. Register a new model "
            "version, or remove the directory after unloading it if you know it is unused."
        )
    return StagedModel(triton_name=target.name, path=target, sha256=sha256, reused=True)


def _fsync_tree(root: Path) -> None:
    for directory, _subdirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(directory))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage_model(
    repository: Path,
    triton_name: str,
    *,
    mlflow_model_dir: Path,
    sha256: str,
    config_pbtxt: str,
    serving_spec: dict[str, Any],
    metadata: dict[str, Any],
) -> StagedModel:
    """Write ``repository/triton_name`` atomically, or reuse it if it holds the same digest.

    Blocking (file copies, fsync): call it in a thread from async code.
    """
    repository.mkdir(parents=True, exist_ok=True)
    target = repository / triton_name
    if target.exists():
        return _reuse_or_conflict(target, sha256)
    scratch = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{triton_name}-", dir=repository))
    try:
        version_dir = scratch / VERSION_DIR
        shutil.copytree(mlflow_model_dir, version_dir / MODEL_SUBDIR, symlinks=True)
        (version_dir / "serving.json").write_text(json.dumps({**serving_spec, "model_dir": MODEL_SUBDIR}, indent=2))
        if serving_spec.get("loader") == "onnxruntime":
            # onnxruntime backend: the graph itself, at the file name Triton looks for by default.
            shutil.copyfile(mlflow_model_dir / serving_spec["model_file"], version_dir / ONNX_MODEL_FILE)
        else:
            shutil.copyfile(MODEL_PY, version_dir / "model.py")
        (scratch / "config.pbtxt").write_text(config_pbtxt)
        (scratch / MARKER_FILE).write_text(json.dumps({**metadata, "artifact_sha256": sha256}, indent=2))
        if (version_dir / "model.py").exists() and not compileall.compile_file(version_dir / "model.py", quiet=2):
            raise RuntimeError("generated model.py does not compile")
        scratch.chmod(0o755)
        _fsync_tree(scratch)
        try:
            scratch.rename(target)
        except OSError:
            if target.exists():  # another worker staged it first
                return _reuse_or_conflict(target, sha256)
            raise
        _fsync_dir(repository)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return StagedModel(triton_name=triton_name, path=target, sha256=sha256, reused=False)


def remove_staged_model(repository: Path, triton_name: str) -> bool:
    """Delete a retired model directory (only ever after Triton unloaded it). True if removed."""
    target = repository / triton_name
    if recorded_digest(target) is None:
        return False  # not ours: never delete what we did not stage
    graveyard = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}retired-", dir=repository))
    target.rename(graveyard / triton_name)
    shutil.rmtree(graveyard, ignore_errors=True)
    return True


def leftover_staging_dirs(repository: Path) -> list[Path]:
    """Scratch directories of interrupted stagings (safe to delete at start-up)."""
    return sorted(p for p in repository.glob(f"{STAGING_PREFIX}*") if p.is_dir())
