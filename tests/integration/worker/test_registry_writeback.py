"""The worker writes its decisions back onto the real MLflow registry, and a failing write-back never hurts serving."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from deploy.stack.local_stack import LocalStack
from tests.worker_harness import (
    WorkerHandle,
    events_about,
    produce,
    register_iris,
    request_bytes,
    running_worker,
    set_alias,
    until,
)

pytestmark = pytest.mark.integration

READY = "io.modelpromoter.model.ready.v1"
_HOP_BY_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


def _tags(uri: str, name: str, version: int) -> dict[str, str]:
    tags = MlflowClient(uri).get_model_version(name, str(version)).tags or {}
    return {key: value for key, value in tags.items() if key.startswith("promoter.")}


def _history(uri: str, name: str) -> list[dict[str, Any]]:
    text = (MlflowClient(uri).get_registered_model(name).tags or {}).get("promoter.alias_history")
    return list(json.loads(text)) if text else []


async def _until_tags(uri: str, name: str, version: int, wanted: dict[str, str], what: str) -> dict[str, str]:
    """The version's promoter.* tags once they contain ``wanted`` (AssertionError at the deadline)."""
    seen: dict[str, str] = {}

    async def written() -> bool:
        seen.clear()
        seen.update(await asyncio.to_thread(_tags, uri, name, version))
        return wanted.items() <= seen.items()

    try:
        await until(written, timeout_s=60, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}; tags are {seen}") from None
    return dict(seen)


async def _until_history(uri: str, name: str, entries: int) -> None:
    async def complete() -> bool:
        return len(await asyncio.to_thread(_history, uri, name)) >= entries

    await until(complete, timeout_s=60, what=f"{entries} alias changes in the history of {name}")


async def _promote(stack: LocalStack, worker: WorkerHandle, name: str, alias: str, version: int, seen: int) -> None:
    """Point ``alias`` at ``version`` in MLflow, request it, and wait for its model.ready (the ``seen``+1-th)."""
    set_alias(stack.mlflow_tracking_uri, name, alias, version)
    bootstrap = stack.kafka_bootstrap_servers
    await produce(bootstrap, worker.topic("promotion_requested"), [(name.encode(), request_bytes(name, alias=alias))])
    ready = await events_about(bootstrap, worker.topic("model_ready"), name, count=seen + 1, event_type=READY)
    assert ready[-1]["data"]["version"] == version


async def test_tags_follow_serve_reject_and_rollback(local_stack: LocalStack, worker: WorkerHandle) -> None:
    name = f"tags-{uuid.uuid4().hex[:6]}"
    uri = local_stack.mlflow_tracking_uri
    v1 = register_iris(uri, name)
    broken = register_iris(uri, name, signature=False)
    v3 = register_iris(uri, name, regularisation=0.05)

    await _promote(local_stack, worker, name, "champion", v1, seen=0)
    served = await _until_tags(uri, name, v1, {"promoter.status": "serving"}, "v1 tagged serving")
    assert served["promoter.aliases"] == "champion"
    assert served["promoter.triton_model"].endswith(f"--v{v1}")
    assert len(served["promoter.digest"]) == 64
    assert "promoter.reason_code" not in served

    set_alias(uri, name, "champion", broken)  # the request names no version: the alias decides
    await produce(
        local_stack.kafka_bootstrap_servers,
        worker.topic("promotion_requested"),
        [(name.encode(), request_bytes(name))],
    )
    (rejection,) = await events_about(local_stack.kafka_bootstrap_servers, worker.topic("model_rejected"), name)
    refused = await _until_tags(uri, name, broken, {"promoter.status": "rejected"}, "broken version tagged rejected")
    assert refused["promoter.reason_code"] == "missing_signature"
    assert refused["promoter.message"] == rejection["data"]["message"]
    assert "promoter.aliases" not in refused
    assert (await asyncio.to_thread(_tags, uri, name, v1))["promoter.status"] == "serving", "v1 kept serving"

    await _promote(local_stack, worker, name, "champion", v3, seen=1)
    await _until_tags(uri, name, v3, {"promoter.status": "serving", "promoter.aliases": "champion"}, "v3 serving")
    retired = await _until_tags(uri, name, v1, {"promoter.status": "retired"}, "v1 retired")
    assert "promoter.aliases" not in retired

    await _promote(local_stack, worker, name, "champion", v1, seen=2)  # roll back
    await _until_tags(uri, name, v1, {"promoter.status": "serving", "promoter.aliases": "champion"}, "v1 back")
    await _until_tags(uri, name, v3, {"promoter.status": "retired"}, "v3 retired after the rollback")

    await _until_history(uri, name, 3)
    history = await asyncio.to_thread(_history, uri, name)
    assert [(e["alias"], e["version"]) for e in history] == [("champion", v1), ("champion", v3), ("champion", v1)]
    assert history[0]["to"] is None
    assert history[1]["to"] == history[0]["from"]
    assert (await asyncio.to_thread(_tags, uri, name, broken))["promoter.status"] == "rejected"


class _TagWritesFail:
    """A proxy in front of the real MLflow that answers 503 to registry tag writes while ``failing`` is set."""

    def __init__(self, upstream: str) -> None:
        self.failing = threading.Event()
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.failing.is_set() and ("set-tag" in self.path or "delete-tag" in self.path):
                    proxy.refused += 1
                    self._answer(503, b'{"error_code":"TEMPORARILY_UNAVAILABLE","message":"down"}', {})
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                request = urllib.request.Request(
                    upstream + self.path, data=body or None, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        self._answer(response.status, response.read(), dict(response.headers))
                except urllib.error.HTTPError as error:
                    self._answer(error.code, error.read(), dict(error.headers))

            def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def _proxy(upstream: str) -> Iterator[_TagWritesFail]:
    proxy = _TagWritesFail(upstream)
    thread = threading.Thread(target=proxy.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()
        thread.join(timeout=10)


async def test_failing_write_back_never_fails_serving_and_catches_up(local_stack: LocalStack, tmp_path: Path) -> None:
    name = f"wbfail-{uuid.uuid4().hex[:6]}"
    uri = local_stack.mlflow_tracking_uri
    v1 = register_iris(uri, name)
    v2 = register_iris(uri, name, regularisation=0.05)

    with _proxy(uri) as proxy:
        proxy.failing.set()
        with running_worker(local_stack, tmp_path, PROMOTER_MLFLOW_TRACKING_URI=proxy.uri) as worker:
            await _promote(local_stack, worker, name, "champion", v1, seen=0)
            await until(
                lambda: asyncio.to_thread(
                    lambda: worker.metric("promoter_registry_writebacks_total", outcome="failed") >= 2
                ),
                timeout_s=30,
                what="write-back retried",
            )
            await _promote(local_stack, worker, name, "champion", v2, seen=1)  # served while write-back fails
            assert worker.metric("promoter_promotions_total", outcome="served") == 2
            assert worker.metric("promoter_promotions_total", outcome="rejected") == 0
            assert await asyncio.to_thread(_tags, uri, name, v1) == {}, "nothing written while MLflow refuses"

            proxy.failing.clear()  # MLflow takes writes again
            await _until_tags(uri, name, v2, {"promoter.status": "serving", "promoter.aliases": "champion"}, "v2")
            await _until_tags(uri, name, v1, {"promoter.status": "retired"}, "v1 retired after the catch-up")
            await _until_history(uri, name, 2)
            history = await asyncio.to_thread(_history, uri, name)
            assert [(e["version"], e["to"] is None) for e in history] == [(v2, True), (v1, False)]
    assert proxy.refused >= 2
