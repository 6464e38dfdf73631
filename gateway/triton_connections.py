"""Keep-alive HTTP/1.1 connections to one Triton endpoint: the transport under the gateway's hot path.

Why not aiohttp or httpx here: against the same Triton on this 2-core machine, one POST through this
pool (an asyncio protocol fed by httptools, the parser uvicorn already uses) cost 41 µs of CPU, through
an aiohttp ``ClientSession`` 295 µs, through an ``httpx.AsyncClient`` 1,104 µs
(``tests/benchmarks/triton_http_client.py``, run by ``make bench``). The gateway pays that on every
inference, and it was most of the gap between the gateway's throughput and direct Triton's.

The scope is deliberately small: ``POST`` with a body of known length; answers with a Content-Length
or chunked body; one exchange per connection at a time (no pipelining); idle connections reused
newest first; a reused connection the peer closed while idle is retried once on a fresh one (inference
has no side effects). A cancelled or failed exchange closes its connection: a late answer can never be
read as the answer to the next request.

Failures say how far the request got, so the caller can tell what is safe to send elsewhere:
:class:`UnreachableError` (no connection: nothing was sent), :class:`UnansweredError` (the connection
closed before a single byte of the answer), and a ``ConnectionResetError`` once part of the answer came.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class UnreachableError(ConnectionError):
    """No TCP (or TLS) connection to the endpoint (refused, unreachable, handshake failed): nothing was sent."""


class ConnectTimeoutError(UnreachableError):
    """No TCP (or TLS) connection to the endpoint within the connect deadline."""


class UnansweredError(ConnectionError):
    """The connection closed before a single byte of the answer came (the peer died or reset it)."""


class StaleConnectionError(UnansweredError):
    """The peer closed a reused keep-alive connection before answering a byte (safe to send again)."""


class ProtocolError(ConnectionError):
    """The peer's answer is not readable HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, endpoint: str) -> Endpoint:
        """``host:port``, ``http://host:port`` or ``https://host:port`` (default ports 80 and 443)."""
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Triton endpoint {endpoint!r}: expected host:port or http(s)://host:port")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One TCP connection; at most one exchange in flight."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[RawResponse] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._answered_bytes = False
        self.reused = False
        self.keep_alive = True
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._answered_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ProtocolError(f"unreadable HTTP answer: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.reused and not self._answered_bytes:
            self._fail(StaleConnectionError("the idle keep-alive connection was closed by the peer"))
        elif not self._answered_bytes:
            self._fail(UnansweredError("the connection was closed before any byte of the answer"))
        else:
            self._fail(ConnectionResetError("the connection was closed before the answer was complete"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response = RawResponse(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self.keep_alive = self._parser.should_keep_alive()
        waiter, self._waiter, self._headers, self._body = self._waiter, None, {}, []
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def exchange(self, request: bytes) -> asyncio.Future[RawResponse]:
        if self._transport is None or self.closed:
            raise StaleConnectionError("the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._answered_bytes = False
        self._transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class ConnectionPool:
    """Keep-alive connections to one endpoint, at most ``max_connections`` exchanges at a time."""

    def __init__(self, endpoint: Endpoint, *, max_connections: int, connect_timeout_s: float) -> None:
        self.endpoint = endpoint
        self._connect_timeout_s = connect_timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._host = endpoint.authority.encode("ascii")
        self._ssl = ssl.create_default_context() if endpoint.tls else None

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> RawResponse:
        """POST ``body`` to ``path`` with ``headers`` (names and values free of CR/LF; checked)."""
        request = self._request(path, body, headers)
        async with self._slots:
            while self._idle:
                connection = self._idle.pop()
                if connection.closed:
                    self._open.discard(connection)
                    continue
                try:
                    return await self._exchange(connection, request)
                except StaleConnectionError:
                    break  # closed by the peer while idle: once more, on a new connection
            return await self._exchange(await self._connect(), request)

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    def _request(self, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (path.encode("ascii"), self._host, len(body))
        ]
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
                raise ValueError(f"header {name[:50]!r}: line breaks and colons are not allowed")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"\r\n")
        lines.append(body)
        return b"".join(lines)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(
                    _Connection, self.endpoint.host, self.endpoint.port, ssl=self._ssl
                )
        except TimeoutError:
            raise ConnectTimeoutError(f"no connection within {self._connect_timeout_s} s") from None
        except OSError as error:  # refused, unreachable, TLS handshake
            reason = os.strerror(error.errno) if error.errno else str(error) or type(error).__name__
            raise UnreachableError(reason) from error
        self._open.add(connection)
        return connection

    async def _exchange(self, connection: _Connection, request: bytes) -> RawResponse:
        try:
            response = await connection.exchange(request)
        except BaseException:  # cancelled, timed out or failed: an answer may still come, so never reuse it
            connection.close()
            self._open.discard(connection)
            raise
        if connection.keep_alive and not connection.closed:
            connection.reused = True
            self._idle.append(connection)
        else:
            connection.close()
            self._open.discard(connection)
        return response
