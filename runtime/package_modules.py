"""Import some modules of a package without running the package's own ``__init__``.

Some packages import far more in their ``__init__`` than the modules a service needs: ``tritonclient.grpc`` imports
its client and with it numpy, to hand out generated protobuf modules; ``uvicorn`` imports its command line (click)
and its process supervisors (multiprocessing, watchfiles), to hand out ``Config`` and ``Server``. In a process whose
start-up is measured (a gateway replica, issue #14 cold start) that is a good part of its imports.

Inside :func:`package_init_skipped` the package is a stand-in module with the package's path but none of its code,
so ``import package.module`` finds and runs only that module (and what it imports). The stand-in is dropped on the
way out: a later ``import package`` runs the real ``__init__``, which finds the modules imported here and uses these
very objects (one set of classes; generated protobuf descriptors registered once). The real package gets them as
attributes before its ``__init__`` runs, as if it had imported them itself (``import package.module`` then
``package.module.name`` works as ever).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

_lock = threading.RLock()


@contextmanager
def package_init_skipped(package: str) -> Iterator[ModuleType]:
    """While inside, ``package``'s modules import without its ``__init__``; yields the stand-in (a module that
    reads a name from the package itself finds it only once set on the stand-in). When the package is imported
    already, yields it and changes nothing."""
    with _lock:
        if package in sys.modules:
            yield sys.modules[package]
            return
        spec = importlib.util.find_spec(package)
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError(f"no package named {package!r}", name=package)
        stand_in = importlib.util.module_from_spec(spec)  # the package's path; its code is not run
        sys.modules[package] = stand_in
        try:
            yield stand_in
        finally:
            if sys.modules.get(package) is stand_in:
                del sys.modules[package]
                _give_when_imported(package, stand_in)


def _give_when_imported(package: str, stand_in: ModuleType) -> None:
    """Once ``package`` is imported for real, it gets the modules imported under ``stand_in`` as attributes."""
    prefix = f"{package}."
    modules = {
        name: value
        for name, value in vars(stand_in).items()
        if isinstance(value, ModuleType) and value.__name__.startswith(prefix)
    }
    waiting = next((f for f in sys.meta_path if isinstance(f, _SubmodulesGiven) and f.package == package), None)
    if waiting is not None:  # skipped twice before the real import: one finder gives all
        waiting.modules.update(modules)
    else:
        sys.meta_path.insert(0, _SubmodulesGiven(package, modules))


class _SubmodulesGiven(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``package`` is imported for real, hands its spec over with a loader that sets the
    modules imported under the stand-in as the package's attributes before running its code. Used once."""

    def __init__(self, package: str, modules: dict[str, ModuleType]) -> None:
        self.package = package
        self.modules = modules

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.package:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _GivingLoader(spec.loader, self.modules)
        return spec


class _GivingLoader(importlib.abc.Loader):
    """``loader``, setting ``modules`` on the module before running its code."""

    def __init__(self, loader: importlib.abc.Loader, modules: dict[str, ModuleType]) -> None:
        self.loader = loader
        self.modules = modules

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        for name, submodule in self.modules.items():
            setattr(module, name, submodule)
        self.loader.exec_module(module)
