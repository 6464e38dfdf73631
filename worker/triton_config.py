"""Generate a Triton ``config.pbtxt`` from a signature summary and batching options.

Follows Triton's model-configuration docs: inputs/outputs without the batch dimension when
``max_batch_size`` > 0, ``dynamic_batching`` with a queue delay, ``instance_group`` on CPU.
Batching options come from worker settings, overridable per registered model with tags
(``triton.max_batch_size``, ``triton.max_queue_delay_us``, ``triton.instance_count``).
A generated config is complete: Triton runs with ``--disable-auto-complete-config``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

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


def _quoted(text: str) -> str:
    return json.dumps(text)


def _tensor(spec: TensorSpec) -> str:
    dims = ", ".join(str(dim) for dim in spec.shape)
    return f"  {{ name: {_quoted(spec.name)} data_type: TYPE_{spec.datatype} dims: [ {dims} ] }}"


def render_config(
    triton_name: str, signature: SignatureSummary, batching: BatchingOptions, *, backend: str = "python"
) -> str:
    """The text of ``config.pbtxt`` for one immutable Triton model."""
    inputs = ",\n".join(_tensor(spec) for spec in signature.inputs)
    outputs = ",\n".join(_tensor(spec) for spec in signature.outputs)
    return (
        f"name: {_quoted(triton_name)}\n"
        f"backend: {_quoted(backend)}\n"
        f"max_batch_size: {batching.max_batch_size}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {batching.max_queue_delay_us} }}\n"
        f"instance_group [ {{ kind: KIND_CPU count: {batching.instance_count} }} ]\n"
    )
