"""The Triton admin token: sent on model-repository calls only, and a refusal names the setting to fix."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import SecretStr, ValidationError
from tritonclient.utils import InferenceServerException

from runtime.settings import TritonSettings
from schemas.promotion_rejected import ReasonCode
from worker.errors import PermanentFailure, TransientFailure
from worker.triton_fleet import TritonEndpoint, admin_headers, is_access_refusal

TOKEN = "0ddba11-not-for-logs"
HTTP_REFUSAL = InferenceServerException(
    "This API is restricted, expecting header 'x-promoter-admin'", status="403"
)  # what tritonserver 2.51 answers over HTTP (measured)
GRPC_REFUSAL = InferenceServerException(
    "This protocol is restricted, expecting header 'triton-grpc-protocol-x-promoter-admin'",
    status="StatusCode.UNAVAILABLE",
)  # ... and over gRPC: UNAVAILABLE, not PERMISSION_DENIED


Protocol = Literal["http", "grpc"]


def settings(
    protocol: Protocol = "http", token: str | None = TOKEN, header: str = "x-promoter-admin"
) -> TritonSettings:
    return TritonSettings(
        endpoints=["t0:8000"],
        protocol=protocol,
        admin_header=header,
        admin_token=SecretStr(token) if token is not None else None,
    )


class RecordingClient:
    """A tritonclient aio client that records the headers of every call and refuses if told to."""

    def __init__(self, refusal: InferenceServerException | None = None) -> None:
        self.refusal = refusal
        self.calls: list[tuple[str, dict[str, str] | None]] = []

    async def _answer(self, call: str, headers: dict[str, str] | None, answer: Any) -> Any:
        self.calls.append((call, headers))
        if self.refusal is not None and call in {"load_model", "unload_model", "get_model_repository_index"}:
            raise self.refusal
        return answer

    async def is_server_live(self, headers: dict[str, str] | None = None) -> bool:
        return bool(await self._answer("is_server_live", headers, True))

    async def is_model_ready(self, model: str, headers: dict[str, str] | None = None) -> bool:
        return bool(await self._answer("is_model_ready", headers, True))

    async def load_model(self, model: str, headers: dict[str, str] | None = None) -> None:
        await self._answer("load_model", headers, None)

    async def unload_model(self, model: str, headers: dict[str, str] | None = None) -> None:
        await self._answer("unload_model", headers, None)

    async def get_model_repository_index(self, headers: dict[str, str] | None = None, as_json: bool = False) -> Any:
        models = [{"name": "iris--v1", "state": "READY"}]
        return await self._answer("get_model_repository_index", headers, {"models": models} if as_json else models)

    async def close(self) -> None:
        return None


def endpoint_with(client: RecordingClient, config: TritonSettings) -> TritonEndpoint:
    endpoint = TritonEndpoint("t0:8000", config)
    endpoint._lazy_client = client  # the fake stands in for the aio client made on first use
    return endpoint


def test_the_header_is_named_as_triton_expects_it_on_each_protocol() -> None:
    assert admin_headers(settings("http")) == {"x-promoter-admin": TOKEN}
    assert admin_headers(settings("grpc")) == {"triton-grpc-protocol-x-promoter-admin": TOKEN}
    assert admin_headers(settings("http", header="x-ops")) == {"x-ops": TOKEN}
    assert admin_headers(settings("http", token=None)) is None


def test_refusals_of_both_protocols_are_recognised_and_other_errors_are_not() -> None:
    assert is_access_refusal(HTTP_REFUSAL)
    assert is_access_refusal(GRPC_REFUSAL)
    assert not is_access_refusal(InferenceServerException("failed to connect", status="StatusCode.UNAVAILABLE"))
    assert not is_access_refusal(InferenceServerException("load failed for model 'm'", status="400"))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_only_model_repository_calls_carry_the_token(protocol: Protocol) -> None:
    config = settings(protocol)
    client = RecordingClient()
    endpoint = endpoint_with(client, config)

    await endpoint.load("iris--v1")
    await endpoint.unload("iris--v1")
    assert await endpoint.loaded_models() == {"iris--v1": "READY"}
    assert await endpoint.is_ready("iris--v1")

    sent = {call: headers for call, headers in client.calls}
    expected = admin_headers(config)
    assert sent["load_model"] == expected
    assert sent["unload_model"] == expected
    assert sent["get_model_repository_index"] == expected
    assert sent["is_server_live"] is None
    assert sent["is_model_ready"] is None


async def test_without_a_token_no_header_is_sent() -> None:
    client = RecordingClient()
    endpoint = endpoint_with(client, settings(token=None))
    await endpoint.load("iris--v1")
    assert all(headers is None for _, headers in client.calls)


@pytest.mark.parametrize(("protocol", "refusal"), [("http", HTTP_REFUSAL), ("grpc", GRPC_REFUSAL)])
async def test_a_refused_load_is_permanent_names_the_setting_and_hides_the_token(
    protocol: Protocol, refusal: InferenceServerException
) -> None:
    endpoint = endpoint_with(RecordingClient(refusal), settings(protocol))

    with pytest.raises(PermanentFailure) as raised:
        await endpoint.load("iris--v1")

    failure = raised.value
    assert failure.reason is ReasonCode.TRITON_LOAD_FAILED
    assert "PROMOTER_TRITON_ADMIN_TOKEN must match" in failure.message
    assert "--http-restricted-api" in failure.message
    assert "an admin header Triton does not accept" in failure.message
    assert TOKEN not in failure.message
    assert TOKEN not in str(failure)
    assert TOKEN not in repr(failure)


async def test_a_refusal_without_a_token_says_none_was_sent() -> None:
    endpoint = endpoint_with(RecordingClient(HTTP_REFUSAL), settings(token=None))
    with pytest.raises(PermanentFailure, match="this worker sent no admin header"):
        await endpoint.load("iris--v1")


async def test_a_refused_repository_index_is_permanent_and_a_refused_unload_is_retried_later() -> None:
    endpoint = endpoint_with(RecordingClient(GRPC_REFUSAL), settings("grpc"))

    with pytest.raises(PermanentFailure, match=r"refused a model-repository call \(repository index\)"):
        await endpoint.loaded_models()
    # retirement and the repairer postpone a failed unload; it succeeds once the token matches
    with pytest.raises(TransientFailure, match="PROMOTER_TRITON_ADMIN_TOKEN") as unload:
        await endpoint.unload("iris--v1")
    assert TOKEN not in unload.value.message


def test_the_token_stays_out_of_the_settings_repr() -> None:
    config = settings()
    assert TOKEN not in repr(config)
    assert TOKEN not in str(config)
    assert TOKEN not in repr(config.model_dump())
    assert config.admin_token is not None
    assert config.admin_token.get_secret_value() == TOKEN


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_token_is_refused_at_start_naming_the_setting(empty: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_TRITON_ADMIN_TOKEN", empty)
    with pytest.raises(ValidationError) as refused:
        TritonSettings()
    assert refused.value.errors()[0]["loc"] == ("admin_token",)
    assert "set but empty" in str(refused.value)
