"""Generate a Triton ``config.pbtxt`` from a signature summary and batching options.

Built as Triton's own ``ModelConfig`` protobuf (``tritonclient.grpc.model_config_pb2``) and
written in protobuf text format, the format Triton parses. Follows Triton's model-configuration
docs: inputs/outputs without the batch dimension when ``max_batch_size`` > 0,
``dynamic_batching`` with a queue delay, ``instance_group`` on CPU.
Batching options come from worker settings, overridable per registered model with tags
(``triton.max_batch_size``, ``triton.max_queue_delay_us``, ``triton.instance_count``).
A generated config is complete: Triton runs with ``--disable-auto-complete-config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from schemas.model_ready import SignatureSummary, TensorSpec

TAG_MAX_BATCH_SIZE = "triton.max_batch_size"
TAG_MAX_QUEUE_DELAY_US = "triton.max_queue_delay_us"
TAG_INSTANCE_COUNT = "triton.instance_count"


class InvalidModelTagError(ValueError):
    """A ``triton.*`` tag on the registered model has a value we cannot use."""


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    max_batch_size: int = 64
    max_queue_delay_us: int = 100
    instance_count: int = 1

    def with_tags(self, tags: Mapping[str, str]) -> BatchingOptions:
        """These options, overridden by the registered model's ``triton.*`` tags."""
        overrides: dict[str, int] = {}
        for tag, field, minimum in (
            (TAG_MAX_BATCH_SIZE, "max_batch_size", 1),
            (TAG_MAX_QUEUE_DELAY_US, "max_queue_delay_us", 0),
            (TAG_INSTANCE_COUNT, "instance_count", 1),
        ):
            if tag not in tags:
                continue
            raw = tags[tag]
            if not raw.isdigit() or int(raw) < minimum:
                raise InvalidModelTagError(f"tag {tag}={raw!r} must be an integer >= {minimum}")
            overrides[field] = int(raw)
        return replace(self, **overrides)


def _tensor(tensor: model_config_pb2.ModelInput | model_config_pb2.ModelOutput, spec: TensorSpec) -> None:
    tensor.name = spec.name
    tensor.data_type = model_config_pb2.DataType.Value(f"TYPE_{spec.datatype}")
    tensor.dims.extend(spec.shape)


def model_config(
    triton_name: str, signature: SignatureSummary, batching: BatchingOptions, *, backend: str = "python"
) -> model_config_pb2.ModelConfig:
    """Triton's ``ModelConfig`` for one immutable Triton model."""
    config = model_config_pb2.ModelConfig(name=triton_name, backend=backend, max_batch_size=batching.max_batch_size)
    for spec in signature.inputs:
        _tensor(config.input.add(), spec)
    for spec in signature.outputs:
        _tensor(config.output.add(), spec)
    config.dynamic_batching.SetInParent()  # present even with a queue delay of 0
    config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU, count=batching.instance_count)
    return config


def render_config(
    triton_name: str, signature: SignatureSummary, batching: BatchingOptions, *, backend: str = "python"
) -> str:
    """The text of ``config.pbtxt`` for one immutable Triton model."""
    return str(text_format.MessageToString(model_config(triton_name, signature, batching, backend=backend)))
