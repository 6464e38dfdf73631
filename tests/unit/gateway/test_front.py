"""The gateway's start-up order: probes answered before the documented HTTP API exists, requests for that API waiting
for its build (never a different answer), a failed build answered 500; and the replay side importing none of what
serves (FastAPI, httpx, gRPC, numpy)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Message

from gateway.front import GatewayFront, ProbeAnswer
from tests.paths import REPO


class Steps:
    """A lifespan and an API build the test releases step by step."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.replay_over = asyncio.Event()
        self.build_waits = asyncio.Event()
        self.fail_build = False

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self.events.append("started")
        yield
        self.events.append("stopped")

    async def build_after(self) -> None:
        self.build_waits.set()
        await self.replay_over.wait()

    def build_api(self) -> ASGIApp:
        self.events.append("built")
        if self.fail_build:
            raise RuntimeError("no FastAPI today")
        api = FastAPI()

        @api.get("/v2")
        async def metadata() -> dict[str, str]:
            return {"name": "model-promoter-gateway"}

        return api

    def front(self) -> GatewayFront:
        probes: dict[str, Any] = {"/ready": self.ready}
        return GatewayFront(self.lifespan, probes, self.build_api, self.build_after)

    def ready(self) -> ProbeAnswer:
        return (200, {"ready": True}) if self.replay_over.is_set() else (503, {"ready": False})


async def run_lifespan(app: ASGIApp) -> tuple[asyncio.Queue[Message], list[Message], asyncio.Task[None]]:
    """Starts the app's lifespan; returns its inbox, what it sent, and its task (send ``lifespan.shutdown`` to end)."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []
    started = asyncio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        started.set()

    await inbox.put({"type": "lifespan.startup"})

    async def serve() -> None:
        await app({"type": "lifespan"}, inbox.get, send)

    task = asyncio.create_task(serve())
    await asyncio.wait_for(started.wait(), 10)
    return inbox, sent, task


async def test_probes_answer_before_the_api_is_built_and_api_requests_wait_for_it() -> None:
    steps = Steps()
    front = steps.front()
    inbox, sent, lifespan = await run_lifespan(front)
    assert sent == [{"type": "lifespan.startup.complete"}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://gw") as client:
        not_ready = await client.get("/ready")
        assert (not_ready.status_code, not_ready.json()) == (503, {"ready": False})
        waiting = asyncio.create_task(client.get("/v2"))
        await asyncio.wait_for(steps.build_waits.wait(), 10)  # the build waits for the replay...
        assert not waiting.done()  # ...and so does the request
        assert "built" not in steps.events
        steps.replay_over.set()
        answer = await asyncio.wait_for(waiting, 30)
        assert (answer.status_code, answer.json()) == (200, {"name": "model-promoter-gateway"})
        assert (await client.get("/ready")).json() == {"ready": True}
        assert (await client.get("/nowhere")).status_code == 404  # the API's own answers from now on
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, 10)
    assert steps.events == ["started", "built", "stopped"]
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}


async def test_a_failed_build_is_answered_500_with_the_reason() -> None:
    steps = Steps()
    steps.fail_build = True
    steps.replay_over.set()
    front = steps.front()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://gw") as client:
        answer = await client.get("/v2")
        assert answer.status_code == 500
        assert "no FastAPI today" in answer.json()["error"]
        assert (await client.get("/ready")).status_code == 200  # the probes do not depend on it


def test_the_replay_side_imports_nothing_that_serves() -> None:
    """``gateway.start`` imports the replay side first and the rest in a thread while the replay runs: neither may
    pull FastAPI (built after the replay), httpx (its CLI imports rich and click) or the gRPC stack and numpy; and
    what serves before ``/ready`` (the gRPC API, uvicorn's server) pulls neither numpy (``tritonclient.grpc``'s
    client), uvicorn's command line (click) and supervisors, starlette's request parsing nor structlog's rich."""
    code = (
        "import sys\n"
        "import gateway.start, gateway.replica, gateway.settings, runtime.logging, runtime.service_help\n"
        "serving = ('fastapi', 'httpx', 'grpc', 'numpy', 'tritonclient', 'uvicorn', 'rich')\n"
        "early = sorted(m for m in serving if m in sys.modules)\n"
        "assert not early, early\n"
        "gateway.start.uvicorn_parts()\n"
        "import gateway.app\n"
        "late = ('fastapi', 'httpx', 'numpy', 'tritonclient.grpc', 'click', 'multiprocessing', 'watchfiles', 'anyio',\n"
        "        'starlette.responses', 'rich')\n"
        "late = sorted(m for m in late if m in sys.modules)\n"
        "assert not late, late\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_the_packages_imported_in_part_still_import_whole_afterwards() -> None:
    """A client of ``tritonclient.grpc`` or ``uvicorn.run`` in the same process gets the real packages, holding the
    very modules the gateway imported without their ``__init__`` (one set of protobuf messages and classes)."""
    code = (
        "import gateway.start, gateway.kserve_messages as kserve\n"
        "config, server = gateway.start.uvicorn_parts()\n"
        "import tritonclient.grpc, uvicorn, uvicorn.lifespan.on\n"
        "assert tritonclient.grpc.service_pb2 is kserve.service_pb2\n"
        "assert tritonclient.grpc.InferenceServerClient and tritonclient.grpc.InferInput\n"
        "assert uvicorn.Config is config and uvicorn.Server is server and uvicorn.lifespan.on.Config is config\n"
        "assert callable(uvicorn.run)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
