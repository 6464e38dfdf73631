"""``promoter --help`` and the command modules load no heavy client: each command imports its own when it runs.

Guarded by what is imported, not by a timing (the figures are in tests/benchmarks/oncall.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.paths import REPO

CLIENTS = ("mlflow", "aiokafka", "faststream", "pandas", "sklearn", "fastapi", "streamlit")
LOGGING = ("pydantic_settings", "structlog")  # a subcommand's logging is configured before it parses --help

PROBE = """
import json, sys
from promoter_cli.main import app
try:
    app(sys.argv[1:], prog_name="promoter")
except SystemExit:
    pass
print(json.dumps(sorted(name for name in {watched} if name in sys.modules)))
"""


def heavy_modules_loaded(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(watched=CLIENTS + LOGGING), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "100"},
        timeout=60,
        check=True,
    )
    *_, last = result.stdout.strip().splitlines()
    loaded: list[str] = json.loads(last)
    return loaded


def test_help_loads_no_client_library() -> None:
    assert heavy_modules_loaded("--help") == []
    for command in (
        ["dlq", "--help"],
        ["dlq", "list", "--help"],
        ["route", "--help"],
        ["webhook", "register", "--help"],
        ["console", "--help"],
    ):
        assert set(heavy_modules_loaded(*command)) <= set(LOGGING), command


def test_the_probe_sees_a_command_that_loads_its_clients() -> None:
    # `route` with nothing to change stops after importing its clients: the probe would see a leak.
    assert {"aiokafka", "pydantic_settings"} <= set(heavy_modules_loaded("route", "iris"))
