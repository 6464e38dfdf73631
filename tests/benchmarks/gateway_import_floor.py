"""The floor under the gateway's cold start: the modules a replica imports before ``/ready`` that are not the project's.

Run as a script by ``tests/benchmarks/gateway_scale.py``, in two fresh processes:

* ``python gateway_import_floor.py list``: imports what a gateway replica imports before it answers ``/ready`` (as
  ``gateway.start`` does: the replay side, uvicorn's parts, the serving side) and prints, in import order, the
  modules that came with it and are not the project's: the standard library's and the installed libraries'
  (pydantic, pydantic-settings, structlog, prometheus-client, aiokafka, uvicorn, grpc, ...).
* ``python gateway_import_floor.py import NAMES_FILE``: imports those modules and none of the project's, except
  ``gateway.start`` and ``runtime.package_modules`` (uvicorn's parts and tritonclient's gRPC messages are imported
  without their packages' ``__init__``, as the gateway imports them), prints ``{"modules": N}`` and exits.

Spawn -> exit of the second is what any process pays that starts with the gateway's libraries, before it reads one
record or runs one line of the gateway: the least a gateway's cold start can take with them.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENT = Path(sys.prefix).resolve()
"""The installed libraries' environment (the project's ``.venv`` lies inside the project's directory)."""
SKIPPED_PACKAGE_INIT = "tritonclient.grpc"
"""Imported without its ``__init__`` by :mod:`gateway.kserve_messages` (uvicorn's parts: by
:func:`gateway.start.uvicorn_parts`)."""


def _of_the_project(module: ModuleType) -> bool:
    if module.__name__.startswith("__editable__"):  # an editable install's finder: no wheel has it
        return True
    path = getattr(module, "__file__", None)
    if path is None:
        return False
    where = Path(path).resolve()
    return where.is_relative_to(PROJECT_ROOT) and not where.is_relative_to(ENVIRONMENT)


def libraries_before_ready() -> list[str]:
    """The modules, not the project's, that a gateway replica has imported when it answers ``/ready``."""
    before = set(sys.modules)
    # As gateway.start.main and serve import them: settings, logging, the event loop, the replay side ...
    for module in ("gateway.settings", "runtime.logging", "runtime.service_help", "runtime.settings", "uvloop"):
        importlib.import_module(module)
    importlib.import_module("gateway.replica")
    from gateway.start import SERVING_MODULES, uvicorn_parts  # part of what is listed

    uvicorn_parts()  # ... then, in a worker thread while the replay runs, uvicorn's parts and the serving side
    for module in SERVING_MODULES:
        importlib.import_module(module)
    return [
        name
        for name, module in list(sys.modules.items())
        if name not in before and _importable(module) and not _of_the_project(module)
    ]


def _importable(module: object) -> bool:
    """Not a module an extension registered under a name of its own (Cython's ``_cython_3_2_8``: no spec)."""
    return isinstance(module, ModuleType) and getattr(module, "__spec__", None) is not None


def import_libraries(names: list[str]) -> int:
    """Import ``names`` as the gateway does (see the module's doc; the garbage collector off, as in the gateway's
    start-up); how many were imported."""
    gc.disable()
    from gateway.start import uvicorn_parts
    from runtime.package_modules import package_init_skipped

    uvicorn_parts()
    with package_init_skipped(SKIPPED_PACKAGE_INIT):
        for name in names:
            if name not in sys.modules:
                importlib.import_module(name)
    return sum(name in sys.modules for name in names)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent  # on the path as the script's directory: its gateway.py would shadow
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]  # the gateway package
    if sys.argv[1] == "list":
        print(json.dumps(libraries_before_ready()))
    else:
        print(json.dumps({"modules": import_libraries(json.loads(Path(sys.argv[2]).read_text()))}))
