"""``promoter-stack up`` (``make up``) end to end, as a user runs it: a separate stack in a subprocess.

Two runs: the whole system, whose printed example is run as printed, stopped with Ctrl-C; and the
stack alone, whose CLI is killed without warning. A dying service and a taken port are unit tests
(tests/unit/deploy/test_services.py): they need no real stack.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.stack.kafka_broker import client_env
from deploy.stack.local_stack import PIDS_FILE
from deploy.stack.probes import http_ok, tcp_accepts
from deploy.stack.process import group_members, poll_until
from deploy.stack.services import GATEWAY_NAMES
from deploy.stack.settings import StackSettings
from deploy.stack.try_it import FIRST_LINE

pytestmark = pytest.mark.integration

# The subprocess inherits this environment, so it runs the broker these tests expect.
BROKER = StackSettings().kafka_broker
ENV_NAMES = {
    "PROMOTER_KAFKA_BOOTSTRAP_SERVERS",
    *client_env(BROKER),
    "PROMOTER_MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_URI",
    "PROMOTER_TRITON_ENDPOINTS",
    "PROMOTER_GATEWAY_TRITON_GRPC_ENDPOINTS",
    "PROMOTER_TRITON_PROTOCOL",
    "PROMOTER_TOPIC_REPLICATION_FACTOR",
    "PROMOTER_TRITON_MODEL_REPOSITORY",
}
# Deadlines for a failure: the stack's own (mlflow 120 s, then the broker) plus room; a healthy start takes 5-25 s.
START_TIMEOUT_S = 200.0
WHOLE_SYSTEM_START_TIMEOUT_S = 260.0
STOP_TIMEOUT_S = 40.0
EXAMPLE_TIMEOUT_S = 180.0


def _command() -> list[str]:
    script = shutil.which("promoter-stack", path=str(Path(sys.prefix) / "bin"))
    return [script] if script else [sys.executable, "-m", "deploy.stack.cli"]


@dataclass
class CliRun:
    process: subprocess.Popen[bytes]
    run_dir: Path
    stdout: Path
    stderr: Path

    def out(self) -> str:
        return self.stdout.read_text()

    def err(self) -> str:
        return self.stderr.read_text()

    def exports(self) -> dict[str, str]:
        pairs = (line.removeprefix("export ").split("=", 1) for line in self.out().splitlines())
        return {name: value for name, value in pairs}

    def pgids(self) -> dict[str, int]:
        path = self.run_dir / PIDS_FILE
        if not path.exists():
            return {}
        return {name: entry["pgid"] for name, entry in json.loads(path.read_text()).items()}

    def leftovers(self) -> dict[str, list[int]]:
        return {name: pids for name, pgid in self.pgids().items() if (pids := group_members(pgid))}

    def example(self) -> str:
        """The copy-paste example, as printed (between its first line and the Ctrl-C hint)."""
        err = self.err()
        return err[err.index(FIRST_LINE) : err.index("promoter-stack: press Ctrl-C")]

    def url_of(self, name: str) -> str:
        """The URL printed on ``name``'s line of the ready message."""
        lines = (line.removeprefix("promoter-stack:").strip() for line in self.err().splitlines())
        line = next(line for line in lines if line.startswith(f"{name} "))
        return next(word for word in line.split() if word.startswith("http://"))


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[list[CliRun]]:
    """Starts ``promoter-stack up`` runs; whatever the test did, nothing of them outlives it."""
    runs: list[CliRun] = []
    yield runs
    for run in runs:
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
            try:
                run.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
        for pgid in run.pgids().values():
            if group_members(pgid):
                os.killpg(pgid, signal.SIGKILL)


def _start(runs: list[CliRun], run_dir: Path, *extra: str) -> CliRun:
    run_dir.mkdir(parents=True, exist_ok=True)
    stdout, stderr = run_dir.parent / f"{run_dir.name}.out", run_dir.parent / f"{run_dir.name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*_command(), "up", "--run-dir", str(run_dir), *extra],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    run = CliRun(process, run_dir, stdout, stderr)
    runs.append(run)
    return run


def _wait_ready(run: CliRun, timeout_s: float = START_TIMEOUT_S) -> None:
    def printed_or_exited() -> bool:
        return "press Ctrl-C to stop" in run.err() or run.process.poll() is not None

    assert poll_until(printed_or_exited, timeout_s), f"not ready within {timeout_s} s: {run.err()}"
    assert run.process.poll() is None, f"exited {run.process.returncode}: {run.err()}"


def _run_example(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Paste the example into bash, in a shell whose ``python`` is this venv's."""
    env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail"],
        input=script,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=EXAMPLE_TIMEOUT_S,
        check=False,
    )


def test_up_runs_the_whole_system_its_example_serves_a_model_and_ctrl_c_stops_everything(
    cli: list[CliRun], tmp_path: Path
) -> None:
    run = _start(cli, tmp_path / "run")
    _wait_ready(run, WHOLE_SYSTEM_START_TIMEOUT_S)

    env = run.exports()
    assert env.keys() == ENV_NAMES
    kafka_host, kafka_port = env["PROMOTER_KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert kafka_host == "127.0.0.1"
    assert tcp_accepts(kafka_host, int(kafka_port))
    assert env["MLFLOW_TRACKING_URI"] == env["PROMOTER_MLFLOW_TRACKING_URI"]
    assert env["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert http_ok(f"{env['MLFLOW_TRACKING_URI']}/health")
    assert http_ok(f"http://{env['PROMOTER_TRITON_ENDPOINTS']}/v2/health/ready")
    assert Path(env["PROMOTER_TRITON_MODEL_REPOSITORY"]).is_dir()
    assert env["PROMOTER_KAFKA_ENABLE_IDEMPOTENCE"] == ("true" if BROKER == "kafka" else "false")
    assert "model-promoter ready in" in run.err()
    assert "ENCRYPTION_KEY" not in run.out() + run.err()
    assert "WEBHOOK_SECRETS" not in run.out() + run.err()
    for name in GATEWAY_NAMES:
        assert http_ok(f"{run.url_of(name)}/ready"), name
    assert http_ok(f"{run.url_of('worker')}/ready")
    services = (BROKER, "mlflow", "tritonserver", "worker", "ingress", *GATEWAY_NAMES)
    for service in services:
        assert (run.run_dir / "logs" / f"{service}.log").stat().st_size > 0, service

    pgids = run.pgids()
    assert pgids.keys() == set(services)
    assert all(group_members(pgid) for pgid in pgids.values())
    assert len(group_members(pgids["mlflow"])) >= 2, "mlflow server runs its workers in its group"

    # The example as printed: MLflow alias -> webhook -> ingress -> worker -> Triton -> both gateways.
    pasted = _run_example(run.example(), tmp_path)
    assert pasted.returncode == 0, f"{pasted.stdout}\n{pasted.stderr}\n{run.err()}"
    answers = pasted.stdout.splitlines()
    assert "registered version 1 as champion" in answers
    predicted = json.loads(next(line for line in answers if line.startswith("{")))
    assert (predicted["model_version"], predicted["alias"], predicted["predictions"]) == (1, "champion", [0])
    assert any(re.fullmatch(r"tritonclient: \[+2\]+ from version 1", line) for line in answers), pasted.stdout

    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=STOP_TIMEOUT_S) == 0, run.err()
    assert run.leftovers() == {}
    assert "stopped" in run.err()


def test_the_stack_alone_follows_a_cli_killed_without_warning(cli: list[CliRun], tmp_path: Path) -> None:
    run = _start(cli, tmp_path / "run", "--stack-only")
    _wait_ready(run)
    assert run.exports().keys() == ENV_NAMES
    assert "stack ready in" in run.err()
    assert FIRST_LINE not in run.err(), "no example without our services"
    pgids = run.pgids()
    assert pgids.keys() == {BROKER, "mlflow", "tritonserver"}
    assert all(group_members(pgid) for pgid in pgids.values())

    run.process.kill()  # SIGKILL: no teardown code runs in the CLI
    run.process.wait(timeout=STOP_TIMEOUT_S)

    # Each service was started with PR_SET_PDEATHSIG=SIGTERM, so it stops with its parent.
    assert poll_until(lambda: run.leftovers() == {}, STOP_TIMEOUT_S), run.leftovers()
