"""The two image recipes, read as a reviewer would: no Docker engine needed.

``Dockerfile`` builds the wheel in one stage and installs only that wheel, as uid 10001, in the
next. ``deploy/triton/Dockerfile`` is the NGC release of the local stack's tritonserver plus the
packages the staged ``model.py`` imports, pinned in ``deploy/triton/requirements.txt`` to exactly
what the local stack's python-backend stub runs with (the project venv, today).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.paths import REPO

SERVICE_DOCKERFILE = REPO / "Dockerfile"
TRITON_DOCKERFILE = REPO / "deploy" / "triton" / "Dockerfile"
TRITON_REQUIREMENTS = REPO / "deploy" / "triton" / "requirements.txt"
TRITON_BACKEND = REPO / "worker" / "triton_backend"  # every file of it is staged into Triton models
#: nvidia-pytriton release (the local stack's tritonserver) -> the NGC image of the same Triton:
#: 0.7.0 ships tritonserver 2.51.0, which NGC released as 24.10 (Triton's release notes).
NGC_IMAGE_OF_PYTRITON = {"0.7.0": "nvcr.io/nvidia/tritonserver:24.10-py3"}
#: Provided by Triton's python backend itself, not pip.
TRITON_PROVIDED = {"triton_python_backend_utils"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def build_args(self) -> dict[str, str]:
        return dict(arg.partition("=")[::2] for arg in self.args_of("ARG"))


def parse_dockerfile(path: Path) -> list[Stage]:
    """The stages, each with its (INSTRUCTION, arguments), continuation lines joined."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[Stage] = []
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), " ".join(args.split())
        if instruction == "FROM":
            base, _, alias = args.partition(" AS ")
            stages.append(Stage(base=base.strip(), name=alias.strip() or None))
        elif stages:
            stages[-1].instructions.append((instruction, args))
        else:
            raise ValueError(f"{path}: {instruction} before FROM is not read by these tests")
    return stages


def test_service_image_builds_the_wheel_then_installs_only_it_as_uid_10001() -> None:
    stages = parse_dockerfile(SERVICE_DOCKERFILE)
    build, runtime = stages[0], stages[-1]
    assert len(stages) >= 2, "multi-stage: the wheel is built in its own stage"
    assert build.name
    assert any(run.startswith("pip wheel") and "--no-deps" in run for run in build.args_of("RUN"))
    copies = runtime.args_of("COPY")
    front = next(stage for stage in stages if stage.name == "grpc-front")
    assert copies == [
        f"--from={front.name} /out/promoter-grpc-front /usr/local/bin/promoter-grpc-front",
        f"--from={build.name} /wheels/ /tmp/wheels/",
    ], "the runtime stage gets the wheel and the native gRPC front's binary, no sources"
    assert any(re.search(r"pip install [^&]*/tmp/wheels/model_promoter-\*\.whl", run) for run in runtime.args_of("RUN"))
    assert runtime.args_of("USER")[-1].split(":")[0] == "10001"
    env = " ".join(runtime.args_of("ENV"))
    assert "HOME=/tmp" in env, "writable only where the manifests mount volumes"
    assert "TMPDIR=/tmp" in env


def test_service_image_builds_the_native_grpc_front_from_its_sources() -> None:
    front = next(stage for stage in parse_dockerfile(SERVICE_DOCKERFILE) if stage.name == "grpc-front")
    assert front.base.startswith("golang:")
    go_mod = (REPO / "gateway" / "grpc_front_go" / "go.mod").read_text()
    go_version = re.search(r"^go (\d+\.\d+)", go_mod, re.MULTILINE)
    assert go_version is not None
    assert front.base.startswith(f"golang:{go_version.group(1)}"), "the image's Go is the one go.mod asks for"
    assert "gateway/grpc_front_go/ ./" in front.args_of("COPY")
    assert any("go build" in run and "-o /out/promoter-grpc-front" in run for run in front.args_of("RUN"))


def test_no_image_installs_an_editable_checkout() -> None:
    for path in (SERVICE_DOCKERFILE, TRITON_DOCKERFILE):
        for stage in parse_dockerfile(path):
            for run in stage.args_of("RUN"):
                assert not re.search(r"pip install[^&]*(\s-e\s|--editable)", run), f"{path.name}: {run}"


def test_service_image_copies_every_package_the_wheel_holds() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    stages = parse_dockerfile(SERVICE_DOCKERFILE)
    copied = {source.rstrip("/") for args in stages[0].args_of("COPY") for source in args.split()[:-1]}
    assert packages | {"pyproject.toml", "README.md"} <= copied
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert not (packages | {"pyproject.toml", "README.md"}) & ignored, ".dockerignore drops a source the build copies"


def _pins() -> dict[str, str]:
    pins = {}
    for line in TRITON_REQUIREMENTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line}: pin exact versions"
            pins[requirement.name] = specifier.version
    return pins


def test_triton_pins_are_what_the_local_stack_stub_runs_with() -> None:
    installed = {name: metadata.version(name) for name in _pins()}
    assert installed == _pins(), "deploy/triton/requirements.txt and the local stack differ: change them together"


def test_triton_pins_cover_every_import_of_the_staged_python_files() -> None:
    imported = set()
    for node in (node for path in TRITON_BACKEND.glob("*.py") for node in ast.walk(ast.parse(path.read_text()))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - TRITON_PROVIDED - {"__future__"}
    distributions = metadata.packages_distributions()
    pinned = {name.lower() for name in _pins()}
    unpinned = [m for m in sorted(third_party) if not {d.lower() for d in distributions[m]} & pinned]
    assert not unpinned, f"the staged python files import {unpinned}, which the Triton image would not have"
    assert "scikit-learn" in pinned, "sklearn models are unpickled with the estimator classes they reference"


def test_triton_image_is_the_local_stack_release_with_a_stub_for_the_pins_python() -> None:
    (stage,) = parse_dockerfile(TRITON_DOCKERFILE)
    local_pytriton = metadata.version("nvidia-pytriton")
    assert stage.base == NGC_IMAGE_OF_PYTRITON[local_pytriton]
    assert stage.build_args()["PYTRITON_VERSION"] == local_pytriton, "the stub of the local stack's Triton release"
    runs = " ".join(stage.args_of("RUN"))
    assert "--requirement /opt/model-promoter/requirements.txt" in runs
    assert "deploy/triton/requirements.txt /opt/model-promoter/requirements.txt" in stage.args_of("COPY")
    stub_python = re.search(r"python_backend_stubs/(3\.\d+)/triton_python_backend_stub", runs)
    assert stub_python
    assert f"python{stub_python.group(1)} -m venv" in runs, "stub and environment: one Python"
    for name in _pins():
        requires = metadata.metadata(name)["Requires-Python"] or ""
        assert Version(stub_python.group(1)) in SpecifierSet(requires), f"{name} needs Python {requires}"
    assert stage.args_of("USER")[-1] == "triton-server"
