"""Every third-party module the deployables import is declared in pyproject.toml's dependencies.

A module that only arrives as another package's dependency (rich through typer, httptools through
uvicorn[standard]) breaks the day that package drops it. Test-only modules belong in ``dev``.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.paths import REPO

PACKAGES = (
    "runtime",
    "schemas",
    "worker",
    "ingress",
    "gateway",
    "promoter_cli",
    "promoter_client",
    "deploy",
    "console",
)
#: Extras whose modules the deployables import: ``local`` (the local stack), ``console`` (Streamlit).
EXTRAS = ("local", "console")
#: Code that runs in someone else's environment, not ours: Triton's python backend stub, Airflow.
RUNS_ELSEWHERE = (
    *(f"worker/triton_backend/{name}" for name in ("model.py", "light_model.py", "runtime_model.py")),
    *(f"worker/triton_backend/{name}" for name in ("predictors.py", "request_batches.py")),
    "deploy/airflow/",
    "deploy/feast/",  # the feature server's own venv
)


def _normalised(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def declared_distributions() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"], *(r for extra in EXTRAS for r in extras[extra])]
    names = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement) for requirement in requirements)
    return {_normalised(name.group(0)) for name in names if name}


def imported_modules() -> dict[str, set[str]]:
    """Top-level third-party module -> the files importing it (stdlib and our own packages left out)."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative.startswith(RUNS_ELSEWHERE):
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=relative)):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {name.partition(".")[0] for name in names}:
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, set()).add(relative)
    return found


def test_every_imported_third_party_module_is_a_declared_dependency() -> None:
    providers = packages_distributions()
    declared = declared_distributions()
    imported = imported_modules()

    undeclared = {
        module: sorted(files)
        for module, files in imported.items()
        if not {_normalised(d) for d in providers.get(module, [])} & declared
    }

    assert {"aiokafka", "fastapi", "typer"} <= imported.keys(), "the scan must see the deployables' imports"
    assert not undeclared, f"declare these in pyproject.toml [project] dependencies: {undeclared}"
