"""The worker process at start-up: staging directories dead workers left behind are removed, a live one's never."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from deploy.stack.local_stack import LocalStack
from tests.worker_harness import running_worker
from worker.staging import ABANDONED_AFTER_S, LEASES_DIR, StagingLease

pytestmark = pytest.mark.integration


def _scratch_dir(repository: Path, name: str, *, age_s: float) -> Path:
    scratch = repository / name
    (scratch / "1" / "model").mkdir(parents=True)
    (scratch / "1" / "model" / "model.skops").write_bytes(b"half-copied")
    moment = time.time() - age_s
    for directory, _subdirs, files in os.walk(scratch):
        for path in (directory, *(os.path.join(directory, name) for name in files)):
            os.utime(path, (moment, moment))
    return scratch


def test_dead_workers_staging_dirs_are_removed_before_the_worker_is_ready(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    repository = local_stack.model_repository
    label = uuid.uuid4().hex[:8]
    dead_owner = uuid.uuid4().hex[:12]
    (repository / LEASES_DIR).mkdir(parents=True, exist_ok=True)
    (repository / LEASES_DIR / f"{dead_owner}.lock").write_text("{}")  # its process died: nobody holds the lock
    killed = _scratch_dir(repository, f".staging-{dead_owner}.it-{label}-killed", age_s=1)
    live = StagingLease(repository, "another-replica")
    live.acquire()
    staging_now = _scratch_dir(repository, f"{live.prefix}it-{label}-slow", age_s=ABANDONED_AFTER_S + 60)
    unowned_old = _scratch_dir(repository, f".staging-it-{label}-old", age_s=ABANDONED_AFTER_S + 60)
    try:
        with running_worker(local_stack, tmp_path) as worker:
            log = worker.process.log_path.read_text()
            assert not killed.exists(), "a SIGKILLed worker's staging directory goes at once, however young"
            assert not unowned_old.exists(), "one without an owner goes once old"
            assert staging_now.exists(), "a live replica's staging directory stays, however old"
            assert not (repository / LEASES_DIR / f"{dead_owner}.lock").exists()
            assert "removed a staging directory its dead owner left" in log
            assert killed.name in log
    finally:
        live.release()
        for scratch in (killed, staging_now, unowned_old):
            shutil.rmtree(scratch, ignore_errors=True)


def test_every_line_the_worker_writes_is_json_with_the_promised_fields(local_stack: LocalStack, tmp_path: Path) -> None:
    """FastStream's own lines too (its app and broker loggers): from the start to the graceful shutdown."""
    with running_worker(local_stack, tmp_path) as worker:
        log_path = worker.process.log_path
    lines = log_path.read_text().splitlines()

    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not not_json, f"{len(not_json)} of {len(lines)} lines are not JSON, e.g. {not_json[:3]}"
    records = [json.loads(line) for line in lines]
    assert all({"service", "level", "timestamp", "event"} <= record.keys() for record in records)
    assert {record["service"] for record in records} == {"worker"}
    events = [record["event"] for record in records]
    assert "FastStream app starting..." in events
    assert "FastStream app shut down gracefully." in events
