"""Decide how a downloaded MLflow model is served, and refuse what cannot or must not be.

Reads ``MLmodel``: the flavor picks the loader inside Triton (sklearn: skops/pickle directly;
other pyfunc: mlflow.pyfunc), the signature gives the tensors. Policy gates come from settings
and from the registered model's tags: a required version tag and minimum run metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.models import Model

from schemas.model_ready import SignatureSummary
from schemas.promotion_rejected import ReasonCode
from worker.errors import PermanentFailure
from worker.registry import ResolvedVersion
from worker.signature_mapping import UnsupportedSignatureError, summarise_signature

SKLEARN_FORMATS = ("skops", "cloudpickle", "pickle")
TAG_REQUIRED_VERSION_TAG = "promoter.required_version_tag"
TAG_MIN_METRIC_PREFIX = "promoter.min_metric."


@dataclass(frozen=True, slots=True)
class ServingPlan:
    flavor: str
    signature: SignatureSummary
    serving_spec: dict[str, Any]
    backend: str = "python"


def _load_mlmodel(model_dir: Path) -> Model:
    try:
        return Model.load(str(model_dir / "MLmodel"))
    except Exception as error:
        raise PermanentFailure(
            ReasonCode.UNSUPPORTED_FLAVOR, f"the artifacts hold no readable MLmodel file: {error}"
        ) from None


def plan_serving(model_dir: Path, *, onnx_backend: bool = False) -> ServingPlan:
    """How to serve the MLflow model in ``model_dir`` (blocking: reads files).

    ``onnx_backend`` says the target Tritons have the onnxruntime backend; without it ONNX
    models are refused with that reason.
    """
    mlmodel = _load_mlmodel(model_dir)
    try:
        signature = summarise_signature(mlmodel.signature)
    except UnsupportedSignatureError as error:
        reason = ReasonCode.MISSING_SIGNATURE if mlmodel.signature is None else ReasonCode.UNSUPPORTED_SIGNATURE
        raise PermanentFailure(reason, f"model signature: {error}") from None
    tensors: dict[str, Any] = {
        "input": signature.inputs[0].name,
        "output": signature.outputs[0].name,
        "columns": [column.name for column in signature.columns],
    }
    if len(signature.inputs) != 1 or len(signature.outputs) != 1:
        raise PermanentFailure(
            ReasonCode.UNSUPPORTED_SIGNATURE, "only models with one input and one output tensor are supported"
        )
    flavors = mlmodel.flavors
    onnx = flavors.get("onnx")
    if onnx is not None:
        if not onnx_backend:
            raise PermanentFailure(
                ReasonCode.UNSUPPORTED_FLAVOR,
                "ONNX models need Triton's onnxruntime backend; set PROMOTER_WORKER_ONNX_BACKEND=true "
                "once every Triton endpoint has it",
            )
        spec = {"loader": "onnxruntime", "model_file": onnx.get("data", "model.onnx"), **tensors}
        return ServingPlan(flavor="onnx", signature=signature, serving_spec=spec, backend="onnxruntime")
    sklearn = flavors.get("sklearn")
    if sklearn is not None:
        serialization = sklearn.get("serialization_format", "cloudpickle")
        if serialization not in SKLEARN_FORMATS:
            raise PermanentFailure(
                ReasonCode.UNSUPPORTED_FLAVOR,
                f"sklearn serialization format {serialization!r} is not supported",
            )
        spec = {
            "loader": "sklearn",
            "model_file": sklearn["pickled_model"],
            "serialization_format": serialization,
            "skops_trusted_types": sklearn.get("skops_trusted_types"),
            **tensors,
        }
        return ServingPlan(flavor="sklearn", signature=signature, serving_spec=spec)
    if "python_function" in flavors:
        return ServingPlan(flavor="python_function", signature=signature, serving_spec={"loader": "pyfunc", **tensors})
    raise PermanentFailure(
        ReasonCode.UNSUPPORTED_FLAVOR,
        f"flavors {sorted(flavors)} cannot be served: supported are sklearn and python_function "
        "(python backend) and onnx (onnxruntime backend)",
    )


def required_tag(resolved: ResolvedVersion, default: str | None) -> tuple[str, str] | None:
    """The ``key=value`` version tag the policy requires, from the model's tag or the settings."""
    raw = resolved.model_tags.get(TAG_REQUIRED_VERSION_TAG, default)
    if not raw:
        return None
    key, _, value = raw.partition("=")
    return key.strip(), value.strip()


def check_required_tag(resolved: ResolvedVersion, default: str | None) -> None:
    requirement = required_tag(resolved, default)
    if requirement is None:
        return
    key, value = requirement
    actual = resolved.version_tags.get(key)
    if actual != value:
        found = "it is missing" if actual is None else f"it is {actual!r}"
        raise PermanentFailure(
            ReasonCode.POLICY_TAG_MISSING,
            f"{resolved.model_name} v{resolved.version} needs version tag {key}={value} to be served; {found}. "
            f"Set it in MLflow (set_model_version_tag), then promote again.",
        )


def metric_thresholds(resolved: ResolvedVersion, defaults: Mapping[str, float]) -> dict[str, float]:
    """Minimum run metrics: the settings, overridden by ``promoter.min_metric.<name>`` model tags."""
    thresholds = dict(defaults)
    for tag, raw in resolved.model_tags.items():
        if tag.startswith(TAG_MIN_METRIC_PREFIX):
            try:
                thresholds[tag.removeprefix(TAG_MIN_METRIC_PREFIX)] = float(raw)
            except ValueError:
                raise PermanentFailure(
                    ReasonCode.METRIC_BELOW_THRESHOLD, f"model tag {tag}={raw!r} is not a number"
                ) from None
    return thresholds


def check_metrics(resolved: ResolvedVersion, thresholds: Mapping[str, float], metrics: Mapping[str, float]) -> None:
    failures = []
    for name, minimum in sorted(thresholds.items()):
        value = metrics.get(name)
        if value is None:
            failures.append(f"{name} is not logged on run {resolved.run_id} (needs >= {minimum:g})")
        elif value < minimum:
            failures.append(f"{name}={value:g} is below {minimum:g}")
    if failures:
        raise PermanentFailure(
            ReasonCode.METRIC_BELOW_THRESHOLD,
            f"{resolved.model_name} v{resolved.version} fails the metric policy: " + "; ".join(failures),
        )
