"""The real local stack: a Kafka broker, ``mlflow server`` and ``tritonserver`` on 127.0.0.1, started together.

The broker is Apache Kafka unless ``PROMOTER_STACK_KAFKA_BROKER=tansu`` (see :mod:`deploy.stack.kafka_broker`),
one node unless ``PROMOTER_STACK_KAFKA_NODES`` asks for a cluster (nodes ``kafka-1``, ``kafka-2``, ...).

Used by ``promoter-stack up``, by the test session (fixture ``local_stack``) and by the demo::

    with LocalStack(run_dir) as stack:
        os.environ.update(stack.client_env())
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from deploy.stack import apache_kafka, kafka_broker
from deploy.stack.errors import StackError
from deploy.stack.mlflow_server import mlflow_spec, new_fernet_key, tracking_uri
from deploy.stack.ports import LOOPBACK, StackPorts, free_ports
from deploy.stack.process import ManagedProcess, ServiceSpec, poll_until, stop_all, wait_all_ready
from deploy.stack.service_handle import ServiceHandle
from deploy.stack.settings import KafkaBrokerName, StackSettings
from deploy.stack.triton_server import triton_spec
from runtime.settings import KafkaSettings

PIDS_FILE = "pids.json"


@dataclass(frozen=True)
class StackInfo:
    """Where everything is; holds no secret, so it is safe to print or log."""

    run_dir: Path
    kafka_broker: str
    kafka_bootstrap_servers: str
    mlflow_tracking_uri: str
    triton_http: str
    triton_grpc: str
    triton_metrics_url: str
    model_repository: Path
    logs_dir: Path


class LocalStack:
    """Starts, watches and stops the three services; teardown always covers every process it started."""

    def __init__(
        self,
        run_dir: Path,
        ports: StackPorts | None = None,
        *,
        mlflow_workers: int = 1,
        kafka_broker: KafkaBrokerName | None = None,
        kafka_nodes: int | None = None,
    ) -> None:
        self.run_dir = run_dir.resolve()
        settings = StackSettings()
        self.kafka_broker: KafkaBrokerName = kafka_broker or settings.kafka_broker
        self.kafka_nodes = kafka_nodes or settings.kafka_nodes
        self.ports = ports or StackPorts.allocate()
        # Node 1 listens on ports.kafka; the other nodes on ports picked now.
        extra = [p for p in free_ports(2 * self.kafka_nodes) if p not in self.ports.as_dict().values()]
        self.kafka_ports = [self.ports.kafka, *extra[: self.kafka_nodes - 1]]
        self.mlflow_workers = mlflow_workers
        self.processes: list[ManagedProcess] = []
        self._added: list[ManagedProcess] = []  # services started beside the stack (add_services)
        self._handles: dict[str, ServiceHandle] = {}  # by service name: one handle each (service())
        self.startup_s: float | None = None
        self._fernet_key = new_fernet_key()

    # -- where things are -------------------------------------------------------------------------

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def model_repository(self) -> Path:
        return self.run_dir / "triton" / "models"

    @property
    def kafka_bootstrap_servers(self) -> str:
        """Every node's address, so clients find the cluster while one node is down."""
        return ",".join(f"{LOOPBACK}:{port}" for port in self.kafka_ports)

    @property
    def mlflow_tracking_uri(self) -> str:
        return tracking_uri(self.ports.mlflow)

    @property
    def triton_http(self) -> str:
        return f"{LOOPBACK}:{self.ports.triton_http}"

    @property
    def triton_grpc(self) -> str:
        return f"{LOOPBACK}:{self.ports.triton_grpc}"

    @property
    def triton_metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.triton_metrics}/metrics"

    def info(self) -> StackInfo:
        return StackInfo(
            run_dir=self.run_dir,
            kafka_broker=self.kafka_broker,
            kafka_bootstrap_servers=self.kafka_bootstrap_servers,
            mlflow_tracking_uri=self.mlflow_tracking_uri,
            triton_http=self.triton_http,
            triton_grpc=self.triton_grpc,
            triton_metrics_url=self.triton_metrics_url,
            model_repository=self.model_repository,
            logs_dir=self.logs_dir,
        )

    def client_env(self) -> dict[str, str]:
        """The environment a project service or client on this machine needs to use the stack."""
        return {
            "PROMOTER_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            **kafka_broker.client_env(self.kafka_broker),
            "PROMOTER_TOPIC_REPLICATION_FACTOR": str(self.kafka_nodes),
            "PROMOTER_MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "PROMOTER_TRITON_ENDPOINTS": self.triton_http,
            "PROMOTER_GATEWAY_TRITON_GRPC_ENDPOINTS": self.triton_grpc,
            "PROMOTER_TRITON_PROTOCOL": "http",
            "PROMOTER_TRITON_MODEL_REPOSITORY": str(self.model_repository),
        }

    def kafka_settings(self) -> KafkaSettings:
        """Client settings for this stack's broker, as :meth:`client_env` sets them."""
        return kafka_broker.local_client_settings(self.kafka_bootstrap_servers, self.kafka_broker)

    def pids(self) -> dict[str, dict[str, int]]:
        """Service name -> leader pid and process group id."""
        return {p.name: {"pid": p.pid, "pgid": p.pgid} for p in self.processes}

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the three and wait until each is ready; on any failure stop what started.

        mlflow and tritonserver start at once; the broker once mlflow answers. On a loaded 2-core
        machine mlflow's start took 49 s to over its 60 s deadline (measured); a Kafka JVM's start
        (~4 CPU-seconds) beside it made the misses more frequent.
        """
        if self.processes:
            raise RuntimeError("this LocalStack was already started")
        began = time.monotonic()
        # Every spec first: a missing binary or unresolved jars fail before anything starts.
        brokers = kafka_broker.broker_specs(self.kafka_broker, self.kafka_ports, self.run_dir)
        mlflow = mlflow_spec(self.ports.mlflow, self.run_dir, workers=self.mlflow_workers, fernet_key=self._fernet_key)
        triton = triton_spec(
            http_port=self.ports.triton_http,
            grpc_port=self.ports.triton_grpc,
            metrics_port=self.ports.triton_metrics,
            run_dir=self.run_dir,
            model_repository=self.model_repository,
        )
        try:
            mlflow_process, _ = self._start_processes([mlflow, triton])
            wait_all_ready([mlflow_process], started_at=began)
            self._start_processes(brokers)
            wait_all_ready(self.processes, started_at=began)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began

    def add_services(self, specs: list[ServiceSpec]) -> list[ManagedProcess]:
        """Start more services beside the running stack and wait until each is ready.

        They are watched, listed in the pids file and stopped like the stack's own (before them, so that
        they leave Kafka while it still answers); a failure here leaves them to :meth:`stop`.
        """
        began = time.monotonic()
        started = self._start_processes(specs)
        self._added += started
        wait_all_ready(started, started_at=began)
        return started

    def service(self, name: str) -> ServiceHandle:
        """The service ``name`` (``mlflow``, ``kafka-1``, ``worker``, ...) as a handle to kill, stop and start again.

        A process the handle starts replaces the old one here: :meth:`stop` and the pids file follow it.
        """
        if name not in self._handles:
            process = next((p for p in self.processes if p.name == name), None)
            if process is None:
                raise StackError(f"no service {name!r} in this stack: {sorted(p.name for p in self.processes)}")
            self._handles[name] = ServiceHandle(process.spec, process.log_path, process, on_start=self._restarted)
        return self._handles[name]

    def _restarted(self, old: ManagedProcess | None, new: ManagedProcess) -> None:
        for processes in (self.processes, self._added):
            processes[:] = [new if process is old else process for process in processes]
        self._write_pids()

    def _start_processes(self, specs: list[ServiceSpec]) -> list[ManagedProcess]:
        started: list[ManagedProcess] = []
        for spec in specs:
            process = ManagedProcess(spec, self.logs_dir / f"{spec.name}.log")
            process.start()
            self.processes.append(process)
            started.append(process)
        self._write_pids()
        return started

    def _write_pids(self) -> None:
        path = self.run_dir / PIDS_FILE
        path.write_text(json.dumps(self.pids(), indent=2) + "\n")

    def first_dead(self) -> ManagedProcess | None:
        return next((p for p in self.processes if not p.alive()), None)

    def check_alive(self) -> None:
        """:class:`StackError` naming the first service that has exited, with its last log lines."""
        dead = self.first_dead()
        if dead is not None:
            raise StackError(f"{dead.name} exited (code {dead.returncode()}): {dead.tail()}")

    def watch(self, timeout_s: float | None = None) -> None:
        """Block until a service dies (-> :class:`StackError`) or ``timeout_s`` passes."""
        poll_until(lambda: self.first_dead() is not None, timeout_s, interval_s=0.2)
        self.check_alive()

    def stop(self) -> None:
        """Stop every process this stack started: SIGTERM the groups, SIGKILL after a deadline. Idempotent."""
        stop_all(self._added)
        stop_all(self.processes)
        # The broker's log segments are scratch; its config and the logs stay for a post-mortem.
        shutil.rmtree(apache_kafka.data_dir(self.run_dir), ignore_errors=True)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
