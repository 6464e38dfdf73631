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

from schemas.model_ready import SignatureSummary
from schemas.promotion_rejected import ReasonCode
from worker.errors import PermanentFailure

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

    Also MLflow's map of installed packages, which ``mlflow.pyfunc.load_model`` builds on its first call to
    compare the model's requirements with this environment (0.23 CPU-seconds: every installed file is
    stat'ed). Built lazily, it was built by every promotion that started while the first build ran: a
    quarter of the worker's CPU when 40 promotions arrived at once (py-spy, concurrency 4).
    """
    import mlflow.sklearn  # noqa: F401, PLC0415
    import sklearn.linear_model  # noqa: F401, PLC0415
    import skops.io  # noqa: F401, PLC0415
    from mlflow.utils import requirements_utils  # noqa: PLC0415

    requirements_utils._init_packages_to_modules_map()  # type: ignore[no-untyped-call]  # private: no public way


def _example(model_dir: Path, signature: SignatureSummary) -> tuple[Any, bool]:
    example = Model.load(str(model_dir / "MLmodel")).load_input_example(str(model_dir))
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
    """Load the example and MLflow's prediction for it (blocking: imports and loads the model)."""
    example, synthetic = _example(model_dir, signature)
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
        expected = np.asarray(mlflow.pyfunc.load_model(str(model_dir)).predict(example))
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
