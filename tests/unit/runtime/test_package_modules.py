"""runtime.package_modules: a package's modules imported without its ``__init__``, the real package whole afterwards."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.package_modules import package_init_skipped

PACKAGE = "package_modules_probe"


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[Path]:
    """A package whose ``__init__`` counts its runs and re-exports its one module ``part``."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text(
        "import builtins\n"
        "builtins.probe_init_runs = getattr(builtins, 'probe_init_runs', 0) + 1\n"
        "from package_modules_probe.part import VALUE\n"
    )
    (package / "part.py").write_text("VALUE = object()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield package
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]
        import builtins

        if hasattr(builtins, "probe_init_runs"):
            del builtins.probe_init_runs


def init_runs() -> int:
    import builtins

    return int(getattr(builtins, "probe_init_runs", 0))


def test_a_module_imports_without_its_package_init(probe: Path) -> None:
    with package_init_skipped(PACKAGE) as stand_in:
        part = importlib.import_module(f"{PACKAGE}.part")
        assert sys.modules[PACKAGE] is stand_in
    assert init_runs() == 0
    assert PACKAGE not in sys.modules  # the stand-in is gone
    package = importlib.import_module(PACKAGE)  # the real one, whole, with the same module
    assert init_runs() == 1
    assert package.VALUE is part.VALUE
    assert package.part is part


def test_an_imported_package_is_left_as_it_is(probe: Path) -> None:
    package = importlib.import_module(PACKAGE)
    with package_init_skipped(PACKAGE) as given:
        assert given is package
        importlib.import_module(f"{PACKAGE}.part")
    assert sys.modules[PACKAGE] is package
    assert init_runs() == 1


def test_no_such_package_is_an_import_error() -> None:
    with pytest.raises(ModuleNotFoundError, match="no_such_package_here"), package_init_skipped("no_such_package_here"):
        pass
