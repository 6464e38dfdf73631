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
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runtime.logging import get_logger
from worker.triton_backend.serving_spec import SERVING_SPEC_FILE, ServingSpec

log = get_logger(__name__)

MARKER_FILE = "promoter.json"
STAGING_PREFIX = ".staging-"
VERSION_DIR = "1"
MODEL_SUBDIR = "model"
ABANDONED_AFTER_S = 600.0
"""A staging directory untouched this long belongs to no running staging (replicas share the repository)."""

StageFiles = Callable[[ServingSpec, Path, Path], None]
"""Writes a flavor's backend files: ``(spec, mlflow_model_dir, version_dir)``."""


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
    serving_spec: ServingSpec,
    stage_files: StageFiles,
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
        spec = replace(serving_spec, model_dir=MODEL_SUBDIR)
        (version_dir / SERVING_SPEC_FILE).write_text(spec.to_json())
        stage_files(spec, mlflow_model_dir, version_dir)
        (scratch / "config.pbtxt").write_text(config_pbtxt)
        (scratch / MARKER_FILE).write_text(json.dumps({**metadata, "artifact_sha256": sha256}, indent=2))
        for source in sorted(version_dir.glob("*.py")):  # the backend's python files, never the MLflow model's
            if not compileall.compile_file(source, quiet=2):
                raise RuntimeError(f"staged {source.name} does not compile")
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
    """Scratch directories of stagings and removals: interrupted ones, or ones running now."""
    return sorted(p for p in repository.glob(f"{STAGING_PREFIX}*") if p.is_dir())


def _last_touched(root: Path) -> float:
    """The newest modification time of ``root`` and everything in it (0 if it vanished meanwhile)."""
    newest = 0.0
    for directory, _subdirs, files in os.walk(root):
        for path in (directory, *(os.path.join(directory, name) for name in files)):
            try:
                newest = max(newest, os.lstat(path).st_mtime)
            except FileNotFoundError:
                continue
    return newest


def remove_abandoned_staging_dirs(repository: Path, *, older_than_s: float = ABANDONED_AFTER_S) -> list[Path]:
    """Delete scratch directories nothing has written to for ``older_than_s``; log and return them.

    Blocking: call it in a thread. For the worker's start-up, before it consumes: a crash
    between ``mkdtemp`` and the rename (or during a removal) leaves them behind. Recent ones are
    kept, because another replica sharing the repository may be staging into them right now.
    """
    if not repository.is_dir():
        return []
    cutoff = time.time() - older_than_s
    removed = []
    for scratch in leftover_staging_dirs(repository):
        if _last_touched(scratch) < cutoff:
            shutil.rmtree(scratch, ignore_errors=True)
            log.info("removed an abandoned staging directory", path=str(scratch), repository=str(repository))
            removed.append(scratch)
    return removed
