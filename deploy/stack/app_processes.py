"""Run model-promoter's own services (worker, later ingress and gateways) as real processes.

Used by the integration tests and the demo, next to the three stack services: same process
management (own process group, log file, readiness polled until a deadline, guaranteed stop).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from deploy.stack.ports import LOOPBACK
from deploy.stack.probes import http_ok
from deploy.stack.process import ManagedProcess, ServiceSpec

WORKER_READY_TIMEOUT_S = 90.0


def _console_script(name: str) -> str:
    """The console script installed next to this interpreter (the project's venv)."""
    return str(Path(sys.executable).parent / name)


def worker_spec(env: Mapping[str, str], *, health_port: int, run_dir: Path, name: str = "worker") -> ServiceSpec:
    """A ``promoter-worker`` replica; ready once it has replayed ``model.ready`` (``/ready`` answers 200)."""
    url = f"http://{LOOPBACK}:{health_port}"

    def ready(process: ManagedProcess) -> bool:
        return http_ok(f"{url}/ready")

    return ServiceSpec(
        name=name,
        argv=[_console_script("promoter-worker")],
        env={
            **os.environ,
            **env,
            "PROMOTER_WORKER_HEALTH_HOST": LOOPBACK,
            "PROMOTER_WORKER_HEALTH_PORT": str(health_port),
            "PROMOTER_WORKER_REPLICA_ID": name,
        },
        cwd=run_dir,
        ready=ready,
        ready_timeout_s=WORKER_READY_TIMEOUT_S,
        stop_timeout_s=20.0,
        endpoints={"health": f"{url}/health", "metrics": f"{url}/metrics"},
    )
