"""Every flavor module of this package, in detection order, and which flavor serves a given MLmodel."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worker.flavors.flavor import Flavor

NOT_FLAVOR_MODULES = frozenset({"catalog", "flavor"})


def _discover() -> tuple[Flavor, ...]:
    found: list[Flavor] = []
    for module_info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module_info.name in NOT_FLAVOR_MODULES:
            continue
        module = importlib.import_module(f"{__package__}.{module_info.name}")
        flavor = getattr(module, "FLAVOR", None)
        if flavor is None:
            raise ImportError(f"{module.__name__} must define FLAVOR, the flavor it serves")
        found.append(flavor)
    ranks = [flavor.detection_rank for flavor in found]
    if len(set(ranks)) != len(ranks):
        raise ImportError(f"flavor detection ranks must be unique: {sorted(ranks)}")
    return tuple(sorted(found, key=lambda flavor: flavor.detection_rank))


FLAVORS: tuple[Flavor, ...] = _discover()


def detect(mlmodel_flavors: Mapping[str, Any]) -> Flavor | None:
    """The first flavor, in detection order, that serves a model with these MLmodel flavors."""
    return next((flavor for flavor in FLAVORS if flavor.detects(mlmodel_flavors)), None)


def supported() -> str:
    """The served flavors and their Triton backends, for people."""
    return ", ".join(f"{flavor.name} ({flavor.backend} backend)" for flavor in FLAVORS)
