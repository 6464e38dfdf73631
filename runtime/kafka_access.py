"""Tell at start-up whether Kafka refuses this service's credentials or TLS settings, before any client retries.

aiokafka's clients fold every bootstrap failure into ``KafkaConnectionError("Unable to bootstrap ...")`` and
retry: a wrong password or an untrusted certificate looks like a broker that is down, and a service would wait
for it forever. :func:`check_kafka_access` opens one connection per bootstrap server the way the clients do
(TLS, then the SASL handshake) and raises :class:`KafkaAccessRefused` naming the settings to fix when the
broker answered and said no. A broker that cannot be reached is not an error here: the clients retry that.
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from runtime.logging import get_logger
from runtime.settings import KafkaSettings

log = get_logger(__name__)

CHECK_TIMEOUT_S = 10.0

_CREDENTIALS_REFUSED = (AuthenticationFailedError, SaslAuthenticationFailed)
_MECHANISM_REFUSED = (UnsupportedSaslMechanismError, AuthenticationMethodNotSupported, IllegalSaslStateError)


class KafkaAccessRefused(Exception):
    """Kafka answered and refused this client: retrying cannot help, a setting must change."""


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]"), int(port)


def _refusal(kafka: KafkaSettings, server: str, error: BaseException) -> KafkaAccessRefused | None:
    """The refusal ``error`` means, worded for the person who sets the variables; None for a transient error."""
    where = f"Kafka at {server} ({kafka.security_protocol})"
    if isinstance(error, _CREDENTIALS_REFUSED):
        return KafkaAccessRefused(
            f"{where} refused the credentials of SASL user {kafka.sasl_username!r} "
            f"({kafka.sasl_mechanism or 'PLAIN'}): {_reason(error)}; "
            "check PROMOTER_KAFKA_SASL_USERNAME and PROMOTER_KAFKA_SASL_PASSWORD"
        )
    if isinstance(error, _MECHANISM_REFUSED):
        return KafkaAccessRefused(
            f"{where} does not accept SASL mechanism {kafka.sasl_mechanism or 'PLAIN'} ({type(error).__name__}); "
            "check PROMOTER_KAFKA_SASL_MECHANISM and PROMOTER_KAFKA_SECURITY_PROTOCOL"
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        return KafkaAccessRefused(
            f"{where}: its TLS certificate was not accepted: {getattr(error, 'verify_message', None) or error}; "
            "check PROMOTER_KAFKA_SSL_CAFILE (the CA that signed the broker's certificate) and that "
            "PROMOTER_KAFKA_BOOTSTRAP_SERVERS uses a host name the certificate names"
        )
    if isinstance(error, ssl.SSLError):
        return KafkaAccessRefused(
            f"{where}: the TLS handshake failed ({getattr(error, 'reason', None) or error}); "
            "check PROMOTER_KAFKA_SECURITY_PROTOCOL against the broker's listener"
        )
    return None


def _reason(error: BaseException) -> str:
    """The broker's own words (aiokafka prefixes them with ``[Error N] Name:``)."""
    message = str(error)
    return message.split(": ", 1)[1] if message.startswith("[Error ") and ": " in message else message


async def _accepted(kafka: KafkaSettings, server: str) -> bool:
    """True when ``server`` accepted a connection; False when it could not be reached; raise when it refused us."""
    host, port = _host_port(server)
    kwargs = kafka.common_kwargs()
    del kwargs["bootstrap_servers"]
    try:
        connection = await create_conn(host, port, **kwargs)
    except (TimeoutError, OSError, KafkaError) as error:
        refusal = _refusal(kafka, server, error)
        if refusal is not None:
            raise refusal from None
        return False
    connection.close()
    return True


async def check_kafka_access(kafka: KafkaSettings, *, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Raise :class:`KafkaAccessRefused` when a bootstrap server refuses our TLS or SASL settings.

    Returns quietly once a server accepted us, or when none could be reached within ``timeout_s``
    (an unreachable broker is the clients' to wait for). Tries the servers in order, one connection each.
    """
    servers = kafka.bootstrap_list()
    try:
        async with asyncio.timeout(timeout_s):
            for server in servers:
                if await _accepted(kafka, server):
                    return
    except TimeoutError:
        return


async def require_kafka_access(kafka: KafkaSettings) -> None:
    """:func:`check_kafka_access` for a service's start-up: log the refusal as one error line, then raise it."""
    try:
        await check_kafka_access(kafka)
    except KafkaAccessRefused as refusal:
        # One line for people; the traceback is uvicorn's to print as the start-up fails.
        log.error("Kafka refused this service: not starting", reason=str(refusal))  # noqa: TRY400
        raise
