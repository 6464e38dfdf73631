"""A real service process started with a bad setting: exit 2, one JSON line naming the variable, no traceback.

It stops before connecting to anything, so no stack is needed: the processes are started as operators start them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-do-not-print"
START_TIMEOUT_S = 60.0  # the refusal itself comes after the imports, in about a second


@pytest.mark.parametrize(
    ("module", "variable", "value", "problem"),
    [
        ("gateway.start", "PROMOTER_GATEWAY_PORT", "abc", "Input should be a valid integer"),
        ("worker.app", "PROMOTER_WORKER_CONCURRENCY", "-1", "Input should be greater than or equal to 1"),
    ],
)
def test_a_service_with_a_bad_setting_exits_2_naming_the_variable(
    module: str, variable: str, value: str, problem: str
) -> None:
    env = {name: setting for name, setting in os.environ.items() if not name.upper().startswith("PROMOTER_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            variable: value,
            "PROMOTER_KAFKA_SASL_PASSWORD": SECRET,  # a valid secret: never printed
            "PROMOTER_TRITON_ADMIN_TOKEN": "  ",  # a bad secret: named, its value not repeated
        }
    )

    result = subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr
    assert result.stdout == ""
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert {line["event"] for line in lines} == {"invalid setting"}
    by_variable = {line["variable"]: line for line in lines}
    assert set(by_variable) == {variable, "PROMOTER_TRITON_ADMIN_TOKEN"}
    assert by_variable[variable]["problem"].startswith(problem)
    assert by_variable[variable]["value"] == value
    assert by_variable[variable]["level"] == "error"
    assert "value" not in by_variable["PROMOTER_TRITON_ADMIN_TOKEN"]
