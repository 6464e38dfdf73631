from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from runtime.settings import KafkaSettings, TopicSettings, TritonSettings
from schemas.topics import ALL_TOPICS


def test_triton_endpoints_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_TRITON_ENDPOINTS", "10.0.0.1:8000, 10.0.0.2:8000")
    monkeypatch.setenv("PROMOTER_TRITON_PROTOCOL", "grpc")

    triton = TritonSettings()

    assert triton.endpoints == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert triton.protocol == "grpc"


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_TRITON_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ValidationError, match="protocol"):
        TritonSettings()
    monkeypatch.setenv("PROMOTER_TRITON_PROTOCOL", "http")
    monkeypatch.setenv("PROMOTER_TRITON_ENDPOINTS", " , ")
    with pytest.raises(ValidationError, match="at least one Triton endpoint"):
        TritonSettings()


def test_local_broker_tuning_reaches_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    monkeypatch.setenv("PROMOTER_KAFKA_ENABLE_IDEMPOTENCE", "false")
    monkeypatch.setenv("PROMOTER_KAFKA_FETCH_MAX_WAIT_MS", "20")

    kafka = KafkaSettings()

    assert kafka.producer_kwargs()["enable_idempotence"] is False
    assert kafka.producer_kwargs()["bootstrap_servers"] == "127.0.0.1:19092"
    assert kafka.consumer_kwargs()["fetch_max_wait_ms"] == 20
    assert kafka.consumer_kwargs()["enable_auto_commit"] is False


def test_sasl_ssl_settings_build_a_tls_context_and_hide_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PROMOTER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PROMOTER_KAFKA_SASL_USERNAME", "promoter")
    monkeypatch.setenv("PROMOTER_KAFKA_SASL_PASSWORD", "hunter2")

    kafka = KafkaSettings()
    kwargs = kafka.common_kwargs()

    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "hunter2"
    assert "hunter2" not in repr(kafka)
    assert "hunter2" not in str(kafka.model_dump())


def test_topic_names_are_configurable_and_keep_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_TOPIC_MODEL_READY", "prod.model.ready")

    specs = {spec.purpose: spec for spec in TopicSettings().specs()}

    assert len(specs) == len(ALL_TOPICS)
    for default in ALL_TOPICS:
        spec = specs[default.purpose]
        assert (spec.partitions, spec.compacted, spec.key) == (
            default.partitions,
            default.compacted,
            default.key,
        )
        assert spec.name == ("prod.model.ready" if default.name == "model.ready" else default.name)


def test_model_repository_is_a_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMOTER_TRITON_MODEL_REPOSITORY", str(tmp_path))
    assert TritonSettings().model_repository == tmp_path


def test_triton_admin_token_is_read_from_the_environment_and_kept_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TritonSettings().admin_token is None  # default: no header sent
    monkeypatch.setenv("PROMOTER_TRITON_ADMIN_TOKEN", "tok-5ecret")
    monkeypatch.setenv("PROMOTER_TRITON_ADMIN_HEADER", "x-ops-admin")

    triton = TritonSettings()

    assert triton.admin_header == "x-ops-admin"
    assert triton.admin_token is not None
    assert triton.admin_token.get_secret_value() == "tok-5ecret"
    assert "tok-5ecret" not in repr(triton)
    monkeypatch.setenv("PROMOTER_TRITON_ADMIN_HEADER", "X Admin")
    with pytest.raises(ValidationError, match="admin_header") as raised:
        TritonSettings()
    assert "tok-5ecret" not in str(raised.value)
