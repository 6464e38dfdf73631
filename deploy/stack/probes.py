"""Readiness probes: one quick attempt each, never raising; callers poll them until a deadline."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """The HTTP status of ``GET url`` (loopback: proxies bypassed), or None when nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    return http_status(url, timeout_s) == 200


def tcp_accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
