"""How a downloaded MLflow model is served, and the policy gates (real MLflow model files, no server)."""

from __future__ import annotations

from pathlib import Path

import mlflow.sklearn
import numpy as np
import pytest
from google.protobuf import text_format
from mlflow.models import Model, infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from tritonclient.grpc import model_config_pb2

from worker.errors import PermanentFailure
from worker.registry import ResolvedVersion
from worker.serving_plan import check_metrics, check_required_tag, metric_thresholds, plan_serving
from worker.staging import stage_model
from worker.triton_config import BatchingOptions, render_config


def _sklearn_model(path: Path, *, signature: bool = True) -> Path:
    features, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(features, target)
    mlflow.sklearn.save_model(model, str(path), input_example=features.head(3) if signature else None)
    return path


def _onnx_model(path: Path) -> Path:
    """An MLmodel with the onnx flavor, as mlflow.onnx writes it (the graph bytes are not parsed here)."""
    path.mkdir()
    (path / "model.onnx").write_bytes(b"onnx-graph")
    mlmodel = Model()
    mlmodel.add_flavor("onnx", onnx_version="1.17", data="model.onnx", providers=["CPUExecutionProvider"])
    mlmodel.add_flavor("python_function", loader_module="mlflow.onnx", data="model.onnx")
    mlmodel.signature = infer_signature(np.zeros((1, 4), dtype=np.float32), np.zeros((1, 3), dtype=np.float32))
    mlmodel.save(str(path / "MLmodel"))
    return path


def test_sklearn_models_load_without_mlflow_in_triton(tmp_path: Path) -> None:
    plan = plan_serving(_sklearn_model(tmp_path / "m"))

    assert (plan.flavor, plan.backend) == ("sklearn", "python")
    assert plan.serving_spec.loader == "sklearn"
    assert plan.serving_spec.model_file == "model.skops"
    assert plan.serving_spec.serialization_format == "skops"
    assert plan.serving_spec.columns[0] == "sepal length (cm)"


def test_a_model_without_signature_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PermanentFailure, match="has no signature") as caught:
        plan_serving(_sklearn_model(tmp_path / "m", signature=False))
    assert caught.value.reason == "missing_signature"


def test_onnx_is_refused_without_the_backend_and_staged_with_it(tmp_path: Path) -> None:
    source = _onnx_model(tmp_path / "onnx")
    with pytest.raises(PermanentFailure, match="PROMOTER_WORKER_ONNX_BACKEND=true") as caught:
        plan_serving(source)
    assert caught.value.reason == "unsupported_flavor"

    plan = plan_serving(source, onnx_backend=True)
    config = render_config("m--00000000--v1", plan.signature, BatchingOptions(), backend=plan.backend)
    staged = stage_model(
        tmp_path / "repo",
        "m--00000000--v1",
        mlflow_model_dir=source,
        sha256="c" * 64,
        config_pbtxt=config,
        serving_spec=plan.serving_spec,
        stage_files=plan.served_by.stage_files,
        metadata={},
    )

    parsed = text_format.Parse(config, model_config_pb2.ModelConfig())
    assert parsed.backend == "onnxruntime"
    assert [(i.data_type, list(i.dims)) for i in parsed.input] == [(model_config_pb2.TYPE_FP32, [4])]
    assert (staged.path / "1" / "model.onnx").read_bytes() == b"onnx-graph"
    assert not (staged.path / "1" / "model.py").exists()


def test_a_model_of_no_served_flavor_is_refused_naming_what_is_served(tmp_path: Path) -> None:
    source = _onnx_model(tmp_path / "m")
    mlmodel = Model.load(str(source / "MLmodel"))
    mlmodel.flavors = {"keras": {"keras_version": "3.0"}}
    mlmodel.save(str(source / "MLmodel"))

    with pytest.raises(PermanentFailure, match=r"flavors \['keras'\] cannot be served") as caught:
        plan_serving(source, onnx_backend=True)
    assert caught.value.reason == "unsupported_flavor"
    assert "onnx (onnxruntime backend), sklearn (python backend), python_function (python backend)" in str(caught.value)


def _resolved(**tags: str) -> ResolvedVersion:
    return ResolvedVersion(
        model_name="iris",
        alias="champion",
        version=3,
        run_id="run-1",
        source="models:/m-1",
        version_tags={"validation_status": "approved"},
        model_tags=tags,
    )


def test_required_tag_from_settings_or_model_tag() -> None:
    check_required_tag(_resolved(), "validation_status=approved")
    with pytest.raises(PermanentFailure, match="needs version tag owner=ml-team to be served; it is missing"):
        check_required_tag(_resolved(**{"promoter.required_version_tag": "owner=ml-team"}), None)
    with pytest.raises(PermanentFailure, match="it is 'approved'"):
        check_required_tag(_resolved(), "validation_status=signed-off")


def test_metric_thresholds_from_settings_and_model_tags() -> None:
    resolved = _resolved(**{"promoter.min_metric.f1": "0.8"})
    thresholds = metric_thresholds(resolved, {"accuracy": 0.9})

    assert thresholds == {"accuracy": 0.9, "f1": 0.8}
    check_metrics(resolved, thresholds, {"accuracy": 0.95, "f1": 0.85})
    with pytest.raises(PermanentFailure, match=r"accuracy=0\.5 is below 0\.9; f1 is not logged on run run-1") as caught:
        check_metrics(resolved, thresholds, {"accuracy": 0.5})
    assert caught.value.reason == "metric_below_threshold"
