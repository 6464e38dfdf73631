"""The blocking promotion client has the async one's parameters, spelled out (what DAG authors and mypy see)."""

from __future__ import annotations

import inspect

import pytest

from promoter_client.promotion import request_promotion, request_promotion_async
from runtime.settings_errors import InvalidSettingsError


def test_the_blocking_client_takes_exactly_the_async_clients_parameters() -> None:
    blocking = inspect.signature(request_promotion, eval_str=True)
    awaited = inspect.signature(request_promotion_async, eval_str=True)

    assert list(blocking.parameters.values()) == list(awaited.parameters.values())
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in blocking.parameters.values())
    assert blocking.return_annotation == awaited.return_annotation


def test_a_bad_setting_is_named_by_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_KAFKA_REQUEST_TIMEOUT_MS", "soon")
    monkeypatch.setenv("PROMOTER_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("PROMOTER_KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON")

    with pytest.raises(InvalidSettingsError) as raised:
        request_promotion("iris", wait_s=1)  # fails reading its settings: nothing reaches Kafka

    message = str(raised.value)
    assert "PROMOTER_KAFKA_REQUEST_TIMEOUT_MS: " in message
    assert "(given 'soon')" in message
    assert "PROMOTER_KAFKA_SECURITY_PROTOCOL: " in message
    assert "hunter2" not in message
    assert raised.value.__cause__ is None, "one readable error, not pydantic's beneath it"
