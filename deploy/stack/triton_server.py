"""NVIDIA Triton of the local stack: ``tritonserver`` from the ``nvidia-pytriton`` wheel, python backend.

Recipe from notes/triton-local.md: run the binary from its installed location (its RPATH finds the
bundled libraries), give it a private backend directory of *symlinks*, put the venv's ``bin`` first on
PATH (the stub embeds Python in isolated mode and finds site-packages through ``pyvenv.cfg``) and the
base interpreter's LIBDIR on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from deploy.stack.errors import StackError
from deploy.stack.ports import LOOPBACK, free_ports
from deploy.stack.probes import http_ok
from deploy.stack.process import ManagedProcess, ReadyCheck, ServiceSpec

NAME = "tritonserver"
READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 10
SHM_PREFIX = "/dev/shm/triton_python_backend_shm_region_"  # noqa: S108 (Triton's name, only read)


def triton_home() -> Path:
    """``site-packages/pytriton/tritonserver`` holding ``bin/tritonserver``, or :class:`StackError`."""
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        home = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        binary = home / "bin" / "tritonserver"
        if binary.is_file() and os.access(binary, os.X_OK):
            return home
    raise StackError("tritonserver binary not found: install the `local` extra")


def python_stub(home: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise StackError(f"triton python backend stub for Python {version} not found under {home}")
    return stub


def make_backend_dir(home: Path, target: Path) -> Path:
    """``target/python/`` with symlinks to the python backend and the stub for this interpreter."""
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = [
        home / "backends" / "python" / "libtriton_python.so",
        home / "backends" / "python" / "triton_python_backend_utils.py",
        python_stub(home),
    ]
    for source in sources:
        link = python_dir / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return target


#: One BLAS thread per python-backend stub. Each stub (one per loaded version, and the shared sklearn runtime)
#: imports numpy, whose OpenBLAS starts a thread per core at import: 0.2 CPU-seconds per numpy import on this
#: 2-core machine, against 0.1 with one thread (measured side by side), and at serving time several stubs each
#: spreading one small batch over every core only oversubscribes them. deploy/k8s/triton.yaml sets the same.
BLAS_THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def server_env() -> dict[str, str]:
    env = {**BLAS_THREADS, **os.environ}  # an operator's own setting wins
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join([venv_bin, *(p for p in env.get("PATH", "").split(os.pathsep) if p)])
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        existing = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(libdir), *existing])
    env.pop("PYTHONPATH", None)
    return env


def shm_regions_of(pids: Sequence[int]) -> list[Path]:
    """The python-backend shared-memory files mapped by ``pids`` (what a SIGKILLed Triton leaves behind)."""
    found: set[Path] = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith(SHM_PREFIX) and not parts[5].endswith("(deleted)"):
                found.add(Path(parts[5]))
    return sorted(found)


def _ready(http_port: int) -> ReadyCheck:
    url = f"http://{LOOPBACK}:{http_port}/v2/health/ready"

    def check(process: ManagedProcess) -> bool:
        return http_ok(url)

    return check


def triton_spec(
    *,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    run_dir: Path,
    model_repository: Path,
    extra_args: Sequence[str] = (),
) -> ServiceSpec:
    """A ``tritonserver`` in explicit model-control mode; ``extra_args`` go last (e.g. the restricted-API flags)."""
    home = triton_home()
    backends = make_backend_dir(home, run_dir / "triton" / "backends")
    model_repository.mkdir(parents=True, exist_ok=True)
    return ServiceSpec(
        name=NAME,
        argv=[
            str(home / "bin" / "tritonserver"),
            f"--model-repository={model_repository.resolve()}",
            "--model-control-mode=explicit",
            f"--backend-directory={backends.resolve()}",
            f"--http-address={LOOPBACK}",
            f"--http-port={http_port}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={grpc_port}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            "--disable-auto-complete-config",
            "--strict-readiness=false",
            *extra_args,
        ],
        env=server_env(),
        cwd=run_dir / "triton",
        ready=_ready(http_port),
        ready_timeout_s=READY_TIMEOUT_S,
        stop_timeout_s=EXIT_TIMEOUT_S + 5.0,
        leftovers_after_kill=shm_regions_of,
        ports=(http_port, grpc_port),
        endpoints={
            "triton_http": f"{LOOPBACK}:{http_port}",
            "triton_grpc": f"{LOOPBACK}:{grpc_port}",
            "triton_metrics": f"http://{LOOPBACK}:{metrics_port}/metrics",
        },
    )


def triton_spec_on_free_ports(run_dir: Path, model_repository: Path, *, extra_args: Sequence[str] = ()) -> ServiceSpec:
    """Another ``tritonserver`` (a second replica on a shared repository, a restricted one) on free ports;
    its addresses are in ``endpoints``: ``triton_http``, ``triton_grpc``, ``triton_metrics``."""
    http_port, grpc_port, metrics_port = free_ports(3)
    return triton_spec(
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        run_dir=run_dir,
        model_repository=model_repository,
        extra_args=extra_args,
    )
