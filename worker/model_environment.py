"""Does the worker's Python environment meet what a model was logged with? Logged, never a rejection.

The parity proof compares Triton's answer with MLflow's prediction in the worker; both run this project's
scikit-learn, so a model trained with another version passes it and may still behave differently. What tells
an on-call engineer is the model's own ``requirements.txt`` and Python version against what is installed here.

``mlflow.pyfunc.load_model`` makes the same comparison unless told not to, but asks ``importlib.metadata`` for
every requirement of every load, each lookup scanning every installed distribution: ~30 ms of the worker's CPU
per promotion (about 7 % of the whole stack's), taken from the promotions running beside it. Here the
installed versions are read once per process (:func:`installed_versions`, at the worker's warm-up) and a model
is checked against them in well under a millisecond.
"""

from __future__ import annotations

import functools
import importlib.metadata
import sys
from collections.abc import Mapping
from pathlib import Path

import mlflow
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

#: What MLflow writes beside MLmodel: the pip requirements the model was logged with.
REQUIREMENTS_FILE = "requirements.txt"


@functools.cache
def installed_versions() -> Mapping[str, str]:
    """Canonical distribution name -> installed version, the first on ``sys.path`` winning (as imports do)."""
    versions: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            versions.setdefault(canonicalize_name(name), distribution.version)
    # An editable MLflow may carry stale metadata; what is imported is what runs (MLflow checks the same).
    versions[canonicalize_name("mlflow")] = mlflow.__version__
    return versions


def unmet_requirements(model_dir: Path, python_version: str | None) -> list[str]:
    """Each requirement of the model this environment does not meet, as a sentence; [] when all are met.

    ``python_version``: the one MLflow recorded for the model (its ``python_function`` flavor), compared by major
    and minor version as MLflow does. Lines that name no package (options, paths, URLs) and requirements whose
    environment marker does not apply here are not checked.
    """
    unmet = []
    logged_with = _major_minor(python_version) if python_version is not None else None
    if logged_with is not None and logged_with != sys.version_info[:2]:
        running = ".".join(map(str, sys.version_info[:3]))
        unmet.append(f"Python {running} runs here, the model was logged with Python {python_version}")
    path = model_dir / REQUIREMENTS_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    installed = installed_versions()
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith("-"):
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = installed.get(canonicalize_name(requirement.name))
        if version is None:
            unmet.append(f"{requirement.name} is not installed, the model was logged with {text}")
        elif requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement.name} {version} is installed, the model was logged with {text}")
    return unmet


def _major_minor(version: str) -> tuple[int, int] | None:
    try:
        release = Version(version).release
    except InvalidVersion:
        return None
    return (release[0], release[1]) if len(release) > 1 else None
