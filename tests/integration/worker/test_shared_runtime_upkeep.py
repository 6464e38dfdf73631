"""The shared sklearn runtime at worker start, on real Tritons: preloaded everywhere (a dead endpoint does not stop
the worker), and an older release's runtime removed once no version delegates to it, never one a version names."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import tritonclient.http as triton_http

from deploy.stack.local_stack import LocalStack
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from deploy.stack.triton_server import triton_spec_on_free_ports
from tests.worker_harness import ready_on, running_worker, wait_for
from worker.shared_runtime import RUNTIME_MODEL, RUNTIME_PREFIX, runtime_config, stage_runtime
from worker.staging import VERSION_DIR
from worker.triton_backend.serving_spec import MARKER_FILE, SERVING_SPEC_FILE, ServingSpec

pytestmark = pytest.mark.integration


async def test_the_runtime_is_preloaded_on_every_triton_at_start_and_a_dead_one_does_not_stop_the_worker(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    spec = triton_spec_on_free_ports(tmp_path / "second-triton", local_stack.model_repository)
    second = spec.endpoints["triton_http"]
    (dead_port,) = free_ports(1)  # nothing listens there
    process = ManagedProcess(spec, tmp_path / "second-triton.log")
    process.start()
    try:
        wait_all_ready([process])
        assert not ready_on(second, RUNTIME_MODEL), "a fresh Triton in explicit mode has nothing loaded"
        endpoints = f"{local_stack.triton_http},{second},127.0.0.1:{dead_port}"
        with running_worker(
            local_stack, tmp_path / "worker", PROMOTER_TRITON_ENDPOINTS=endpoints, PROMOTER_WORKER_MAX_ATTEMPTS="2"
        ) as worker:  # ready (running_worker waited for /ready) although one endpoint is dead
            await wait_for(
                lambda: ready_on(second, RUNTIME_MODEL),
                timeout_s=120,
                what="the runtime preloaded, no promotion asked",
            )
            assert ready_on(local_stack.triton_http, RUNTIME_MODEL)
            await wait_for(
                lambda: "gave up preloading the shared sklearn runtime" in worker.process.log_text(),
                timeout_s=60,
                what="the dead endpoint given up after PROMOTER_WORKER_MAX_ATTEMPTS",
            )
            log = worker.process.log_text()
            assert "preloaded the shared sklearn runtime" in log
            assert second in log
            assert worker.process.alive()
    finally:
        stop_all([process])


def _old_runtime(repository: Path, name: str) -> Path:
    """A runtime as an older worker release staged it: its own name (and digest) in the repository."""
    target = repository / name
    shutil.copytree(repository / RUNTIME_MODEL, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "config.pbtxt").write_text(runtime_config(name))
    (target / MARKER_FILE).write_text(
        json.dumps({"runtime": True, "artifact_sha256": name.removeprefix(RUNTIME_PREFIX)})
    )
    return target


def _version_naming(repository: Path, name: str, runtime: str) -> Path:
    """A version directory of that older release: its serving.json names its runtime."""
    spec = ServingSpec(loader="sklearn", input="input", output="output", model_file="m.skops", runtime_model=runtime)
    (repository / name / VERSION_DIR).mkdir(parents=True)
    (repository / name / VERSION_DIR / SERVING_SPEC_FILE).write_text(spec.to_json())
    return repository / name


async def test_an_old_releases_runtime_is_removed_once_no_version_delegates_to_it(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    repository = local_stack.model_repository
    stage_runtime(repository)
    unused, used = (f"{RUNTIME_PREFIX}{uuid.uuid4().hex[:12]}" for _ in range(2))
    made = [_old_runtime(repository, unused), _old_runtime(repository, used)]
    made.append(_version_naming(repository, f"it-upkeep-{uuid.uuid4().hex[:6]}--0a1b2c3d--v1", used))
    client = triton_http.InferenceServerClient(local_stack.triton_http, network_timeout=300, connection_timeout=300)
    try:
        client.load_model(unused)  # loaded, and nothing delegates to it: it only holds memory
        assert ready_on(local_stack.triton_http, unused)
        with running_worker(local_stack, tmp_path / "worker") as worker:
            await wait_for(
                lambda: not (repository / unused).exists(), timeout_s=60, what="the unused old runtime removed"
            )
            assert not ready_on(local_stack.triton_http, unused), "unloaded before its directory went"
            assert (repository / used).is_dir(), "a version still delegates to it: kept"
            assert (repository / RUNTIME_MODEL).is_dir(), "this release's runtime is never removed"
            said = "removed an old shared sklearn runtime no version delegates to"
            await wait_for(lambda: said in worker.process.log_text(), timeout_s=30, what="the removal logged")
            log = worker.process.log_text()
            assert unused in log
            assert used not in log
    finally:
        client.close()
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)
