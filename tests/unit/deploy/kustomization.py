"""Render ``deploy/k8s`` as ``kubectl kustomize`` does, in Python, so the tests need no kubectl.

Only what our kustomization uses is implemented: ``resources`` (files), ``namespace`` and a
``configMapGenerator`` of files without a name hash. Anything else is refused, so a new kustomize
feature in the manifests fails here instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.paths import REPO

K8S = REPO / "deploy" / "k8s"
SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator"}
CLUSTER_SCOPED_KINDS = {"Namespace"}

Manifest = dict[str, Any]


def kustomization(root: Path = K8S) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((root / "kustomization.yaml").read_text())
    unsupported = sorted(set(loaded) - SUPPORTED_FIELDS)
    if unsupported:
        raise ValueError(f"kustomization uses {unsupported}: teach tests/unit/deploy/kustomization.py to render them")
    return loaded


def _generated_config_map(generator: dict[str, Any], root: Path) -> Manifest:
    options = generator.get("options", {})
    if not options.get("disableNameSuffixHash") or set(generator) - {"name", "files", "options"}:
        raise ValueError(f"configMapGenerator {generator.get('name')!r}: only files without a name hash are rendered")
    data = {Path(file).name: (root / file).read_text() for file in generator["files"]}
    metadata: dict[str, Any] = {"name": generator["name"]}
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def render(root: Path = K8S) -> list[Manifest]:
    """Every object ``kubectl apply -k root`` would apply, with the namespace set."""
    spec = kustomization(root)
    objects: list[Manifest] = []
    for resource in spec["resources"]:
        objects.extend(d for d in yaml.safe_load_all((root / resource).read_text()) if d)
    objects.extend(_generated_config_map(generator, root) for generator in spec.get("configMapGenerator", []))
    namespace = spec.get("namespace")
    if namespace:
        for manifest in objects:
            if manifest["kind"] not in CLUSTER_SCOPED_KINDS:
                manifest["metadata"]["namespace"] = namespace
    return objects


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    """The one object of ``kind`` called ``name``."""
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec
