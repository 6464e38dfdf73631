from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.artifact_check import (
    ArtifactTooLargeError,
    UnsafeArtifactPathError,
    check_relative_path,
    inspect_tree,
)


def _model_tree(root: Path) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "MLmodel").write_text("flavors: {}\n")
    (root / "model" / "model.skops").write_bytes(b"\x00" * 100)
    (root / "model" / "sub").mkdir()
    (root / "model" / "sub" / "extra.txt").write_text("x")
    return root / "model"


def test_digest_is_stable_and_covers_names_and_bytes(tmp_path: Path) -> None:
    tree = inspect_tree(_model_tree(tmp_path / "a"), max_bytes=10_000)
    same = inspect_tree(_model_tree(tmp_path / "b"), max_bytes=10_000)

    assert [str(f) for f in tree.files] == ["MLmodel", "model.skops", "sub/extra.txt"]
    assert tree.total_bytes == 12 + 100 + 1
    assert tree.sha256 == same.sha256

    (tmp_path / "b" / "model" / "sub" / "extra.txt").write_text("y")
    assert inspect_tree(tmp_path / "b" / "model", max_bytes=10_000).sha256 != tree.sha256
    (tmp_path / "b" / "model" / "sub" / "extra.txt").rename(tmp_path / "b" / "model" / "sub" / "renamed.txt")
    assert inspect_tree(tmp_path / "b" / "model", max_bytes=10_000).sha256 != tree.sha256


def test_symlink_escaping_the_tree_is_refused(tmp_path: Path) -> None:
    root = _model_tree(tmp_path)
    os.symlink("/etc/passwd", root / "sub" / "passwd")

    with pytest.raises(UnsafeArtifactPathError, match=r"sub/passwd is a symlink to '/etc/passwd', outside"):
        inspect_tree(root, max_bytes=10_000)


def test_any_symlink_is_refused(tmp_path: Path) -> None:
    root = _model_tree(tmp_path)
    os.symlink("MLmodel", root / "alias")

    with pytest.raises(UnsafeArtifactPathError, match="alias is a symlink"):
        inspect_tree(root, max_bytes=10_000)


def test_special_files_are_refused(tmp_path: Path) -> None:
    root = _model_tree(tmp_path)
    os.mkfifo(root / "pipe")

    with pytest.raises(UnsafeArtifactPathError, match="pipe is not a regular file"):
        inspect_tree(root, max_bytes=10_000)


def test_size_limit(tmp_path: Path) -> None:
    root = _model_tree(tmp_path)

    with pytest.raises(ArtifactTooLargeError, match="over the 50 byte limit") as caught:
        inspect_tree(root, max_bytes=50)
    assert caught.value.reason_code == "artifact_too_large"


@pytest.mark.parametrize("path", ["/etc/passwd", "../up", "a/../../b", "\\\\server\\share", "C:/x"])
def test_listing_paths_that_escape_are_refused(path: str) -> None:
    with pytest.raises(UnsafeArtifactPathError):
        check_relative_path(path)


def test_listing_paths_inside_are_accepted() -> None:
    assert str(check_relative_path("model/MLmodel")) == "model/MLmodel"
