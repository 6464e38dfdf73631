"""Run model-promoter's own services (worker, gateway, ingress) as real processes.

Used by the integration tests and the demo, next to the three stack services: same process
management (own process group, log file, readiness polled until a deadline, guaranteed stop).
Each service is started as ``python -m <module>`` with this interpreter, so it runs from the
project's venv whatever console scripts it has.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from deploy.stack.ports import LOOPBACK
from deploy.stack.probes import http_ok
from deploy.stack.process import ManagedProcess, ServiceSpec

WORKER_READY_TIMEOUT_S = 90.0
GATEWAY_READY_TIMEOUT_S = 60.0
INGRESS_READY_TIMEOUT_S = 30.0


def _http_service(
    module: str,
    env: Mapping[str, str],
    *,
    name: str,
    port: int,
    run_dir: Path,
    ready_path: str,
    ready_timeout_s: float,
    stop_timeout_s: float = 15.0,
) -> ServiceSpec:
    """A service whose readiness is ``GET http://127.0.0.1:<port><ready_path>`` answering 200."""
    url = f"http://{LOOPBACK}:{port}"

    def ready(process: ManagedProcess) -> bool:
        return http_ok(f"{url}{ready_path}")

    return ServiceSpec(
        name=name,
        argv=[sys.executable, "-m", module],
        env={**os.environ, **env},
        cwd=run_dir,
        ready=ready,
        ready_timeout_s=ready_timeout_s,
        stop_timeout_s=stop_timeout_s,
        ports=(port,),
        endpoints={"api": url, "health": f"{url}/health", "metrics": f"{url}/metrics"},
    )


def worker_spec(env: Mapping[str, str], *, health_port: int, run_dir: Path, name: str = "worker") -> ServiceSpec:
    """A worker replica; ready once it has replayed ``model.ready`` (``/ready`` answers 200)."""
    own = {
        "PROMOTER_WORKER_HEALTH_HOST": LOOPBACK,
        "PROMOTER_WORKER_HEALTH_PORT": str(health_port),
        "PROMOTER_WORKER_REPLICA_ID": name,
    }
    return _http_service(
        "worker.app",
        {**env, **own},
        name=name,
        port=health_port,
        run_dir=run_dir,
        ready_path="/ready",
        ready_timeout_s=WORKER_READY_TIMEOUT_S,
        stop_timeout_s=20.0,
    )


def gateway_spec(
    env: Mapping[str, str], *, port: int, run_dir: Path, name: str = "gateway", grpc_port: int = 0
) -> ServiceSpec:
    """A gateway replica (HTTP on ``port``, gRPC on ``grpc_port``: 0 lets the system pick a free one, so that
    replicas side by side never collide); ready once it has replayed the serving-state log (``/ready`` answers
    200)."""
    own = {
        "PROMOTER_GATEWAY_HOST": LOOPBACK,
        "PROMOTER_GATEWAY_PORT": str(port),
        "PROMOTER_GATEWAY_GRPC_PORT": str(grpc_port),
        "PROMOTER_GATEWAY_GATEWAY_ID": name,
    }
    spec = _http_service(
        "gateway.start",
        {**env, **own},
        name=name,
        port=port,
        run_dir=run_dir,
        ready_path="/ready",
        ready_timeout_s=GATEWAY_READY_TIMEOUT_S,
    )
    if not grpc_port:
        return spec
    return replace(spec, endpoints={**spec.endpoints, "grpc": f"{LOOPBACK}:{grpc_port}"})


def ingress_spec(
    env: Mapping[str, str], *, port: int, run_dir: Path, name: str = "ingress", ready_path: str = "/ready"
) -> ServiceSpec:
    """The webhook ingress; ready once connected to Kafka (pass ``ready_path="/health"`` to not wait for it)."""
    own = {"PROMOTER_INGRESS_HOST": LOOPBACK, "PROMOTER_INGRESS_PORT": str(port)}
    return _http_service(
        "ingress.app",
        {**env, **own},
        name=name,
        port=port,
        run_dir=run_dir,
        ready_path=ready_path,
        ready_timeout_s=INGRESS_READY_TIMEOUT_S,
    )


CONSOLE_READY_TIMEOUT_S = 60.0


def console_spec(
    env: Mapping[str, str], *, port: int, run_dir: Path, allow_replay: bool = False, name: str = "console"
) -> ServiceSpec:
    """``promoter console`` (Streamlit); ready once Streamlit's ``/_stcore/health`` answers 200."""
    url = f"http://{LOOPBACK}:{port}"
    own = {"PROMOTER_CONSOLE_HOST": LOOPBACK, "PROMOTER_CONSOLE_PORT": str(port)}
    argv = [sys.executable, "-c", "from promoter_cli.main import main; main()", "console"]

    def ready(process: ManagedProcess) -> bool:
        return http_ok(f"{url}/_stcore/health")

    return ServiceSpec(
        name=name,
        argv=[*argv, "--allow-replay"] if allow_replay else argv,
        env={**os.environ, **env, **own},
        cwd=run_dir,
        ready=ready,
        ready_timeout_s=CONSOLE_READY_TIMEOUT_S,
        ports=(port,),
        endpoints={"ui": url},
    )
