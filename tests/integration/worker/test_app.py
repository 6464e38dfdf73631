"""The worker process at start-up: staging directories an interrupted staging left behind are removed."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from deploy.stack.local_stack import LocalStack
from tests.worker_harness import running_worker
from worker.staging import ABANDONED_AFTER_S

pytestmark = pytest.mark.integration


def _scratch_dir(repository: Path, label: str, *, age_s: float) -> Path:
    scratch = repository / f".staging-it-{label}-{uuid.uuid4().hex[:8]}"
    (scratch / "1" / "model").mkdir(parents=True)
    (scratch / "1" / "model" / "model.skops").write_bytes(b"half-copied")
    moment = time.time() - age_s
    for directory, _subdirs, files in os.walk(scratch):
        for path in (directory, *(os.path.join(directory, name) for name in files)):
            os.utime(path, (moment, moment))
    return scratch


def test_abandoned_staging_dirs_are_removed_before_the_worker_is_ready(local_stack: LocalStack, tmp_path: Path) -> None:
    repository = local_stack.model_repository
    abandoned = _scratch_dir(repository, "crashed", age_s=ABANDONED_AFTER_S + 60)
    in_use = _scratch_dir(repository, "another-replica", age_s=1)
    try:
        with running_worker(local_stack, tmp_path) as worker:
            assert not abandoned.exists()
            assert in_use.exists(), "a recent staging directory may belong to a replica staging right now"
            assert "removed an abandoned staging directory" in worker.process.log_path.read_text()
            assert abandoned.name in worker.process.log_path.read_text()
    finally:
        shutil.rmtree(abandoned, ignore_errors=True)
        shutil.rmtree(in_use, ignore_errors=True)
