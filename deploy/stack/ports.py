"""Loopback ports for the local stack: check that requested ones are free, pick free ones for the rest."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from dataclasses import dataclass, fields

from deploy.stack.errors import StackError

LOOPBACK = "127.0.0.1"


def _bind(port: int, host: str = LOOPBACK) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Same option the servers set, so a port in TIME_WAIT counts as free, a listening one as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` (checked by binding it, then letting it go)."""
    try:
        _bind(port, host).close()
    except OSError:
        return False
    return True


def ensure_free(port: int, host: str = LOOPBACK) -> int:
    """``port`` if it is free, else :class:`StackError` ``port N taken``."""
    if not 0 < port < 65536:
        raise StackError(f"port {port} is not a valid TCP port")
    if not port_is_free(port, host):
        raise StackError(f"port {port} taken")
    return port


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports the kernel considers free right now (held together while picking)."""
    with ExitStack() as held:
        ports: list[int] = []
        for _ in range(count):
            sock = held.enter_context(_bind(0, host))
            ports.append(int(sock.getsockname()[1]))
        return ports


@dataclass(frozen=True)
class StackPorts:
    """Every port the local stack listens on, all on 127.0.0.1."""

    kafka: int
    mlflow: int
    triton_http: int
    triton_grpc: int
    triton_metrics: int

    @classmethod
    def allocate(
        cls,
        *,
        kafka: int | None = None,
        mlflow: int | None = None,
        triton_http: int | None = None,
        triton_grpc: int | None = None,
        triton_metrics: int | None = None,
    ) -> StackPorts:
        """Use the requested ports (each must be free and distinct) and free ones for the others."""
        requested = {
            "kafka": kafka,
            "mlflow": mlflow,
            "triton_http": triton_http,
            "triton_grpc": triton_grpc,
            "triton_metrics": triton_metrics,
        }
        chosen = [port for port in requested.values() if port is not None]
        for port in chosen:
            ensure_free(port)
        if len(set(chosen)) != len(chosen):
            raise StackError(f"the same port is requested twice: {sorted(chosen)}")
        missing = [name for name, port in requested.items() if port is None]
        # Draw a few spare ones so a requested port is never handed out twice.
        spare = iter(p for p in free_ports(len(missing) + len(chosen)) if p not in chosen)
        resolved = {name: (port if port is not None else next(spare)) for name, port in requested.items()}
        return cls(**resolved)

    def as_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}
