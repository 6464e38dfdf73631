from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from schemas.model_ready import ColumnSpec, SignatureSummary, TensorSpec
from worker.triton_config import BatchingOptions, InvalidModelTagError, render_config

SIGNATURE = SignatureSummary(
    inputs=[TensorSpec(name="input", datatype="FP64", shape=[4])],
    outputs=[TensorSpec(name="output", datatype="INT64", shape=[1])],
    columns=[ColumnSpec(name=f"c{i}", type="double") for i in range(4)],
)


def test_rendered_config_parses_as_a_triton_model_config() -> None:
    text = render_config("iris--0a1b2c3d--v1", SIGNATURE, BatchingOptions(max_batch_size=32, max_queue_delay_us=250))

    config = text_format.Parse(text, model_config_pb2.ModelConfig())

    assert config.name == "iris--0a1b2c3d--v1"
    assert config.backend == "python"
    assert config.max_batch_size == 32
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("input", model_config_pb2.TYPE_FP64, [4])]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("output", model_config_pb2.TYPE_INT64, [1])
    ]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.instance_group[0].count == 1


def test_tags_override_settings() -> None:
    options = BatchingOptions().with_tags({"triton.max_batch_size": "8", "triton.instance_count": "2", "x": "y"})

    assert (options.max_batch_size, options.instance_count, options.max_queue_delay_us) == (8, 2, 100)


@pytest.mark.parametrize(("tag", "value"), [("triton.max_batch_size", "0"), ("triton.instance_count", "two")])
def test_bad_tags_are_named(tag: str, value: str) -> None:
    with pytest.raises(InvalidModelTagError, match=f"tag {tag}={value!r}"):
        BatchingOptions().with_tags({tag: value})


# config.pbtxt as the f-string renderer wrote it for SIGNATURE before it was built from the protobuf.
RENDERED_BY_F_STRINGS = """\
name: "iris--0a1b2c3d--v1"
backend: "python"
max_batch_size: 16
input [
  { name: "input" data_type: TYPE_FP64 dims: [ 4 ] }
]
output [
  { name: "output" data_type: TYPE_INT64 dims: [ 1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 0 }
instance_group [ { kind: KIND_CPU count: 3 } ]
"""


def test_same_config_as_the_f_string_renderer_even_with_no_queue_delay() -> None:
    batching = BatchingOptions(max_batch_size=16, max_queue_delay_us=0, instance_count=3)

    text = render_config("iris--0a1b2c3d--v1", SIGNATURE, batching)

    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config == text_format.Parse(RENDERED_BY_F_STRINGS, model_config_pb2.ModelConfig())
    assert config.HasField("dynamic_batching")  # batching on, with no delay: absent would turn it off
