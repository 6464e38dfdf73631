"""Prove a staged model: the same input through Triton and through MLflow must give the same answer.

The input is the model's logged input example (or, without one, a zero batch shaped by the
signature). MLflow's own ``pyfunc`` prediction in the worker is the reference: a mismatch is the
training/serving skew that would otherwise reach users, so the promotion is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import Model
from tritonclient.utils import triton_to_np_dtype

from runtime.logging import get_logger
from schemas.model_ready import SignatureSummary
from schemas.promotion_rejected import ReasonCode
from worker.errors import PermanentFailure
from worker.model_environment import installed_versions, unmet_requirements

log = get_logger(__name__)

_SYNTHETIC_ROWS = 2
_SHOWN_ROWS = 3


@dataclass(frozen=True, slots=True)
class ParityCase:
    """One batch in both forms: the tensor Triton gets and what MLflow's pyfunc gets."""

    tensor: np.ndarray[Any, Any]
    mlflow_input: Any
    expected: np.ndarray[Any, Any]
    synthetic: bool


def warm_up_model_libraries() -> None:
    """Import what parity checks load (MLflow pyfunc, scikit-learn, skops): seconds, paid once at start-up.

    Also the installed versions a model's requirements are compared with (:func:`installed_versions`): built
    lazily, every promotion that started while the first build ran would build it too.
    """
    import mlflow.sklearn  # noqa: F401, PLC0415
    import sklearn.linear_model  # noqa: F401, PLC0415
    import skops.io  # noqa: F401, PLC0415

    installed_versions()


def _example(mlmodel: Model, model_dir: Path, signature: SignatureSummary) -> tuple[Any, bool]:
    example = mlmodel.load_input_example(str(model_dir))
    if example is not None:
        return example, False
    spec = signature.inputs[0]
    dtype = triton_to_np_dtype(spec.datatype)
    if signature.columns:
        return pd.DataFrame(
            np.zeros((_SYNTHETIC_ROWS, len(signature.columns)), dtype=dtype),
            columns=[c.name for c in signature.columns],
        ), True
    return np.zeros((_SYNTHETIC_ROWS, *[max(d, 1) for d in spec.shape]), dtype=dtype), True


def prepare_case(model_dir: Path, signature: SignatureSummary) -> ParityCase:
    """Load the example and MLflow's prediction for it (blocking: imports and loads the model); log what of the
    model's environment this one does not meet (:mod:`worker.model_environment`, in place of MLflow's check)."""
    mlmodel = Model.load(str(model_dir / "MLmodel"))
    python_version = mlmodel.flavors.get(mlflow.pyfunc.FLAVOR_NAME, {}).get(mlflow.pyfunc.PY_VERSION)
    unmet = unmet_requirements(model_dir, python_version)
    if unmet:
        log.warning("the worker's environment differs from the model's", unmet=unmet)
    example, synthetic = _example(mlmodel, model_dir, signature)
    dtype = triton_to_np_dtype(signature.inputs[0].datatype)
    if isinstance(example, pd.DataFrame):
        missing = [c.name for c in signature.columns if c.name not in example.columns]
        if missing:
            raise PermanentFailure(
                ReasonCode.UNSUPPORTED_SIGNATURE, f"the input example lacks signature columns {missing}"
            )
        tensor = example[[c.name for c in signature.columns]].to_numpy(dtype=dtype)
    else:
        tensor = np.asarray(example, dtype=dtype)
    try:
        model = mlflow.pyfunc.load_model(str(model_dir), suppress_warnings=True)  # checked above, once
        expected = np.asarray(model.predict(example))
    except Exception as error:
        raise PermanentFailure(
            ReasonCode.PARITY_MISMATCH, f"MLflow cannot predict the model's own input example: {error}"
        ) from None
    return ParityCase(tensor=tensor, mlflow_input=example, expected=expected, synthetic=synthetic)


def check_parity(case: ParityCase, actual: np.ndarray[Any, Any], *, where: str, rtol: float, atol: float) -> None:
    """Raise ``parity_mismatch`` unless Triton's ``actual`` equals MLflow's prediction."""
    expected = case.expected.reshape(actual.shape) if case.expected.size == actual.size else case.expected
    if expected.shape != actual.shape:
        raise PermanentFailure(
            ReasonCode.PARITY_MISMATCH,
            f"{where} answered shape {actual.shape}, MLflow predicts shape {case.expected.shape}",
        )
    if np.issubdtype(actual.dtype, np.number) and np.issubdtype(expected.dtype, np.number):
        equal = np.isclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol)
    else:
        equal = actual == expected
    if not np.all(equal):
        rows = np.flatnonzero(~np.all(equal.reshape(len(equal), -1), axis=1))
        shown = ", ".join(
            f"row {row}: Triton {actual[row].tolist()} vs MLflow {expected[row].tolist()}" for row in rows[:_SHOWN_ROWS]
        )
        raise PermanentFailure(
            ReasonCode.PARITY_MISMATCH,
            f"{where} disagrees with MLflow on {len(rows)} of {len(actual)} example rows ({shown}); the serving "
            "code does not reproduce the trained model, so the new version was unloaded and the old one kept",
        )
