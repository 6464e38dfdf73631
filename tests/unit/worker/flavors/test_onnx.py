"""The onnx flavor: the graph alone, as 1/model.onnx, for Triton's onnxruntime backend."""

from __future__ import annotations

from pathlib import Path

from worker.flavors.flavor import ServedTensors
from worker.flavors.onnx import FLAVOR

TENSORS = ServedTensors(input="input", output="output", columns=())


def test_spec_names_the_graph_file_of_the_mlmodel() -> None:
    assert FLAVOR.serving_spec({"data": "graph.onnx"}, TENSORS).model_file == "graph.onnx"
    assert FLAVOR.serving_spec({}, TENSORS).model_file == "model.onnx"
    assert FLAVOR.serving_spec({}, TENSORS).loader == "onnxruntime"


def test_stages_the_graph_where_onnxruntime_looks_and_no_python(tmp_path: Path) -> None:
    mlflow_dir, version_dir = tmp_path / "mlflow", tmp_path / "1"
    mlflow_dir.mkdir()
    version_dir.mkdir()
    (mlflow_dir / "graph.onnx").write_bytes(b"onnx-graph")

    FLAVOR.stage_files(FLAVOR.serving_spec({"data": "graph.onnx"}, TENSORS), mlflow_dir, version_dir)

    assert [path.name for path in version_dir.iterdir()] == ["model.onnx"]
    assert (version_dir / "model.onnx").read_bytes() == b"onnx-graph"


def test_needs_the_onnxruntime_backend_and_says_how_to_enable_it() -> None:
    assert FLAVOR.backend == "onnxruntime"
    assert "PROMOTER_WORKER_ONNX_BACKEND=true" in FLAVOR.backend_missing
