"""Benchmark: does the gateway's own HTTP/1.1 client to Triton still pay for itself? (``make bench`` ->
``.bench/triton_http_client.json``)

The gateway posts every inference to Triton through ``gateway/triton_connections.ConnectionPool`` (an
asyncio protocol fed by httptools). The kept libraries that could do the same are aiohttp (already a
dependency, through ``tritonclient.http.aio``) and httpx. This runs the three clients side by side
against one real ``tritonserver`` serving a numpy-only python model, with the same body, in
interleaved rounds:

* ``*_cpu_us``: the client process's CPU per request (what the gateway pays per inference), 300
  sequential requests per round;
* ``*_p50_ms``: sequential round-trip p50;
* ``*_rps_16``: requests/s with 16 concurrent callers for 2 s;
* ``pool_cpu_ratio_vs_<library>``: our pool's CPU per request over the library's (below 1: ours is cheaper).

The pool stays while its CPU ratio against both libraries is clearly below 1 (it was 0.3-0.5 when it was
written); otherwise the gateway should move to the library.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import tritonclient.http as triton_http

from deploy.stack.process import ManagedProcess, poll_until, stop_all, wait_all_ready
from deploy.stack.triton_server import triton_spec_on_free_ports
from gateway.triton_connections import ConnectionPool, Endpoint
from tests.benchmarks.bench_files import merge_figures
from tests.integration.deploy.test_triton import write_affine_model

MODEL = "bench-affine"
SEQUENTIAL = 300
CONCURRENT = 16
CONCURRENT_S = 2.0
ROUNDS = 3
BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
).encode()
HEADERS = {"Content-Type": "application/json"}
PATH = f"/v2/models/{MODEL}/infer"

Post = Callable[[], Awaitable[int]]


async def sequential(post: Post) -> tuple[float, float]:
    """(CPU µs per request, p50 ms) over ``SEQUENTIAL`` requests one after another."""
    samples: list[float] = []
    cpu_before = time.process_time()
    for _ in range(SEQUENTIAL):
        began = time.perf_counter()
        status = await post()
        samples.append(time.perf_counter() - began)
        if status != 200:
            raise RuntimeError(f"Triton answered {status}")
    cpu_us = (time.process_time() - cpu_before) / SEQUENTIAL * 1e6
    return cpu_us, statistics.median(samples) * 1000


async def concurrent(post: Post) -> float:
    """Requests/s with ``CONCURRENT`` callers for ``CONCURRENT_S`` seconds."""
    done = 0
    deadline = time.perf_counter() + CONCURRENT_S

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            if await post() != 200:
                raise RuntimeError("Triton refused a request")
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CONCURRENT)))
    return done / (time.perf_counter() - began)


async def measure(address: str) -> dict[str, Any]:
    pool = ConnectionPool(Endpoint.parse(address), max_connections=CONCURRENT, connect_timeout_s=5.0)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENT))
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT))
    url = f"http://{address}{PATH}"

    async def with_pool() -> int:
        return (await pool.post(PATH, BODY, HEADERS)).status

    async def with_aiohttp() -> int:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            await response.read()
            return response.status

    async def with_httpx() -> int:
        return (await client.post(url, content=BODY, headers=HEADERS)).status_code

    clients: dict[str, Post] = {"pool": with_pool, "aiohttp": with_aiohttp, "httpx": with_httpx}
    samples: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "p50": [], "rps": []} for name in clients}
    try:
        for post in clients.values():  # warm every path: connections open, code paths imported
            await sequential(post)
        for _ in range(ROUNDS):
            for name, post in clients.items():
                cpu_us, p50_ms = await sequential(post)
                samples[name]["cpu"].append(cpu_us)
                samples[name]["p50"].append(p50_ms)
                samples[name]["rps"].append(await concurrent(post))
    finally:
        await pool.close()
        await session.close()
        await client.aclose()
    result: dict[str, Any] = {}
    for name, figures in samples.items():
        result[f"{name}_cpu_us"] = round(statistics.median(figures["cpu"]), 1)
        result[f"{name}_p50_ms"] = round(statistics.median(figures["p50"]), 3)
        result[f"{name}_rps_16"] = round(statistics.median(figures["rps"]), 1)
    for library in ("aiohttp", "httpx"):
        result[f"pool_cpu_ratio_vs_{library}"] = round(result["pool_cpu_us"] / result[f"{library}_cpu_us"], 3)
    return result


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-triton-client-") as tmp:
        run_dir = Path(tmp)
        repository = run_dir / "models"
        write_affine_model(repository, MODEL)
        spec = triton_spec_on_free_ports(run_dir, repository)
        triton = ManagedProcess(spec, run_dir / "tritonserver.log")
        triton.start()
        try:
            wait_all_ready([triton])
            address = spec.endpoints["triton_http"]
            admin = triton_http.InferenceServerClient(address, network_timeout=60)
            admin.load_model(MODEL)
            if not poll_until(lambda: admin.is_model_ready(MODEL), 60):
                raise RuntimeError(f"{MODEL} not ready within 60 s")
            admin.close()
            result = asyncio.run(measure(address))
        finally:
            stop_all([triton])
    path = merge_figures("triton_http_client", result)
    for name in ("pool", "aiohttp", "httpx"):
        print(
            f"{name:8} {result[f'{name}_cpu_us']:7.1f} µs CPU/request   p50 {result[f'{name}_p50_ms']:.3f} ms   "
            f"{result[f'{name}_rps_16']:8.1f} req/s at {CONCURRENT}"
        )
    print(
        f"our pool's CPU per request: {result['pool_cpu_ratio_vs_aiohttp']}x aiohttp's, "
        f"{result['pool_cpu_ratio_vs_httpx']}x httpx's (it stays while clearly below 1)"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
