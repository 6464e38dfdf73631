"""Check a downloaded MLflow artifact tree before anything touches Triton, and digest it.

Refuses trees that could escape their directory (absolute or ``..`` paths, symlinks pointing
outside the tree, special files) and trees over a size limit. The digest covers every file's
relative path and bytes, so the same model always has the same digest.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArtifactRejectedError(Exception):
    """Base: the tree must not be served. ``reason_code`` is a :class:`schemas.ReasonCode` value."""

    reason_code = "unsafe_artifact_path"


class UnsafeArtifactPathError(ArtifactRejectedError):
    reason_code = "unsafe_artifact_path"


class ArtifactTooLargeError(ArtifactRejectedError):
    reason_code = "artifact_too_large"


@dataclass(frozen=True, slots=True)
class ArtifactTree:
    root: Path
    files: tuple[PurePosixPath, ...]
    total_bytes: int
    sha256: str


def check_relative_path(path: str) -> PurePosixPath:
    """A path from an artifact listing, refused if absolute or climbing out with ``..``."""
    candidate = PurePosixPath(path)
    if candidate.is_absolute() or path.startswith("\\") or _DRIVE.match(path):
        raise UnsafeArtifactPathError(f"artifact path {path!r} is absolute")
    if ".." in candidate.parts:
        raise UnsafeArtifactPathError(f"artifact path {path!r} climbs out of the artifact directory")
    return candidate


def _inside(root: Path, target: Path) -> bool:
    return target == root or root in target.parents


def inspect_tree(root: Path, *, max_bytes: int) -> ArtifactTree:
    """Walk ``root`` without following links; refuse unsafe entries; return files, size and digest."""
    root = root.resolve(strict=True)
    files: list[PurePosixPath] = []
    total = 0
    for directory, subdirs, names in os.walk(root, followlinks=False):
        base = Path(directory)
        for name in sorted(subdirs + names):
            entry = base / name
            relative = PurePosixPath(entry.relative_to(root).as_posix())
            mode = entry.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = entry.resolve()
                if not _inside(root, target):
                    raise UnsafeArtifactPathError(
                        f"artifact {relative} is a symlink to {os.readlink(entry)!r}, outside the model"
                    )
                raise UnsafeArtifactPathError(f"artifact {relative} is a symlink; models must hold real files")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise UnsafeArtifactPathError(f"artifact {relative} is not a regular file")
            total += entry.stat().st_size
            if total > max_bytes:
                raise ArtifactTooLargeError(f"artifact tree is over the {max_bytes} byte limit (reached at {relative})")
            files.append(relative)
    files.sort()
    return ArtifactTree(root=root, files=tuple(files), total_bytes=total, sha256=tree_digest(root, files))


def tree_digest(root: Path, files: list[PurePosixPath]) -> str:
    """SHA-256 over each file's relative path, size and content hash, in path order."""
    outer = hashlib.sha256()
    for relative in sorted(files):
        inner = hashlib.sha256()
        with (root / relative).open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                inner.update(chunk)
        outer.update(f"{relative}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()
