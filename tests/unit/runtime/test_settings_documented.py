"""Every environment variable the services read appears in the README's settings table."""

from __future__ import annotations

import importlib
import pkgutil
import re

from runtime.settings import PromoterSettings
from runtime.settings_env import documented_name
from tests.paths import REPO
from worker.triton_backend import MODULES_INSIDE_TRITON

ROOT = REPO
PACKAGES = ("runtime", "schemas", "worker", "gateway", "ingress", "promoter_cli", "promoter_client", "console")


def _all_settings_classes() -> set[type[PromoterSettings]]:
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if module.name not in MODULES_INSIDE_TRITON:
                importlib.import_module(module.name)
    found: set[type[PromoterSettings]] = set()
    pending = list(PromoterSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def env_names() -> set[str]:
    names: set[str] = set()
    for cls in _all_settings_classes():
        names.update(documented_name(cls, field) for field in cls.model_fields)
    return names


def _readme_table_names() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\|\s*`(PROMOTER_[A-Z0-9_]+)`", readme, flags=re.MULTILINE))


def test_every_setting_is_in_the_readme_table() -> None:
    missing = sorted(env_names() - _readme_table_names())
    assert not missing, f"document these in README.md's settings table: {missing}"


def test_the_readme_documents_no_setting_that_does_not_exist() -> None:
    unknown = sorted(_readme_table_names() - env_names())
    assert not unknown, f"README.md documents settings no code reads: {unknown}"
