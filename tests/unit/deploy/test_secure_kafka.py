"""The secured test broker: its listener settings, and ACLs made from what the Strimzi users allow."""

from __future__ import annotations

import stat
from pathlib import Path

# confluent_kafka.admin re-exports these without listing them in __all__.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from deploy import kafka_resources
from deploy.stack.apache_kafka import FORMAT_ARGS_FILE
from deploy.stack.secure_kafka import ADMIN_USER, MECHANISM, secure_kafka_spec, secure_properties
from deploy.stack.throwaway_ca import TlsFiles
from schemas import topics
from tests.secure_kafka_harness import service_acl_bindings


def test_acl_bindings_are_the_strimzi_acls_of_the_service() -> None:
    (gateway,) = [s for s in kafka_resources.SERVICES if s.user == "promoter-gateway"]
    bindings = service_acl_bindings(gateway)
    assert {(b.name, b.operation) for b in bindings} == {
        (topics.MODEL_READY.name, AclOperation.DESCRIBE),
        (topics.MODEL_READY.name, AclOperation.READ),
        (topics.ROUTING_UPDATED.name, AclOperation.DESCRIBE),
        (topics.ROUTING_UPDATED.name, AclOperation.READ),
        (topics.GATEWAY_STATUS.name, AclOperation.DESCRIBE),
        (topics.GATEWAY_STATUS.name, AclOperation.WRITE),
    }
    assert {(b.principal, b.host, b.permission_type, b.resource_pattern_type, b.restype) for b in bindings} == {
        ("User:promoter-gateway", "*", AclPermissionType.ALLOW, ResourcePatternType.LITERAL, ResourceType.TOPIC)
    }
    for service in kafka_resources.SERVICES:
        strimzi = sum(len(acl["operations"]) for acl in service.acls())
        assert len(service_acl_bindings(service)) == strimzi


def test_the_listener_is_sasl_ssl_with_scram_and_only_the_admin_is_super(tmp_path: Path) -> None:
    tls = TlsFiles(ca_cert=tmp_path / "ca.crt", server_pem=tmp_path / "server.pem")
    properties = secure_properties(19092, 19093, tls, "admin-password")
    assert properties["listeners"] == "SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert properties["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["super.users"] == f"User:{ADMIN_USER}"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["authorizer.class.name"].endswith("StandardAuthorizer")
    assert "PLAINTEXT:" not in properties["listener.security.protocol.map"], "no unauthenticated listener"


def test_the_scram_passwords_go_to_the_format_step_in_a_private_file_never_on_a_command_line(tmp_path: Path) -> None:
    spec, kafka = secure_kafka_spec(tmp_path, lambda kafka: False)
    passwords = {user: password.get_secret_value() for user, password in kafka.passwords.items()}

    command = " ".join(spec.argv)
    assert not [user for user, password in passwords.items() if password in command]
    args_file = spec.cwd / FORMAT_ARGS_FILE
    assert f"@{args_file}" in command, "the format step reads its arguments from the file"
    assert f"rm -f {args_file}" in command, "and the file is removed after it"
    assert stat.S_IMODE(args_file.stat().st_mode) == 0o600
    lines = args_file.read_text().splitlines()
    assert lines[:2] == ['"kafka.tools.StorageTool"', '"format"'], "the main class first: Java expands it from the file"
    for user, password in passwords.items():
        assert f'"--add-scram={MECHANISM}=[name={user},password={password}]"' in lines
