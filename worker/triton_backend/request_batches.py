"""Answer every request of a dynamic batch with one prediction, unless a caller's row spoils it.

Shared by the python-backend models staged by model-promoter (``model.py``, ``light_model.py``,
``runtime_model.py``). The requests' arrays are concatenated and predicted once. When that fails,
each request is predicted alone, so a caller's bad row (NaN, inf, a value the model refuses)
fails only that caller's request: values the model refuses (``ValueError``) come back as
INVALID_ARG, which Triton answers with HTTP 400 / gRPC INVALID_ARGUMENT; anything else as an
internal error. A refusal from the shared runtime is answered with the runtime's message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub

Predict = Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]


class RuntimeRefusalError(Exception):
    """The shared runtime answered a delegated prediction with this Triton error."""

    def __init__(self, triton_error: Any) -> None:
        super().__init__("the shared runtime refused the prediction")
        self.triton_error = triton_error


class SplitCounter:
    """Counts split batches as ``promoter_batches_split_total{model}`` on Triton's ``/metrics``."""

    def __init__(self, model_name: str) -> None:
        # The family must outlive its metric (Triton refuses to count on a metric of a deleted family).
        self._family = pb_utils.MetricFamily(
            name="promoter_batches_split_total",
            description="Dynamic batches whose joint prediction failed, so each request was predicted alone",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._metric = self._family.Metric(labels={"model": model_name})

    def __call__(self) -> None:
        self._metric.increment(1)


REFUSED_INPUT = "the model refused the input: "
"""How every refusal of a caller's values begins (the runtime's too: BLS drops an error's code, not its text)."""


def _error(message: str) -> Any:
    code = pb_utils.TritonError.INVALID_ARG if message.startswith(REFUSED_INPUT) else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def error_response(error: Exception) -> Any:
    """The response to one request whose prediction raised ``error``."""
    if isinstance(error, RuntimeRefusalError):
        return _error(error.triton_error.message())
    message = f"{type(error).__name__}: {error}"
    if isinstance(error, ValueError):  # the model refuses these values: the caller's input, not the server
        return _error(f"{REFUSED_INPUT}{message}")
    return _error(f"prediction failed: {message}")


def _response(output_name: str, predictions: np.ndarray[Any, Any]) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(output_name, predictions)])


def _alone(array: np.ndarray[Any, Any], predict: Predict, output_name: str) -> Any:
    try:
        return _response(output_name, predict(array))
    except Exception as error:  # this request's own failure, answered to it alone
        return error_response(error)


def answer_requests(
    arrays: Sequence[np.ndarray[Any, Any]], predict: Predict, output_name: str, count_split: Callable[[], None]
) -> list[Any]:
    """One response per array; ``predict`` maps rows to output rows; ``count_split`` when a batch was split."""
    if len(arrays) == 1:
        return [_alone(arrays[0], predict, output_name)]
    try:
        predictions = predict(np.concatenate(arrays))
    except Exception:  # a row of one caller must not fail the others: predict each request alone
        count_split()
        return [_alone(array, predict, output_name) for array in arrays]
    responses = []
    start = 0
    for array in arrays:
        end = start + array.shape[0]
        responses.append(_response(output_name, predictions[start:end]))
        start = end
    return responses
