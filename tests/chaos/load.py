"""Constant-rate ``tritonclient.http`` load through the gateways, every answer recorded.

Each client sends at its own fixed rate, alternating between the gateways, by registered model name,
exactly as a Triton user's code would. A poisoning client sends a row of NaN: its requests must fail
with a 400 and nobody else's may fail.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.http import InferInput
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

GOOD_ROW = (5.1, 3.5, 1.4, 0.2)
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Outcome:
    at: float
    client: str
    poison: bool
    ok: bool
    status: str  # "200", Triton's HTTP status on an error, or the exception's name when none came back
    message: str
    version: str | None = None  # the version that answered


@dataclass(frozen=True)
class TensorShape:
    name: str
    datatype: str

    def request(self, row: tuple[float, ...]) -> InferInput:
        data = np.asarray([row], dtype=np.float64 if self.datatype == "FP64" else np.float32)
        tensor = InferInput(self.name, list(data.shape), self.datatype)
        tensor.set_data_from_numpy(data)
        return tensor


async def input_tensor(gateway: str, model: str) -> TensorShape:
    """The served model's input tensor, from the gateway's own v2 metadata."""
    client = InferenceServerClient(url=gateway.removeprefix("http://"))
    try:
        metadata: dict[str, Any] = await client.get_model_metadata(model)
    finally:
        await client.close()
    first = metadata["inputs"][0]
    return TensorShape(name=str(first["name"]), datatype=str(first["datatype"]))


@dataclass
class ConstantLoad:
    """``good`` clients at ``rate`` requests/s each (plus ``poison`` clients), until :meth:`stop`."""

    gateways: list[str]
    model: str
    tensor: TensorShape
    good: int = 4
    rate: float = 25.0
    poison: int = 0
    poison_rate: float = 20.0
    outcomes: list[Outcome] = field(default_factory=list)
    _running: bool = True
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        lanes = [(f"good-{i}", False, self.rate) for i in range(self.good)]
        lanes += [(f"poison-{i}", True, self.poison_rate) for i in range(self.poison)]
        self._tasks = [asyncio.create_task(self._client(name, poison, rate)) for name, poison, rate in lanes]

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)

    async def until_flowing(self, answers: int = 40, timeout_s: float = 60.0) -> None:
        """Wait until ``answers`` requests came back (the load is established before a fault)."""
        deadline = time.monotonic() + timeout_s
        while len(self.outcomes) < answers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"load did not start: {len(self.outcomes)} answers in {timeout_s} s")
            await asyncio.sleep(0.05)  # poll

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.at <= end]

    async def _client(self, name: str, poison: bool, rate: float) -> None:
        clients = [InferenceServerClient(url=g.removeprefix("http://")) for g in self.gateways]
        row = (float("nan"), *GOOD_ROW[1:]) if poison else GOOD_ROW
        interval = 1.0 / rate
        next_at = time.monotonic()
        sent = 0
        try:
            while self._running:
                client = clients[sent % len(clients)]
                sent += 1
                self.outcomes.append(await self._one(client, name, poison, row))
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # the constant rate's pacing
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    async def _one(self, client: InferenceServerClient, name: str, poison: bool, row: tuple[float, ...]) -> Outcome:
        try:
            result = await client.infer(self.model, [self.tensor.request(row)], timeout=int(REQUEST_TIMEOUT_S * 1e6))
        except InferenceServerException as error:
            return Outcome(time.monotonic(), name, poison, False, str(error.status()), str(error.message()))
        except Exception as error:
            return Outcome(time.monotonic(), name, poison, False, type(error).__name__, str(error))
        version = result.get_response().get("model_version")
        return Outcome(time.monotonic(), name, poison, True, "200", "", None if version is None else str(version))


def failures(outcomes: list[Outcome], *, poison: bool = False) -> list[Outcome]:
    return [o for o in outcomes if o.poison == poison and not o.ok]


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    """Answers by status, for the report: {"200": 812, "503": 3}."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return dict(sorted(counts.items()))
