"""``promoter console``: it runs Streamlit on console/app.py with the console's settings, replay only when asked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promoter_cli.main import app


def _started(monkeypatch: pytest.MonkeyPatch, *args: str, **env: str) -> tuple[list[str], dict[str, str]]:
    started: list[tuple[list[str], dict[str, str]]] = []

    def execvpe(_file: str, argv: list[str], environment: dict[str, str]) -> None:
        started.append((argv, environment))

    monkeypatch.setattr(os, "execvpe", execvpe)
    result = CliRunner().invoke(app, ["console", *args], env=env)
    assert result.exit_code == 0, result.output
    (call,) = started
    return call


def test_console_runs_streamlit_on_the_app_with_replay_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    argv, env = _started(monkeypatch, PROMOTER_CONSOLE_PORT="8600", PROMOTER_CONSOLE_ALLOW_REPLAY="true")
    assert argv[1:4] == ["-m", "streamlit", "run"]
    assert Path(argv[4]).name == "app.py"
    assert Path(argv[4]).parent.name == "console"
    assert argv[argv.index("--server.port") + 1] == "8600"
    assert argv[argv.index("--client.toolbarMode") + 1] == "viewer"
    assert env["PROMOTER_CONSOLE_ALLOW_REPLAY"] == "false", "only --allow-replay turns replay on"


def test_allow_replay_reaches_the_console(monkeypatch: pytest.MonkeyPatch) -> None:
    _, env = _started(monkeypatch, "--allow-replay")
    assert env["PROMOTER_CONSOLE_ALLOW_REPLAY"] == "true"


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("PROMOTER_CONSOLE_PORT", "http", "Input should be a valid integer"),
        ("PROMOTER_KAFKA_SECURITY_PROTOCOL", "TLS", "Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or"),
    ],
)
def test_a_bad_setting_is_named_by_its_variable_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    started: list[str] = []
    monkeypatch.setattr(os, "execvpe", lambda file, *_: started.append(file))

    result = CliRunner().invoke(app, ["console"], env={variable: value})

    assert result.exit_code == 3
    assert result.output.startswith(f"{variable}: {problem}")
    assert f"(given {value!r})" in result.output
    assert started == []
