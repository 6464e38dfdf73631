"""Loopback ports for the local stack: check that requested ones are free, pick free ones for the rest.

Free ports are picked at random *outside* the kernel's ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default). A port the kernel hands out
for ``bind(0)`` comes from that range, and so does the source port of every outgoing connection: a
port picked there and bound by a server a second later can be taken in between by any client
connecting anywhere (a broker node dialling another failed to bind its controller port that way,
under load). Below the range, only another program picking its own port can collide, and picking at
random keeps two programs apart. Two more guards:

- a port handed out is not handed out again by this process for ``HANDED_OUT_FOR_S``: a service takes
  seconds to bind what it was given, and until then the port looks free;
- pytest-xdist workers (``PYTEST_XDIST_WORKER=gwN`` of ``PYTEST_XDIST_WORKER_COUNT``) pick from disjoint
  slices, so a service one worker started never answers another worker's readiness probe.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path

from deploy.stack.errors import StackError

LOOPBACK = "127.0.0.1"
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL = (32768, 60999)
LOWEST_PICKED = 10_000  # above the ports of well-known and registered services people run locally
MAX_TRIES = 2_000  # distinct ports tried before giving up (a loopback that full has other problems)
HANDED_OUT_FOR_S = 300.0
_random = random.SystemRandom()
_handed_out: dict[int, float] = {}  # port -> when this process last handed it out (time.monotonic)


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


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range for ``bind(0)`` and outgoing connections' source ports (inclusive)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def pickable_ports(ephemeral: tuple[int, int] | None = None, environ: Mapping[str, str] = os.environ) -> range:
    """Where free ports are picked: below the ephemeral range, or above it when it starts too low; a
    pytest-xdist worker's own slice of that."""
    low, high = ephemeral or ephemeral_range()
    ports = range(LOWEST_PICKED, low) if low - LOWEST_PICKED >= 2_000 else range(high + 1, 65536)
    worker, count = environ.get("PYTEST_XDIST_WORKER", ""), environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1):
        return ports
    index, width = int(worker[2:]), len(ports) // int(count)
    return ports[index * width : (index + 1) * width]


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports free right now, outside the ephemeral range (held together while picking)."""
    candidates = pickable_ports()
    tried: set[int] = set()
    with ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            if len(tried) >= min(len(candidates), MAX_TRIES):
                raise StackError(f"no {count} free ports in {candidates.start}-{candidates.stop - 1}: got {ports}")
            port = _random.choice(candidates)
            if port in tried:
                continue
            tried.add(port)
            if time.monotonic() - _handed_out.get(port, -HANDED_OUT_FOR_S) < HANDED_OUT_FOR_S:
                continue  # given to a service a moment ago that may not have bound it yet
            try:
                held.enter_context(_bind(port, host))
            except OSError:
                continue  # taken: another candidate
            ports.append(port)
        handed_at = time.monotonic()
        _handed_out.update(dict.fromkeys(ports, handed_at))
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
