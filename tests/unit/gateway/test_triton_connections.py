"""The gateway's keep-alive connections to Triton, against a scripted raw HTTP server on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from gateway.triton_connections import (
    ConnectionPool,
    ConnectTimeoutError,
    Endpoint,
    ProtocolError,
    StaleConnectionError,
    UnansweredError,
    UnreachableError,
)

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # -> keep the connection open?


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(extra) + b"\r\n" + body


@dataclass
class ScriptedServer:
    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.handler(request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Start = Callable[[Handler], Awaitable[tuple[ScriptedServer, ConnectionPool]]]


@pytest.fixture
async def scripted() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []
    pools: list[ConnectionPool] = []

    async def start(handler: Handler) -> tuple[ScriptedServer, ConnectionPool]:
        scripted = ScriptedServer(handler)
        server = await asyncio.start_server(scripted.serve, "127.0.0.1", 0)
        servers.append(server)
        scripted.port = server.sockets[0].getsockname()[1]
        pool = ConnectionPool(Endpoint("127.0.0.1", scripted.port, tls=False), max_connections=8, connect_timeout_s=1)
        pools.append(pool)
        return scripted, pool

    yield start
    for pool in pools:
        await pool.close()
    for server in servers:
        server.close()
        await server.wait_closed()


async def echo_path(request: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(ok(request.split(b" ")[1]))
    await writer.drain()
    return True


async def test_sequential_requests_reuse_one_connection(scripted: Start) -> None:
    server, pool = await scripted(echo_path)
    answers = [await pool.post(f"/v2/models/m{i}/infer", b"{}", {"content-type": "application/json"}) for i in range(5)]
    assert [a.body for a in answers] == [f"/v2/models/m{i}/infer".encode() for i in range(5)]
    assert all(a.status == 200 and a.headers["content-type"] == "application/json" for a in answers)
    assert server.connections == 1
    assert b"content-type: application/json\r\n" in server.requests[0]
    assert b"Host: 127.0.0.1:%d\r\n" % server.port in server.requests[0]


async def test_concurrent_requests_each_get_their_own_answer(scripted: Start) -> None:
    all_in = asyncio.Event()

    async def a_last(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 6:
            all_in.set()
        if b"/a" in request:  # answers arrive out of order across connections
            await all_in.wait()
        return await echo_path(request, writer)

    server, pool = await scripted(a_last)
    answers = await asyncio.gather(*(pool.post(f"/{c}", b"x", {}) for c in "abcabc"))
    assert [a.body for a in answers] == [f"/{c}".encode() for c in "abcabc"]
    assert server.connections == 6


async def test_a_connection_the_peer_closed_while_idle_is_replaced(scripted: Start) -> None:
    async def answer_then_hang_up(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await echo_path(request, writer)
        return False  # no Connection: close header: the client believes it may reuse the connection

    server, pool = await scripted(answer_then_hang_up)
    first = await pool.post("/one", b"{}", {})
    second = await pool.post("/two", b"{}", {})
    assert (first.body, second.body) == (b"/one", b"/two")
    assert server.connections == 2


def answering(raw: bytes, *, keep_open: bool) -> Handler:
    """A handler that answers every request with ``raw`` bytes."""

    async def handler(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep_open

    return handler


async def test_connection_close_header_is_honoured(scripted: Start) -> None:
    server, pool = await scripted(answering(ok(b"{}", b"Connection: close\r\n"), keep_open=False))
    for _ in range(3):
        assert (await pool.post("/x", b"{}", {})).status == 200
    assert server.connections == 3


async def test_chunked_answers_are_reassembled(scripted: Start) -> None:
    chunked = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n'
    _, pool = await scripted(answering(chunked, keep_open=True))
    assert (await pool.post("/x", b"{}", {})).body == b'{"a":1}'


@pytest.mark.parametrize(
    ("raw", "keep_open", "error", "words"),
    [
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial', False, ConnectionResetError, "before the answer"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", True, ProtocolError, "unreadable HTTP answer"),
    ],
)
async def test_a_broken_answer_is_an_error(
    scripted: Start, raw: bytes, keep_open: bool, error: type[Exception], words: str
) -> None:
    _, pool = await scripted(answering(raw, keep_open=keep_open))
    with pytest.raises(error, match=words):
        await pool.post("/x", b"{}", {})


async def test_a_late_answer_is_never_read_as_the_next_one(scripted: Start) -> None:
    release = asyncio.Event()

    async def first_slow(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/slow" in request:
            await release.wait()
        return await echo_path(request, writer)

    server, pool = await scripted(first_slow)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await pool.post("/slow", b"{}", {})
    release.set()
    assert (await pool.post("/fast", b"{}", {})).body == b"/fast"
    assert server.connections == 2


async def test_header_injection_is_refused(scripted: Start) -> None:
    server, pool = await scripted(echo_path)
    with pytest.raises(ValueError, match="line breaks"):
        await pool.post("/x", b"{}", {"content-type": "application/json\r\nX-Evil: 1"})
    assert server.requests == []


async def test_nothing_listening_is_unreachable() -> None:
    pool = ConnectionPool(Endpoint("127.0.0.1", 9, tls=False), max_connections=1, connect_timeout_s=1)
    with pytest.raises(UnreachableError, match="Connection refused"):
        await pool.post("/x", b"{}", {})


async def test_a_connection_closed_before_any_answer_byte_is_unanswered(scripted: Start) -> None:
    async def hang_up(request: bytes, writer: asyncio.StreamWriter) -> bool:
        return False  # closes without a byte

    _, pool = await scripted(hang_up)
    with pytest.raises(UnansweredError, match="before any byte of the answer"):
        await pool.post("/x", b"{}", {})


async def test_connect_timeout_names_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_connects(*args: object, **kwargs: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", never_connects)
    pool = ConnectionPool(Endpoint("127.0.0.1", 9, tls=False), max_connections=1, connect_timeout_s=0.05)
    with pytest.raises(ConnectTimeoutError, match=r"no connection within 0\.05 s"):
        await pool.post("/x", b"{}", {})


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("triton:8000", Endpoint("triton", 8000, tls=False)),
        ("http://127.0.0.1:8000", Endpoint("127.0.0.1", 8000, tls=False)),
        ("https://triton.example", Endpoint("triton.example", 443, tls=True)),
        ("[::1]:8000", Endpoint("::1", 8000, tls=False)),
    ],
)
def test_endpoints_parse(text: str, endpoint: Endpoint) -> None:
    assert Endpoint.parse(text) == endpoint


def test_bad_endpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="expected host:port"):
        Endpoint.parse("ftp://triton:21")


def test_stale_error_is_an_unanswered_connection_error() -> None:
    assert issubclass(StaleConnectionError, UnansweredError)
    assert issubclass(UnansweredError, ConnectionError)
    assert issubclass(ConnectTimeoutError, UnreachableError)
