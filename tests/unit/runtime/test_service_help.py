"""``promoter-worker|gateway|ingress --help``: what it is, every variable it reads; exit 0, no connection."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence

import pytest
from pydantic_settings import BaseSettings

from gateway import start as gateway_start
from gateway.settings import GatewaySettings
from ingress import app as ingress_app
from ingress.settings import IngressSettings
from runtime.service_help import settings_help
from runtime.settings import KafkaSettings, LogSettings, MLflowSettings, TopicSettings, TritonSettings
from runtime.settings_env import documented_name
from tests.unit.runtime.test_settings_documented import _all_settings_classes
from worker import app as worker_app
from worker.settings import WorkerSettings

Main = Callable[[Sequence[str] | None], None]
SERVICES: dict[str, tuple[Main, str, list[type[BaseSettings]]]] = {
    "promoter-worker": (
        worker_app.main,
        "promotion worker",
        [KafkaSettings, TopicSettings, MLflowSettings, TritonSettings, WorkerSettings, LogSettings],
    ),
    "promoter-gateway": (
        gateway_start.main,
        "gateway replica",
        [KafkaSettings, TopicSettings, TritonSettings, GatewaySettings, LogSettings],
    ),
    "promoter-ingress": (
        ingress_app.main,
        "webhook ingress",
        [IngressSettings, KafkaSettings, TopicSettings, LogSettings],
    ),
}
READ_BY_NO_SERVICE = {"PROMOTER_WORKER_", "PROMOTER_MLFLOW_", "PROMOTER_TRITON_", "PROMOTER_GATEWAY_"}


def _env_names(cls: type[BaseSettings]) -> list[str]:
    return [documented_name(cls, name) for name in cls.model_fields]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("--help tried to connect")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("prog", sorted(SERVICES))
def test_help_says_what_the_service_is_and_lists_every_variable_it_reads(
    prog: str, no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    main, what, classes = SERVICES[prog]
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog} [-h]")
    assert what in out
    shown = {line.split()[0] for line in out.splitlines() if line.startswith("  PROMOTER_")}
    assert shown == {name for cls in classes for name in _env_names(cls)}
    assert "  PROMOTER_KAFKA_BOOTSTRAP_SERVERS  (default: localhost:9092)\n      Comma-separated host:port list." in out
    assert "  PROMOTER_LOG_LEVEL  (default: INFO; one of DEBUG, INFO, WARNING, ERROR)" in out


@pytest.mark.parametrize("prog", sorted(SERVICES))
def test_an_unknown_argument_is_refused_naming_it(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    main = SERVICES[prog][0]
    with pytest.raises(SystemExit) as exited:
        main(["--port", "9000"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --port 9000" in capsys.readouterr().err


def test_defaults_are_shown_as_the_settings_compute_them_and_secrets_never(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_KAFKA_SASL_PASSWORD", "hunter2")  # the environment is not what --help shows
    monkeypatch.setenv("PROMOTER_KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092")
    text = settings_help([KafkaSettings, TritonSettings, IngressSettings, WorkerSettings])
    assert "hunter2" not in text
    assert "elsewhere" not in text
    assert "  PROMOTER_TRITON_ENDPOINTS  (default: localhost:8000)" in text
    assert "  PROMOTER_KAFKA_CREATE_TOPICS  (default: true)" in text
    assert "  PROMOTER_WORKER_REQUIRED_VERSION_TAG  (default: unset)" in text
    assert "  PROMOTER_TRITON_ADMIN_TOKEN  (default: unset)" in text


def test_every_setting_has_a_description_for_the_help() -> None:
    undescribed = sorted(
        f"{cls.__name__}.{name}"
        for cls in _all_settings_classes()
        for name, field in cls.model_fields.items()
        if not field.description
    )
    assert not undescribed, f"give these a Field(description=...): {undescribed}"


def test_the_console_script_reads_its_arguments_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["promoter-ingress", "--help"])  # the installed script calls main()
    with pytest.raises(SystemExit) as exited:
        ingress_app.main()
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: promoter-ingress [-h]")
