"""The promoter command explains bad input and an unreachable Kafka (no broker needed)."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from promoter_cli.errors import EXIT_INVALID, EXIT_UNREACHABLE
from promoter_cli.main import app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_an_invalid_model_name_names_the_field() -> None:
    code, output = run("promote", "team/model")

    assert code == EXIT_INVALID
    assert "model_name: registered model name 'team/model' must not contain '/' or ':'" in output


def test_bad_weights_are_explained() -> None:
    code, output = run("route", "iris", "--weights", "champion=90,challenger=20")
    assert code == EXIT_INVALID
    assert "must sum to 100, got 110" in output

    code, output = run("route", "iris", "--weights", "champion")
    assert code == 2
    assert "must look like alias=percent" in output


def test_unreachable_kafka_says_what_to_check() -> None:
    env = {"PROMOTER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}"}

    code, output = run("promote", "iris", "--version", "1", env=env)

    assert code == EXIT_UNREACHABLE
    assert "cannot reach Kafka at 127.0.0.1:" in output
    assert "check PROMOTER_KAFKA_BOOTSTRAP_SERVERS" in output


@pytest.mark.parametrize("command", [["status"], ["dlq", "list"]])
def test_on_call_commands_say_kafka_is_unreachable_without_library_noise(command: list[str]) -> None:
    env = {"PROMOTER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}"}

    code, output = run(*command, env=env)

    assert code == EXIT_UNREACHABLE
    assert "check PROMOTER_KAFKA_BOOTSTRAP_SERVERS" in " ".join(output.split())  # rich wraps long lines


def test_every_command_documents_an_example() -> None:
    for command in (
        ["promote"],
        ["unserve"],
        ["route"],
        ["status"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "replay"],
    ):
        code, output = run(*command, "--help")
        assert code == 0
        assert "Example:" in output, command
