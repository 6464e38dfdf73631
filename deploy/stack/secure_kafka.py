"""Apache Kafka secured as the Kubernetes config uses it: SASL_SSL with SCRAM-SHA-512, ACLs per service.

One KRaft node (``apache_kafka.py``) with:

- a ``SASL_SSL`` client listener serving a certificate from a throw-away CA (``throwaway_ca.py``);
- SCRAM-SHA-512 users written into the metadata at format time (``StorageTool format --add-scram``): one per
  service of ``deploy/kafka_resources.py`` plus an admin, the only super user;
- ``StandardAuthorizer``, where no ACL means no access; the admin creates each service's ACLs from the very
  dictionaries the Strimzi ``KafkaUser`` manifests are rendered from (``tests/secure_kafka_harness.py``), so
  the test broker and the cluster cannot disagree about who may do what;
- the controller listener on SASL_PLAINTEXT/PLAIN for the admin only (KRaft cannot use SCRAM there).

Used by ``tests/integration/deploy/test_kafka_security.py`` only; the session stack stays on PLAINTEXT.
Readiness and the ACLs go through ``confluent-kafka`` (the ``dev`` extra; aiokafka's admin client has no
ACL calls), so the caller passes the readiness check in.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from deploy.kafka_resources import SERVICES
from deploy.stack.apache_kafka import apache_kafka_spec
from deploy.stack.ports import LOOPBACK, free_ports
from deploy.stack.process import ManagedProcess, ServiceSpec
from deploy.stack.throwaway_ca import TlsFiles, make_test_ca
from runtime.settings import KafkaSettings

NAME = "kafka-secure"
MECHANISM = "SCRAM-SHA-512"
ADMIN_USER = "promoter-admin"
#: One SCRAM user per Strimzi KafkaUser.
SERVICE_USERS = tuple(service.user for service in SERVICES)


@dataclass(frozen=True)
class SecureKafka:
    """Where the secured broker listens, the CA its clients trust, and every user's password."""

    bootstrap_servers: str
    tls: TlsFiles
    passwords: dict[str, SecretStr]

    def client_env(self, user: str, password: str | None = None) -> dict[str, str]:
        """``PROMOTER_KAFKA_*`` of a service connecting as ``user`` (``password`` replaces the right one)."""
        return {
            "PROMOTER_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "PROMOTER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PROMOTER_KAFKA_SASL_MECHANISM": MECHANISM,
            "PROMOTER_KAFKA_SASL_USERNAME": user,
            "PROMOTER_KAFKA_SASL_PASSWORD": password or self.passwords[user].get_secret_value(),
            "PROMOTER_KAFKA_SSL_CAFILE": str(self.tls.ca_cert),
        }

    def client_settings(self, user: str, **overrides: Any) -> KafkaSettings:
        """:class:`KafkaSettings` of a client connecting as ``user``."""
        fields = {name.removeprefix("PROMOTER_KAFKA_").lower(): value for name, value in self.client_env(user).items()}
        return KafkaSettings.model_validate({**fields, **overrides})

    def librdkafka_config(self, user: str = ADMIN_USER) -> dict[str, str | int | float | bool]:
        """The same connection for ``confluent-kafka`` (librdkafka checks the host name by default)."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": MECHANISM,
            "sasl.username": user,
            "sasl.password": self.passwords[user].get_secret_value(),
            "ssl.ca.location": str(self.tls.ca_cert),
            "log_level": 0,  # the readiness probe's refused connections are not news
        }


def _jaas(module: str, user: str, password: str, **extra: str) -> str:
    options = " ".join(f'{key}="{value}"' for key, value in {"username": user, "password": password, **extra}.items())
    return f"org.apache.kafka.common.security.{module} required {options};"


def secure_properties(port: int, controller_port: int, tls: TlsFiles, admin_password: str) -> dict[str, str]:
    """What :func:`apache_kafka.broker_properties` changes for a SASL_SSL listener with ACLs."""
    return {
        "listeners": f"SASL_SSL://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{LOOPBACK}:{port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": _jaas(
            "scram.ScramLoginModule", ADMIN_USER, admin_password
        ),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas(
            "plain.PlainLoginModule", ADMIN_USER, admin_password, **{f"user_{ADMIN_USER}": admin_password}
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.server_pem),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca_cert),
        "ssl.endpoint.identification.algorithm": "https",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN_USER}",
    }


def secure_kafka_spec(
    run_dir: Path,
    answers: Callable[[SecureKafka], bool],
    users: Iterable[str] = SERVICE_USERS,
) -> tuple[ServiceSpec, SecureKafka]:
    """A secured broker on a free loopback port, with a new CA, and a random password for each of ``users``.

    ``answers(kafka)``: one quick attempt at an authenticated metadata request (the readiness check).
    """
    port, controller_port = free_ports(2)
    tls = make_test_ca(run_dir / "tls")
    passwords = {user: SecretStr(secrets.token_hex(16)) for user in (ADMIN_USER, *users)}
    kafka = SecureKafka(f"{LOOPBACK}:{port}", tls, passwords)
    admin_password = passwords[ADMIN_USER].get_secret_value()
    scram = [
        f"--add-scram={MECHANISM}=[name={user},password={password.get_secret_value()}]"
        for user, password in passwords.items()
    ]

    def ready(process: ManagedProcess) -> bool:
        return answers(kafka)

    spec = apache_kafka_spec(
        port,
        run_dir,
        controller_port=controller_port,
        extra_properties=secure_properties(port, controller_port, tls, admin_password),
        format_args=scram,
        ready=ready,
        name=NAME,
    )
    return spec, kafka
