"""The replica's public gRPC server: the native front (``gateway/grpc_front_go/``, Go) or the Python one alone.

``PROMOTER_GATEWAY_GRPC_FRONT=native`` (the default): the Go program ``promoter-grpc-front`` listens on
``PROMOTER_GATEWAY_GRPC_PORT`` and answers ``ModelInfer`` itself when the routing snapshot decides it; the Python
server (:class:`gateway.grpc_api.GrpcServer`) listens on a loopback port of its own and is the slow path for
everything else (the other RPCs, a model/alias/version or a policy the snapshot cannot decide, shadow copies,
any Triton failure). ``python``: the Python server alone on the public port.

This module owns the child process and what it is fed, as newline JSON on its stdin (the protocol is in
``gateway/grpc_front_go/main.go``):

* per changed model, its routes, the default route, the A/B bucket table (:func:`routing_policy.weighted_alias`
  per bucket) and whether a shadow copy may be due; the policy stays here, Go only looks things up;
* the Triton endpoints the slow path's rotation (:class:`gateway.endpoint_rotation.EndpointRotation`) holds
  out, whenever that changes; Go sends what lands on one of them to the slow path, whose trials let it back;
* on demand (each scrape of ``/metrics``), Go's counts, merged by :class:`FrontCollector` into
  ``gateway_requests_total``, ``gateway_errors_total`` and ``gateway_request_duration_seconds``.

Go answers a Triton failure itself, with the status the slow path would give (its copy of
:func:`gateway.triton_grpc.upstream_error`, kept equal by shared test vectors), except one after which Triton
provably did not run the request (no connection, or the model not on that endpoint): that request goes to the
slow path, whose rotation sends it elsewhere, and Go reports the failure so the rotation ejects what failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from gateway.endpoint_rotation import ENDPOINT_SCOPE, MODEL_SCOPE, Choice, EndpointRotation
from gateway.grpc_api import GatewayServicer, GrpcServer
from gateway.inference import ALIAS_HEADER
from gateway.metrics import GRPC, REQUEST_BUCKETS_S, GatewayMetrics
from gateway.responses import ALIAS_RESPONSE_HEADER, VERSION_RESPONSE_HEADER
from gateway.routing_policy import weighted_alias
from gateway.routing_table import Change, ModelRoutes, RoutingState
from gateway.settings import GatewaySettings
from gateway.v2_api import API
from runtime.logging import get_logger

log = get_logger(__name__)

NATIVE = "native"
PYTHON = "python"
BINARY_NAME = "promoter-grpc-front"
#: Where ``make grpc-front`` builds it in a checkout.
BUILT_BINARY = Path(__file__).resolve().parent.parent / ".cache" / "bin" / BINARY_NAME
MAKE_TARGET = "make grpc-front"
_START_TIMEOUT_S = 15.0
_METRICS_TIMEOUT_S = 2.0
_STOP_GRACE_S = 5.0
#: First and longest wait between attempts to start a new child after one died.
_RESTART_BACKOFF_S = (0.2, 5.0)


class NativeFrontMissing(RuntimeError):
    """``PROMOTER_GATEWAY_GRPC_FRONT=native`` and no binary: says how to get one."""


def front_binary(settings: GatewaySettings) -> Path:
    """The native front's executable: the setting, else ``promoter-grpc-front`` on PATH, else the checkout's build."""
    if settings.grpc_front_binary:
        path = Path(settings.grpc_front_binary)
    else:
        found = shutil.which(BINARY_NAME)
        path = Path(found) if found else BUILT_BINARY
    if not path.is_file():
        raise NativeFrontMissing(
            f"the native gRPC front {path} is missing: build it with `{MAKE_TARGET}` (needs Go), "
            "or set PROMOTER_GATEWAY_GRPC_FRONT=python"
        )
    return path


def model_entry(model: ModelRoutes, default_alias: str) -> dict[str, Any]:
    """What the native front needs to route ``model`` without policy of its own (see the module doc)."""
    policy = model.policy
    buckets = None
    shadow = False
    if policy is not None:
        buckets = [weighted_alias(policy.weights, bucket) for bucket in range(100)]
        shadow = policy.shadow_alias in model.routes
    return {
        "routes": [
            {"alias": alias, "triton": route.triton_model_name, "version": route.version}
            for alias, route in model.routes.items()
        ],
        "default": default_alias if default_alias in model.routes else "",
        "buckets": buckets,
        "shadow": shadow,
    }


def ejected_entry(rotation: EndpointRotation) -> dict[str, Any]:
    endpoints: list[int] = []
    models: dict[str, list[int]] = {}
    for index, triton_model in rotation.ejected_keys():
        if triton_model is None:
            endpoints.append(index)
        else:
            models.setdefault(triton_model, []).append(index)
    return {"endpoints": sorted(endpoints), "models": models}


class FrontCollector(Collector):
    """``gateway_requests_total``, ``gateway_errors_total`` and ``gateway_request_duration_seconds`` as the Python
    metrics hold them plus what the native front answered (its last report: :meth:`NativeFront.refresh_metrics`
    asks for one before each scrape). Replaces those three in the registry."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.report: dict[str, Any] = {}
        for metric in (metrics.requests, metrics.errors, metrics.latency):
            metrics.registry.unregister(metric)
        metrics.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        report = self.report
        counts = {
            "gateway_requests": [
                (
                    {
                        "model": r["model"],
                        "alias": r["alias"],
                        "version": r["version"],
                        "api": API,
                        "protocol": GRPC,
                        "code": r["label"],
                    },
                    r["value"],
                )
                for r in report.get("requests", ())
            ],
            "gateway_errors": [
                ({"model": r["model"], "alias": r["alias"], "version": r["version"], "reason": r["label"]}, r["value"])
                for r in report.get("errors", ())
            ],
        }
        for family in itertools.chain(self.metrics.requests.collect(), self.metrics.errors.collect()):
            yield _with_added(
                family, [(f"{family.name}_total", labels, value) for labels, value in counts[family.name]]
            )
        for family in self.metrics.latency.collect():
            added: list[tuple[str, dict[str, str], float]] = []
            for entry in report.get("latency", ()):
                labels = {"model": entry["model"], "api": API, "protocol": GRPC}
                for bound, count in zip(REQUEST_BUCKETS_S, entry["buckets"], strict=True):
                    added.append((f"{family.name}_bucket", {**labels, "le": _le(bound)}, count))
                added.append((f"{family.name}_bucket", {**labels, "le": "+Inf"}, entry["count"]))
                added.append((f"{family.name}_count", labels, entry["count"]))
                added.append((f"{family.name}_sum", labels, entry["sum"]))
            yield _with_added(family, added)


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it in ``le`` (``repr`` of the float: 0.005, 1.0, 10.0)."""
    return repr(float(bound))


def _with_added(family: Metric, added: Sequence[tuple[str, dict[str, str], float]]) -> Metric:
    """``family`` with ``added`` samples summed into the same series, or appended as new series."""
    if not added:
        return family
    samples = list(family.samples)
    where = {(s.name, tuple(sorted(s.labels.items()))): index for index, s in enumerate(samples)}
    for name, labels, value in added:
        key = (name, tuple(sorted(labels.items())))
        index = where.get(key)
        if index is None:
            where[key] = len(samples)
            samples.append(Sample(name, labels, float(value)))
        else:
            samples[index] = samples[index]._replace(value=samples[index].value + value)
    family.samples = samples
    return family


class NativeFront:
    """The ``promoter-grpc-front`` child process, fed from ``state`` and ``rotation`` (see the module doc)."""

    def __init__(
        self,
        settings: GatewaySettings,
        state: RoutingState,
        rotation: EndpointRotation,
        metrics: GatewayMetrics,
        *,
        timeout_s: float,
    ) -> None:
        self.settings = settings
        self.state = state
        self.rotation = rotation
        self.metrics = metrics
        self.collector = FrontCollector(metrics)
        self.timeout_s = timeout_s
        self.address = ""
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._metrics_asked = itertools.count(1)
        self._metrics_waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._stopping = False
        self._binary = Path(BINARY_NAME)
        self._slow_path = ""
        self._restarting: asyncio.Task[None] | None = None

    def _config(self, slow_path: str) -> dict[str, Any]:
        settings = self.settings
        return {
            "listen": f"{settings.host}:{settings.grpc_port}",
            "slow_path": slow_path,
            "endpoints": self.rotation.endpoints,
            "client_header": settings.client_id_header.lower(),
            "alias_header": ALIAS_HEADER,
            "version_trailer": VERSION_RESPONSE_HEADER.lower(),
            "alias_trailer": ALIAS_RESPONSE_HEADER.lower(),
            "timeout_s": self.timeout_s,
            "max_message_bytes": settings.max_request_bytes,
            "latency_buckets": list(REQUEST_BUCKETS_S),
            "stop_grace_s": _STOP_GRACE_S,
            "threads": settings.grpc_front_threads,
        }

    async def start(self, slow_path: str) -> None:
        """Start the child, feed it the whole table, return once it listens (its address in ``address``)."""
        try:
            self._binary = front_binary(self.settings)
        except NativeFrontMissing as missing:
            # One line for people; the traceback is uvicorn's to print as the start-up fails.
            log.error("the native gRPC front is missing: not starting", reason=str(missing))  # noqa: TRY400
            raise
        self._slow_path = slow_path
        # From here every change of the table or the rotation is sent (to the child of the moment).
        self.state.listeners.append(self._routing_changed)
        self.rotation.listeners.append(self._rotation_changed)
        try:
            await self._spawn(f"{self.settings.host}:{self.settings.grpc_port}")
        except BaseException:
            await self.stop()
            raise

    async def _spawn(self, listen: str) -> None:
        """One child on ``listen``, fed the whole table and rotation; returns once it listens."""
        config = {**self._config(self._slow_path), "listen": listen}
        process = await asyncio.create_subprocess_exec(
            str(self._binary),
            "--config",
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        self._process = process
        self._send(
            {
                "models": {
                    name: model_entry(model, self.settings.default_alias)
                    for name, model in self.state.table.models.items()
                }
            }
        )
        self._rotation_changed()
        listening = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(process, listening), name="read the native gRPC front")
        try:
            self.address = await asyncio.wait_for(listening, _START_TIMEOUT_S)
        except BaseException:
            if process.returncode is None:  # started but not listening in time: not left behind
                process.kill()
            raise

    async def _restart(self) -> None:
        """Start a new child on the same address after one died, retrying with a growing backoff until one listens
        (or the replica stops)."""
        backoff_s = _RESTART_BACKOFF_S[0]
        while not self._stopping:
            try:
                await self._spawn(self.address)
            except Exception as error:
                log.error(  # noqa: TRY400 (one line for people; the reason is in it)
                    "the native gRPC front could not be restarted", error=str(error), retry_in_s=backoff_s
                )
                await asyncio.sleep(backoff_s)  # a backoff between attempts, not a wait for a condition
                backoff_s = min(backoff_s * 2, _RESTART_BACKOFF_S[1])
                continue
            self.metrics.grpc_front_restarts.inc()
            log.info("the native gRPC front was restarted", address=self.address)
            return

    def _send(self, message: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing() or process.returncode is not None:
            return
        process.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def _routing_changed(self, changes: Sequence[Change | None]) -> None:
        names = {change.model_name for change in changes if change is not None}
        if not names:
            return
        table = self.state.table
        default = self.settings.default_alias
        models = {}
        for name in names:
            model = table.model(name)
            models[name] = model_entry(model, default) if model is not None else None
        self._send({"models": models})

    def _rotation_changed(self) -> None:
        self._send({"ejected": ejected_entry(self.rotation)})

    async def _read(self, process: asyncio.subprocess.Process, listening: asyncio.Future[str]) -> None:
        if process.stdout is None:
            raise RuntimeError("the native gRPC front was started without a stdout pipe")
        async for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("unreadable line from the native gRPC front", line=line[:200].decode(errors="replace"))
                continue
            if "listening" in message and not listening.done():
                listening.set_result(message["listening"])
            elif "metrics" in message:
                waiting = self._metrics_waiting.pop(message["metrics"], None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
            elif "failed" in message:
                self._failed(message["failed"])
        code = await process.wait()
        if not listening.done():
            listening.set_exception(RuntimeError(f"the native gRPC front exited at start (exit code {code})"))
        elif not self._stopping:
            log.error("the native gRPC front exited: starting a new one on its address", exit_code=code)
            self._restarting = asyncio.create_task(self._restart(), name="restart the native gRPC front")

    def _failed(self, failure: dict[str, Any]) -> None:
        """A Triton failure on the fast path before Triton ran the request (the child classified it with its copy
        of :func:`gateway.triton_grpc.upstream_error`: ``reason`` is the retry reason), told to the rotation as the
        slow path's own would be; the child then sent the request to the slow path."""
        reason = failure["reason"]
        scope = MODEL_SCOPE if reason == "unknown_model" else ENDPOINT_SCOPE
        self.rotation.failed(Choice(failure["endpoint"]), failure["triton_model"], scope=scope, reason=reason)

    async def refresh_metrics(self) -> None:
        """Ask the child for its counts (before a scrape); the last report stays when it does not answer."""
        if self._process is None or self._process.returncode is not None:
            return
        asked = next(self._metrics_asked)
        answer = self._metrics_waiting[asked] = asyncio.get_running_loop().create_future()
        self._send({"metrics": asked})
        try:
            self.collector.report = await asyncio.wait_for(answer, _METRICS_TIMEOUT_S)
        except TimeoutError:
            log.warning("the native gRPC front did not report its metrics in time", timeout_s=_METRICS_TIMEOUT_S)
        finally:
            self._metrics_waiting.pop(asked, None)

    async def stop(self) -> None:
        """Close its stdin (it stops serving, in-flight requests finish within its grace), kill it if it lingers."""
        self._stopping = True
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(BaseException):
                await self._restarting
        with contextlib.suppress(ValueError):
            self.state.listeners.remove(self._routing_changed)
        with contextlib.suppress(ValueError):
            self.rotation.listeners.remove(self._rotation_changed)
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), _STOP_GRACE_S + 2)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


class GrpcFront:
    """The replica's gRPC API as the app starts and stops it: ``server`` answers on the public port, or the
    native front does and ``server`` is its slow path on a loopback port of its own."""

    def __init__(
        self,
        settings: GatewaySettings,
        servicer: GatewayServicer,
        state: RoutingState,
        rotation: EndpointRotation,
        metrics: GatewayMetrics,
        *,
        timeout_s: float,
    ) -> None:
        self.native: NativeFront | None = None
        host, port = settings.host, settings.grpc_port
        if settings.grpc_front == NATIVE:
            self.native = NativeFront(settings, state, rotation, metrics, timeout_s=timeout_s)
            host, port = "127.0.0.1", 0
        self.server = GrpcServer(servicer, host=host, port=port, max_message_bytes=settings.max_request_bytes)

    @property
    def port(self) -> int:
        """The public port (the one asked for, or the one given when that was 0)."""
        if self.native is not None:
            return int(self.native.address.rpartition(":")[2])
        return self.server.port

    async def start(self) -> None:
        await self.server.start()
        if self.native is not None:
            await self.native.start(f"127.0.0.1:{self.server.port}")

    async def stop(self) -> None:
        if self.native is not None:
            await self.native.stop()
        await self.server.stop()

    async def refresh_metrics(self) -> None:
        if self.native is not None:
            await self.native.refresh_metrics()
