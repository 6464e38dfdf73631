"""Benchmark: light scikit-learn versions against a numpy-only python-backend model, same Triton, same run.

Writes ``load_ratio_vs_numpy_model``, ``memory_ratio_vs_numpy_model`` and ``pipeline_overhead_ratio``
(absolute values beside them) into ``.bench/scale.json`` (``make bench``). Issue #14 item 2 goals:
memory per additionally loaded sklearn version <= 1.5x the numpy model's, bare load <= 3x.

1. A worker promotes N iris versions one after the other (pinned, none retired), so N light versions
   are loaded. The worker preloads the shared runtime at start-up; the first promotion is reported
   apart (it may still wait for that load). The cold promotions' p50 per stage and the time outside
   every stage (Kafka both ways, the announcement) say where ``pipeline_overhead_ratio`` comes from;
   ``pipeline_floor_ratio`` is the least it could be with a pipeline cut down to what must come before and
   after the load in series: the bare load, plus the registry lookup (``resolve``) and the proving inference
   (``prove``), their p50s.
2. Memory: each loaded model's python-backend stub process is found by its model path in its command
   line. A light version costs its own stub plus what its estimator adds to the shared runtime (the
   runtime's growth from the first version to the last, divided among the others).
3. Bare load: a light version (its directory staged, the runtime READY) and the numpy-only model are
   unloaded, their stub waited out, and loaded again, alternately, ``--loads`` times each.
4. Inference p50 straight to Triton, 1 row: the light version's extra BLS hop against the numpy model.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as triton_http
from aiokafka import AIOKafkaProducer

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import child_pid, poll_until
from tests.benchmarks.bench_files import merge_figures
from tests.benchmarks.promotion import ReadyListener, rss_mb
from tests.worker_harness import iris_frame, register_iris, request_bytes, running_worker
from worker.shared_runtime import RUNTIME_MODEL

NUMPY_MODEL = "bench-numpy-model"
NUMPY_MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        rows = [pb_utils.get_input_tensor_by_name(r, "input").as_numpy() for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("output", np.zeros((len(a), 1), np.int64))]) for a in rows]
"""
NUMPY_CONFIG = f'''name: "{NUMPY_MODEL}"
backend: "python"
max_batch_size: 64
input {{ name: "input" data_type: TYPE_FP64 dims: 4 }}
output {{ name: "output" data_type: TYPE_INT64 dims: 1 }}
dynamic_batching {{ max_queue_delay_microseconds: 100 }}
instance_group {{ kind: KIND_CPU count: 1 }}
'''
STUB_EXIT_TIMEOUT_S = 30.0


def stage_numpy_model(repository: Path) -> None:
    version_dir = repository / NUMPY_MODEL / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.py").write_text(NUMPY_MODEL_PY)
    (repository / NUMPY_MODEL / "config.pbtxt").write_text(NUMPY_CONFIG)
    compileall.compile_file(version_dir / "model.py", quiet=2)  # so Triton's stub writes no __pycache__


def stub_pid(triton_pid: int, model: str) -> int | None:
    """The python-backend stub process of ``model`` (its model path is in the stub's command line)."""
    return child_pid(triton_pid, lambda command: f"/{model}/" in command or command.rstrip().endswith(f"/{model}"))


def stub_rss_mb(triton_pid: int, model: str) -> float:
    pid = stub_pid(triton_pid, model)
    if pid is None:
        raise RuntimeError(f"no python-backend stub process found for {model}")
    return rss_mb(pid)


def reload_s(client: Any, triton_pid: int, model: str) -> float:
    """Unload ``model``, wait until its stub exited, and time a bare load of it."""
    client.unload_model(model)
    if not poll_until(lambda: stub_pid(triton_pid, model) is None, STUB_EXIT_TIMEOUT_S):
        raise RuntimeError(f"the stub of {model} did not exit within {STUB_EXIT_TIMEOUT_S} s")
    began = time.perf_counter()
    client.load_model(model)
    return time.perf_counter() - began


def infer_p50_ms(client: Any, model: str, rows: np.ndarray[Any, Any], count: int) -> float:
    tensor = triton_http.InferInput("input", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    seconds = []
    for _ in range(count):
        began = time.perf_counter()
        client.infer(model, [tensor])
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds) * 1000


async def promote_all(stack: LocalStack, run_dir: Path, name: str, versions: list[int]) -> list[dict[str, Any]]:
    """Promote each version in turn; per promotion its seconds, stage seconds, Triton model, runtime RSS after."""
    triton_pid = stack.pids()["tritonserver"]["pid"]
    results = []
    settings = {"PROMOTER_LOG_LEVEL": "WARNING", "PROMOTER_WORKER_KEEP_LOADED_VERSIONS": str(len(versions))}
    with running_worker(stack, run_dir, **settings) as worker:
        listener = ReadyListener(stack.kafka_bootstrap_servers, worker.topics["PROMOTER_TOPIC_MODEL_READY"])
        await listener.start()
        producer = AIOKafkaProducer(**stack.kafka_settings().producer_kwargs())
        await producer.start()
        try:
            for version in versions:
                event_id = str(uuid.uuid4())
                began = time.perf_counter()
                await producer.send_and_wait(
                    worker.topics["PROMOTER_TOPIC_PROMOTION_REQUESTED"],
                    request_bytes(name, version=version, event_id=event_id),
                    key=name.encode(),
                )
                ((arrived, event),) = await listener.wait(event_id, 1, timeout_s=180)
                data = event["data"]
                results.append(
                    {
                        "total_s": arrived - began,
                        "stages": data["stage_seconds"],
                        "model": data["triton_model_name"],
                        "runtime_mb": stub_rss_mb(triton_pid, RUNTIME_MODEL),  # its proof loaded the estimator
                    }
                )
                print(f"  v{version}: {arrived - began:.3f} s  {data['stage_seconds']}")
        finally:
            await producer.stop()
            await listener.stop()
    return results


def measure(stack: LocalStack, run_dir: Path, versions_count: int, loads: int) -> dict[str, Any]:
    triton_pid = stack.pids()["tritonserver"]["pid"]
    name = f"bench-light-{uuid.uuid4().hex[:6]}"
    versions = [register_iris(stack.mlflow_tracking_uri, name, regularisation=0.05 + i) for i in range(versions_count)]
    promotions = asyncio.run(promote_all(stack, run_dir, name, versions))
    light_models = [promotion["model"] for promotion in promotions]
    client = triton_http.InferenceServerClient(stack.triton_http, connection_timeout=120, network_timeout=120)
    try:
        runtime_mb = stub_rss_mb(triton_pid, RUNTIME_MODEL)
        light_mb = [stub_rss_mb(triton_pid, model) for model in light_models]
        stage_numpy_model(stack.model_repository)
        client.load_model(NUMPY_MODEL)
        numpy_mb = stub_rss_mb(triton_pid, NUMPY_MODEL)
        rows = iris_frame()[0].head(1).to_numpy(dtype=np.float64)
        numpy_infer_ms = infer_p50_ms(client, NUMPY_MODEL, rows, 300)
        light_infer_ms = infer_p50_ms(client, light_models[-1], rows, 300)
        numpy_loads, light_loads = [], []
        for _ in range(loads):  # alternately, so both see the same machine load
            numpy_loads.append(reload_s(client, triton_pid, NUMPY_MODEL))
            light_loads.append(reload_s(client, triton_pid, light_models[-1]))
        runtime_after_mb = stub_rss_mb(triton_pid, RUNTIME_MODEL)
    finally:
        client.close()
    # The runtime held one estimator after the first promotion's proof; each later version added its own.
    growth_mb = (promotions[-1]["runtime_mb"] - promotions[0]["runtime_mb"]) / (len(promotions) - 1)
    cold = promotions[1:]  # the first promotion also staged and loaded the shared runtime
    totals = [promotion["total_s"] for promotion in cold]
    load_stage = [promotion["stages"]["load"] for promotion in cold]
    outside = [promotion["total_s"] - sum(promotion["stages"].values()) for promotion in cold]
    stage_p50 = {
        stage: round(statistics.median(promotion["stages"].get(stage, 0.0) for promotion in cold), 3)
        for stage in cold[0]["stages"]
    }
    light_version_mb = statistics.median(light_mb) + max(growth_mb, 0.0)
    numpy_load_s, light_load_s = statistics.median(numpy_loads), statistics.median(light_loads)
    return {
        "light_versions_loaded": len(light_models),
        "numpy_model_rss_mb": round(numpy_mb, 1),
        "light_version_stub_rss_mb": round(statistics.median(light_mb), 1),
        "shared_runtime_growth_per_version_mb": round(growth_mb, 2),
        "light_version_rss_mb": round(light_version_mb, 1),
        "shared_runtime_rss_mb": round(runtime_mb, 1),
        "shared_runtime_rss_after_reloads_mb": round(runtime_after_mb, 1),
        "memory_ratio_vs_numpy_model": round(light_version_mb / numpy_mb, 3),
        "numpy_model_load_s": round(numpy_load_s, 3),
        "light_version_load_s": round(light_load_s, 3),
        "load_ratio_vs_numpy_model": round(light_load_s / numpy_load_s, 3),
        "first_promotion_s": round(promotions[0]["total_s"], 3),
        "first_promotion_load_stage_s": round(promotions[0]["stages"]["load"], 3),
        "cold_promotion_p50_s": round(statistics.median(totals), 3),
        "cold_promotion_load_stage_p50_s": round(statistics.median(load_stage), 3),
        "cold_promotion_stage_p50_s": stage_p50,
        "cold_promotion_outside_stages_p50_s": round(statistics.median(outside), 3),
        "pipeline_overhead_ratio": round(statistics.median(totals) / light_load_s, 3),
        "pipeline_floor_ratio": round((light_load_s + stage_p50["resolve"] + stage_p50["prove"]) / light_load_s, 3),
        "numpy_model_infer_p50_ms": round(numpy_infer_ms, 3),
        "light_version_infer_p50_ms": round(light_infer_ms, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", type=int, default=8)
    parser.add_argument("--loads", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-light-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
        print(f"stack ready in {stack.startup_s:.1f} s; promoting {args.versions} sklearn versions")
        figures = measure(stack, Path(tmp) / "worker", args.versions, args.loads)
    path = merge_figures("scale", figures)
    for key, value in figures.items():
        print(f"  {key}: {value}")
    print("goals: memory_ratio_vs_numpy_model <= 1.5, load_ratio_vs_numpy_model <= 3, pipeline_overhead_ratio <= 1.15")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
