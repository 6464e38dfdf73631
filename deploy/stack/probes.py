"""Readiness probes: one quick attempt each, never raising; callers poll them until a deadline."""

from __future__ import annotations

import socket
import struct
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


_METADATA_API_KEY = 3
_METADATA_VERSION = 4  # the oldest version Kafka 4 still answers; fixed-width fields, no tagged fields
_PROBE_CORRELATION_ID = 0x6D70  # any value: the answer must echo it


def _metadata_request(client_id: bytes) -> bytes:
    header = struct.pack(">hhih", _METADATA_API_KEY, _METADATA_VERSION, _PROBE_CORRELATION_ID, len(client_id))
    body = struct.pack(">ib", 0, 0)  # no topics (brokers and controller only), no auto-creation
    payload = header + client_id + body
    return struct.pack(">i", len(payload)) + payload


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-answer")
        data += chunk
    return data


def kafka_metadata_answers(host: str, port: int, timeout_s: float = 1.0, *, min_brokers: int = 1) -> bool:
    """True when the broker at ``host:port`` answers a Metadata request naming a controller and ``min_brokers``.

    A Kafka broker listens before it has joined its controller quorum; until it has, its answer
    lists no broker or no controller, so this is the "clients can use it now" check, not a port check.
    In a cluster, topics of replication factor N can be created once N brokers are listed.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(_metadata_request(b"promoter-stack-probe"))
            (size,) = struct.unpack(">i", _read_exactly(sock, 4))
            answer = _read_exactly(sock, size)
    except (OSError, struct.error):
        return False
    return _metadata_names_brokers_and_controller(answer, min_brokers)


def _metadata_names_brokers_and_controller(answer: bytes, min_brokers: int) -> bool:
    try:
        correlation_id, _throttle_ms, brokers = struct.unpack_from(">iii", answer, 0)
        if correlation_id != _PROBE_CORRELATION_ID or brokers < max(min_brokers, 1):
            return False
        offset = 12
        for _ in range(brokers):
            offset += 4  # node id
            (host_length,) = struct.unpack_from(">h", answer, offset)
            offset += 2 + host_length + 4  # host, port
            (rack_length,) = struct.unpack_from(">h", answer, offset)
            offset += 2 + max(rack_length, 0)
        (cluster_id_length,) = struct.unpack_from(">h", answer, offset)
        offset += 2 + max(cluster_id_length, 0)
        (controller_id,) = struct.unpack_from(">i", answer, offset)
    except struct.error:
        return False
    return bool(controller_id >= 0)
