"""The MLflow tracking server of the local stack: sqlite backend, proxied local artifacts, webhooks on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from deploy.stack.ports import LOOPBACK
from deploy.stack.probes import http_ok
from deploy.stack.process import ManagedProcess, ReadyCheck, ServiceSpec

NAME = "mlflow"
# A deadline for a failure, not a wait: a fresh venv's first start (bytecode, database migrations) on a loaded
# 2-core machine took over 60 s once (load average 14).
READY_TIMEOUT_S = 120.0
WEBHOOK_CACHE_TTL_S = 1

# The server's own environment: never printed, never put into a client's environment.
_SECRET_ENV = "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"  # noqa: S105 (a variable name, not a secret)


def server_env(fernet_key: str) -> dict[str, str]:
    """The environment ``mlflow server`` needs for webhooks to a loopback receiver."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    env.update(
        {
            _SECRET_ENV: fernet_key,
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_CACHE_TTL": str(WEBHOOK_CACHE_TTL_S),
            # No huey job runners (GenAI evaluation jobs): fewer processes, faster start, and no
            # huey store left behind in /dev/shm after every run.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
    )
    return env


def new_fernet_key() -> str:
    return Fernet.generate_key().decode()


def tracking_uri(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


def _ready(port: int) -> ReadyCheck:
    url = f"{tracking_uri(port)}/health"

    def check(process: ManagedProcess) -> bool:
        return http_ok(url)

    return check


def mlflow_spec(port: int, run_dir: Path, *, workers: int = 1, fernet_key: str | None = None) -> ServiceSpec:
    data = run_dir / "mlflow"
    artifacts = data / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    allowed_hosts = f"{LOOPBACK},{LOOPBACK}:{port},localhost,localhost:{port}"
    return ServiceSpec(
        name=NAME,
        argv=[
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--backend-store-uri",
            f"sqlite:///{(data / 'mlflow.db').resolve()}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(artifacts.resolve()),
            "--default-artifact-root",
            "mlflow-artifacts:/",
            "--allowed-hosts",
            allowed_hosts,
        ],
        env=server_env(fernet_key or new_fernet_key()),
        cwd=data,
        ready=_ready(port),
        ready_timeout_s=READY_TIMEOUT_S,
        stop_timeout_s=10.0,
        ports=(port,),
        endpoints={"mlflow": tracking_uri(port)},
    )
