"""``promoter-stack up`` end to end, as a user runs it: a separate stack in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.stack.kafka_broker import client_env
from deploy.stack.local_stack import PIDS_FILE
from deploy.stack.ports import free_ports
from deploy.stack.probes import http_ok, tcp_accepts
from deploy.stack.process import group_members, poll_until
from deploy.stack.settings import StackSettings

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
    "PROMOTER_TRITON_MODEL_REPOSITORY",
}
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 40.0


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


def _wait_ready(run: CliRun) -> None:
    def printed_or_exited() -> bool:
        return run.exports().keys() >= ENV_NAMES or run.process.poll() is not None

    assert poll_until(printed_or_exited, START_TIMEOUT_S), f"no env within {START_TIMEOUT_S} s: {run.err()}"
    assert run.process.poll() is None, f"exited {run.process.returncode}: {run.err()}"


def test_up_serves_prints_env_and_stops_everything_on_sigint(cli: list[CliRun], tmp_path: Path) -> None:
    run = _start(cli, tmp_path / "run")
    _wait_ready(run)

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
    assert "stack ready in" in run.err()
    assert "ENCRYPTION_KEY" not in run.out() + run.err()
    for service in (BROKER, "mlflow", "tritonserver"):
        assert (run.run_dir / "logs" / f"{service}.log").stat().st_size > 0

    pgids = run.pgids()
    assert pgids.keys() == {BROKER, "mlflow", "tritonserver"}
    assert all(group_members(pgid) for pgid in pgids.values())
    assert len(group_members(pgids["mlflow"])) >= 2, "mlflow server runs its workers in its group"

    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=STOP_TIMEOUT_S) == 0, run.err()
    assert run.leftovers() == {}
    assert "stopped" in run.err()


def test_up_exits_nonzero_when_a_service_dies(cli: list[CliRun], tmp_path: Path) -> None:
    run = _start(cli, tmp_path / "run")
    _wait_ready(run)
    broker = run.pgids()[BROKER]

    os.killpg(broker, signal.SIGKILL)

    assert run.process.wait(timeout=STOP_TIMEOUT_S) == 1
    assert f"error: {BROKER} exited" in run.err()
    last_line = {"kafka": "Kafka Server started", "tansu": "ready in"}[BROKER]
    assert last_line in run.err(), "the dead service's last log lines are shown"
    assert "Traceback" not in run.err()
    assert run.leftovers() == {}


def test_up_fails_fast_when_a_requested_port_is_taken(cli: list[CliRun], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_ports(1)[0]))
        taken.listen()
        port = taken.getsockname()[1]
        run = _start(cli, tmp_path / "run", "--kafka-port", str(port))
        assert run.process.wait(timeout=30) == 1
    assert f"port {port} taken" in run.err()
    assert "Traceback" not in run.err()
    assert run.pgids() == {}, "nothing was started"


def test_services_follow_a_cli_killed_without_warning(cli: list[CliRun], tmp_path: Path) -> None:
    run = _start(cli, tmp_path / "run")
    _wait_ready(run)
    pgids = run.pgids()
    assert all(group_members(pgid) for pgid in pgids.values())

    run.process.kill()  # SIGKILL: no teardown code runs in the CLI
    run.process.wait(timeout=STOP_TIMEOUT_S)

    # Each service was started with PR_SET_PDEATHSIG=SIGTERM, so it stops with its parent.
    assert poll_until(lambda: run.leftovers() == {}, STOP_TIMEOUT_S), run.leftovers()
