"""A broker that refuses our credentials or TLS settings is told apart from one that is down, in words to act on."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from runtime import kafka_access
from runtime.kafka_access import KafkaAccessRefused, check_kafka_access
from runtime.settings import KafkaSettings

SASL = KafkaSettings(
    bootstrap_servers="kafka-a:9093,kafka-b:9093",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="promoter-ingress",
    sasl_password="s3cret-never-shown",
)


def _refused_by(monkeypatch: pytest.MonkeyPatch, *errors: BaseException) -> list[str]:
    """Make each connection attempt fail with the next of ``errors``; return the servers tried."""
    tried: list[str] = []
    pending = list(errors)

    async def create_conn(host: str, port: int, **kwargs: object) -> object:
        tried.append(f"{host}:{port}")
        raise pending.pop(0)

    monkeypatch.setattr(kafka_access, "create_conn", create_conn)
    return tried


async def test_refused_credentials_name_the_user_and_the_settings_not_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker_says = "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM"
    _refused_by(monkeypatch, SaslAuthenticationFailed(broker_says))
    with pytest.raises(KafkaAccessRefused) as refused:
        await check_kafka_access(SASL)
    message = str(refused.value)
    assert message.startswith(
        "Kafka at kafka-a:9093 (SASL_SSL) refused the credentials of SASL user 'promoter-ingress'"
    )
    assert broker_says in message
    assert "PROMOTER_KAFKA_SASL_PASSWORD" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("error", "names"),
    [
        (UnsupportedSaslMechanismError(), "PROMOTER_KAFKA_SASL_MECHANISM"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "PROMOTER_KAFKA_SSL_CAFILE"),
        (ssl.SSLError(1, "wrong version number"), "PROMOTER_KAFKA_SECURITY_PROTOCOL"),
    ],
)
async def test_mechanism_and_tls_refusals_say_what_to_check(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, names: str
) -> None:
    _refused_by(monkeypatch, error)
    with pytest.raises(KafkaAccessRefused, match=names):
        await check_kafka_access(SASL)


async def test_an_unreachable_server_is_not_a_refusal_and_the_next_one_is_tried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried = _refused_by(monkeypatch, ConnectionRefusedError(), KafkaConnectionError("down"))
    await check_kafka_access(SASL)  # the clients wait for a broker that is down
    assert tried == ["kafka-a:9093", "kafka-b:9093"]

    tried = _refused_by(monkeypatch, ConnectionRefusedError(), SaslAuthenticationFailed("no"))
    with pytest.raises(KafkaAccessRefused, match="kafka-b:9093"):
        await check_kafka_access(SASL)


async def test_a_server_that_never_answers_costs_at_most_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def create_conn(host: str, port: int, **kwargs: object) -> object:
        await asyncio.Event().wait()  # a black-holed address
        raise AssertionError("unreachable")

    monkeypatch.setattr(kafka_access, "create_conn", create_conn)
    started = time.monotonic()
    await check_kafka_access(SASL, timeout_s=0.2)
    assert time.monotonic() - started < 2


async def test_a_real_closed_port_passes_quickly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        await check_kafka_access(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"), timeout_s=5)
