"""The shared scikit-learn runtime: one Triton model per Triton holding every light version's estimator.

A light scikit-learn version (``worker/triton_backend/light_model.py``) imports no scikit-learn and
delegates its predictions to the runtime model its ``serving.json`` names. The runtime is named after
a digest of its files and config (``promoter-sklearn-runtime-<digest>``), so it is immutable like
the versions: a worker release that changes it stages a new one, and versions staged before keep
the one they were proven with.

It must be READY on an endpoint before a version that needs it is loaded there (a version loads
without it, but would fail every request): :func:`load_runtime_first` stages it when missing and
loads it on each endpoint lacking it, under its load lock, before the promotion or the fleet
repair loads the version. It is never retired: retirement only ever unloads versions, and fleet
repair loads it first on an endpoint that restarted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from runtime.logging import get_logger
from schemas.promotion_rejected import ReasonCode
from worker.errors import PermanentFailure
from worker.model_loads import ModelLoads
from worker.staging import VERSION_DIR, StagingLease, publish_directory
from worker.triton_backend import RUNTIME_FILES, staged_name
from worker.triton_backend.runtime_tensors import CALL, DATATYPES, SHAPE, input_name, output_name
from worker.triton_backend.serving_spec import MARKER_FILE, SERVING_SPEC_FILE, ServingSpec, ServingSpecError
from worker.triton_fleet import TritonEndpoint

log = get_logger(__name__)

RUNTIME_PREFIX = "promoter-sklearn-runtime-"


def runtime_config(name: str) -> str:
    """The runtime's ``config.pbtxt``: no batching of its own (each request is one version's batch)."""
    config = model_config_pb2.ModelConfig(name=name, backend="python", max_batch_size=0)
    config.input.add(name=CALL, data_type=model_config_pb2.TYPE_STRING, dims=[4])
    config.input.add(name=SHAPE, data_type=model_config_pb2.TYPE_INT64, dims=[-1], optional=True)
    for datatype in DATATYPES:
        data_type = model_config_pb2.DataType.Value(f"TYPE_{datatype}")
        config.input.add(name=input_name(datatype), data_type=data_type, dims=[-1], optional=True)
        config.output.add(name=output_name(datatype), data_type=data_type, dims=[-1])
    config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU, count=1)
    return str(text_format.MessageToString(config))


def _runtime_digest() -> str:
    digest = hashlib.sha256(runtime_config(RUNTIME_PREFIX).encode())
    for source in RUNTIME_FILES:
        digest.update(staged_name(RUNTIME_FILES, source).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


RUNTIME_DIGEST = _runtime_digest()
RUNTIME_MODEL = f"{RUNTIME_PREFIX}{RUNTIME_DIGEST[:12]}"
"""The runtime this worker release stages and new light versions name."""


def stage_runtime(repository: Path, lease: StagingLease | None = None) -> bool:
    """Stage :data:`RUNTIME_MODEL` into ``repository`` unless it is there; True if staged now (blocking)."""

    def fill(scratch: Path) -> None:
        version_dir = scratch / VERSION_DIR
        version_dir.mkdir()
        for source in RUNTIME_FILES:
            shutil.copyfile(source, version_dir / staged_name(RUNTIME_FILES, source))
        (scratch / "config.pbtxt").write_text(runtime_config(RUNTIME_MODEL))
        (scratch / MARKER_FILE).write_text(json.dumps({"runtime": True, "artifact_sha256": RUNTIME_DIGEST}, indent=2))

    return publish_directory(repository, RUNTIME_MODEL, fill, lease)


def required_runtime(model_path: Path) -> str | None:
    """The runtime the staged Triton model at ``model_path`` delegates to; None if it needs none (blocking)."""
    try:
        text = (model_path / VERSION_DIR / SERVING_SPEC_FILE).read_text()
    except FileNotFoundError:
        return None  # not a python-backend model (ONNX), or not staged: its own load says so
    try:
        return ServingSpec.from_json(text).runtime_model
    except ServingSpecError:
        return None  # its load fails with the reason


async def load_runtime_first(
    endpoints: Sequence[TritonEndpoint],
    repository: Path,
    triton_model: str,
    loads: ModelLoads,
    lease: StagingLease | None = None,
) -> None:
    """Make the runtime ``triton_model`` needs READY on ``endpoints``, staging it if missing; no-op if none."""
    runtime = await asyncio.to_thread(required_runtime, repository / triton_model)
    if runtime is None:
        return
    if runtime == RUNTIME_MODEL:
        if await asyncio.to_thread(stage_runtime, repository, lease):
            log.info("staged the shared sklearn runtime", triton_model=runtime)
    elif not await asyncio.to_thread((repository / runtime).is_dir):
        raise PermanentFailure(
            ReasonCode.TRITON_LOAD_FAILED,
            f"{triton_model} delegates to the shared runtime {runtime}, which is not in the model repository "
            "(staged by an older worker release and removed since); promote the version again after removing "
            f"{triton_model} from the repository",
        )
    async with loads.exclusive(runtime):
        missing = [endpoint for endpoint in endpoints if not await endpoint.is_ready(runtime)]
        await asyncio.gather(*(endpoint.load(runtime) for endpoint in missing))
    for endpoint in missing:
        log.info("loaded the shared sklearn runtime", triton_model=runtime, endpoint=endpoint.url)
