"""Build a FastStream ``KafkaBroker`` from :class:`KafkaSettings` (security, idempotence, timeouts)."""

from __future__ import annotations

import logging
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from runtime.logging import through_root
from runtime.settings import KafkaSettings


def broker_security(kafka: KafkaSettings) -> BaseSecurity | None:
    """FastStream's security object for the configured protocol (None for PLAINTEXT)."""
    kwargs = kafka.common_kwargs()
    ssl_context = kwargs.get("ssl_context")
    if kafka.security_protocol == "SSL":
        return BaseSecurity(ssl_context=ssl_context, use_ssl=True)
    if not kafka.security_protocol.startswith("SASL_"):
        return None
    username = kafka.sasl_username or ""
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    use_ssl = kafka.security_protocol == "SASL_SSL"
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    return sasl[kafka.sasl_mechanism or "PLAIN"](username, password, ssl_context=ssl_context, use_ssl=use_ssl)


def faststream_logger(name: str) -> logging.Logger:
    """A logger for FastStream's ``logger=`` (broker, app) whose lines are the service's JSON lines.

    FastStream's import gives the ``faststream`` logger, parent of ``name``, a plain-text stderr handler and
    stops it propagating ("FastStream app starting..." as a bare line in a JSON log): taken back here too, as
    this runs after that import whenever :func:`runtime.logging.configure_logging` ran before it.
    """
    through_root("faststream")
    return through_root(name)


def kafka_broker(kafka: KafkaSettings, *, description: str, **extra: Any) -> KafkaBroker:
    """A broker whose producer waits for all in-sync replicas (``acks=all``)."""
    return KafkaBroker(
        kafka.bootstrap_list(),
        client_id=kafka.client_id,
        request_timeout_ms=kafka.request_timeout_ms,
        enable_idempotence=kafka.enable_idempotence,
        acks="all",
        linger_ms=kafka.linger_ms,
        security=broker_security(kafka),
        description=description,
        logger=faststream_logger("faststream.broker"),
        **extra,
    )
