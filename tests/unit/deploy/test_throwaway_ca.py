"""The test CA's server certificate passes a client's TLS host-name check for loopback, and only for its names."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from deploy.stack.throwaway_ca import make_test_ca


async def _handshake(ca: Path, server_pem: Path, server_hostname: str) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(server_pem)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        client_context = ssl.create_default_context(cafile=str(ca))  # as KafkaSettings builds it
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname=server_hostname
        )
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_clients_trusting_the_ca_accept_the_server_on_its_names_only(tmp_path: Path) -> None:
    files = make_test_ca(tmp_path)
    assert files.server_pem.stat().st_mode & 0o077 == 0, "the private key is not readable by others"
    await _handshake(files.ca_cert, files.server_pem, "127.0.0.1")
    await _handshake(files.ca_cert, files.server_pem, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|IP address mismatch"):
        await _handshake(files.ca_cert, files.server_pem, "kafka.example.com")
    other = make_test_ca(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await _handshake(other.ca_cert, files.server_pem, "127.0.0.1")
