"""Decide how a downloaded MLflow model is served, and refuse what cannot or must not be.

Reads ``MLmodel``: the signature gives the tensors, the flavor (:mod:`worker.flavors`, tried in
detection order) gives the Triton backend, the ``serving.json`` spec and the files to stage.
Policy gates come from settings and from the registered model's tags: a required version tag
and minimum run metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow.models import Model

from schemas.model_ready import SignatureSummary
from schemas.promotion_rejected import ReasonCode
from worker.errors import PermanentFailure
from worker.flavors import catalog
from worker.flavors.flavor import PYTHON_BACKEND, Flavor, ServedTensors
from worker.flavors.onnx import BACKEND as ONNX_BACKEND
from worker.registry import ResolvedVersion
from worker.signature_mapping import UnsupportedSignatureError, summarise_signature
from worker.triton_backend.serving_spec import ServingSpec

TAG_REQUIRED_VERSION_TAG = "promoter.required_version_tag"
TAG_MIN_METRIC_PREFIX = "promoter.min_metric."


@dataclass(frozen=True, slots=True)
class ServingPlan:
    served_by: Flavor
    signature: SignatureSummary
    serving_spec: ServingSpec

    @property
    def flavor(self) -> str:
        """The MLflow flavor served, as ``model.ready`` names it."""
        return self.served_by.name

    @property
    def backend(self) -> str:
        return self.served_by.backend


def triton_backends(*, onnx_backend: bool) -> frozenset[str]:
    """The Triton backends every endpoint has: python always, onnxruntime when the settings say so."""
    return frozenset({PYTHON_BACKEND, ONNX_BACKEND} if onnx_backend else {PYTHON_BACKEND})


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
    if len(signature.inputs) != 1 or len(signature.outputs) != 1:
        raise PermanentFailure(
            ReasonCode.UNSUPPORTED_SIGNATURE, "only models with one input and one output tensor are supported"
        )
    flavor = catalog.detect(mlmodel.flavors)
    if flavor is None:
        raise PermanentFailure(
            ReasonCode.UNSUPPORTED_FLAVOR,
            f"flavors {sorted(mlmodel.flavors)} cannot be served: supported are {catalog.supported()}",
        )
    if flavor.backend not in triton_backends(onnx_backend=onnx_backend):
        raise PermanentFailure(ReasonCode.UNSUPPORTED_FLAVOR, flavor.backend_missing)
    tensors = ServedTensors(
        input=signature.inputs[0].name,
        output=signature.outputs[0].name,
        columns=tuple(column.name for column in signature.columns),
    )
    spec = flavor.serving_spec(mlmodel.flavors[flavor.name], tensors)
    return ServingPlan(served_by=flavor, signature=signature, serving_spec=spec)


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
