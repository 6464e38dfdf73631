"""tritonserver from the local stack: explicit load of a python-backend model, infer over HTTP and gRPC."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from deploy.stack.local_stack import LocalStack
from deploy.stack.process import poll_until

pytestmark = pytest.mark.integration

LOAD_TIMEOUT_S = 60.0

MODEL_PY = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                y = (x * 2.0 + 1.0).astype(np.float32)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", y)]))
            return responses
    """
)


def _config(name: str) -> str:
    return textwrap.dedent(
        f"""\
        name: "{name}"
        backend: "python"
        max_batch_size: 8
        input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        """
    )


def write_affine_model(repository: Path, name: str) -> Path:
    """``repository/name/{config.pbtxt,1/model.py}``: output = input * 2 + 1 (numpy only)."""
    version_dir = repository / name / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.py").write_text(MODEL_PY)
    (repository / name / "config.pbtxt").write_text(_config(name))
    return repository / name


@pytest.fixture
def http_client(local_stack: LocalStack) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(
        local_stack.triton_http, connection_timeout=10.0, network_timeout=LOAD_TIMEOUT_S
    )
    try:
        yield client
    finally:
        client.close()  # a kept-alive connection would delay Triton's shutdown


@pytest.fixture
def grpc_client(local_stack: LocalStack) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(local_stack.triton_grpc)
    try:
        yield client
    finally:
        client.close()


def test_load_infer_unload_python_backend_model(
    local_stack: LocalStack,
    http_client: httpclient.InferenceServerClient,
    grpc_client: grpcclient.InferenceServerClient,
) -> None:
    name = f"it_affine_{uuid.uuid4().hex[:8]}"
    write_affine_model(local_stack.model_repository, name)
    assert http_client.is_server_live()
    assert not http_client.is_model_ready(name)

    http_client.load_model(name)  # bounded by network_timeout: a hung load fails the test
    try:
        assert http_client.is_model_ready(name)
        assert grpc_client.is_model_ready(name, client_timeout=10.0)
        index = {entry["name"]: entry for entry in http_client.get_model_repository_index()}
        assert index[name]["state"] == "READY"

        batch = np.array([[0.0, 1.0, 2.0, 3.0], [-1.5, 0.5, 10.0, 1e3]], dtype=np.float32)
        expected = batch * 2.0 + 1.0

        http_input = httpclient.InferInput("INPUT0", list(batch.shape), "FP32")
        http_input.set_data_from_numpy(batch)
        http_result = http_client.infer(name, [http_input], outputs=[httpclient.InferRequestedOutput("OUTPUT0")])
        np.testing.assert_allclose(http_result.as_numpy("OUTPUT0"), expected)

        grpc_input = grpcclient.InferInput("INPUT0", list(batch.shape), "FP32")
        grpc_input.set_data_from_numpy(batch)
        grpc_result = grpc_client.infer(
            name, [grpc_input], outputs=[grpcclient.InferRequestedOutput("OUTPUT0")], client_timeout=10.0
        )
        np.testing.assert_allclose(grpc_result.as_numpy("OUTPUT0"), expected)
    finally:
        http_client.unload_model(name)

    assert not http_client.is_model_ready(name)

    def unloaded() -> bool:
        index = {entry["name"]: entry for entry in http_client.get_model_repository_index()}
        return bool(index[name]["state"] == "UNAVAILABLE")

    # The stub process exits a moment after unload returns (state UNLOADING meanwhile).
    assert poll_until(unloaded, 20), "model not UNAVAILABLE within 20 s of its unload"
