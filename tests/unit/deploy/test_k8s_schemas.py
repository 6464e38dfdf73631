"""Every object ``kubectl apply -k deploy/k8s`` would send is valid for the API server, offline.

Built-in kinds are checked by ``kubernetes-validate`` against the schemas of a pinned Kubernetes
version, strictly (an unknown or misspelt field fails). Custom resources are checked against the
``openAPIV3Schema`` of the CRDs they need, copied into ``crd_schemas/`` (each file says from which
release): Strimzi's ``KafkaTopic``/``KafkaUser`` and the Prometheus Operator's ``PodMonitor`` and
``PrometheusRule``. A kind with neither kind of schema fails (``SchemaNotFoundError``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.unit.deploy.kustomization import Manifest, render

#: The oldest Kubernetes the manifests must work on.
KUBERNETES_VERSION = "1.33"
CRD_SCHEMAS = Path(__file__).parent / "crd_schemas"
#: (apiVersion, kind) of each custom resource -> its schema file.
CUSTOM_RESOURCES = {
    ("kafka.strimzi.io/v1", "KafkaTopic"): "kafkatopic-kafka-v1.json",
    ("kafka.strimzi.io/v1", "KafkaUser"): "kafkauser-kafka-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}

OBJECTS = render()


def _crd_validator(manifest: Manifest) -> jsonschema.protocols.Validator | None:
    schema_file = CUSTOM_RESOURCES.get((manifest["apiVersion"], manifest["kind"]))
    if schema_file is None:
        return None
    schema: dict[str, Any] = json.loads((CRD_SCHEMAS / schema_file).read_text())
    return jsonschema.Draft7Validator(schema)


def _label(manifest: Manifest) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


@pytest.mark.parametrize("manifest", OBJECTS, ids=_label)
def test_object_is_valid_for_the_api_server(manifest: Manifest) -> None:
    validator = _crd_validator(manifest)
    if validator is not None:
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
        assert not errors, f"{_label(manifest)} breaks its CRD schema: {errors}"
        assert manifest["metadata"]["name"], "custom resources need a name too"
        return
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{_label(manifest)} is not valid Kubernetes {KUBERNETES_VERSION}: {error.message}")


def test_the_validation_catches_a_misspelt_field() -> None:
    deployment = next(o for o in OBJECTS if o["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    user = next(o for o in OBJECTS if o["kind"] == "KafkaUser")
    broken_user = json.loads(json.dumps(user))
    broken_user["spec"]["authorization"]["acls"][0]["operations"] = ["Reed"]
    validator = _crd_validator(broken_user)
    assert validator is not None
    assert not validator.is_valid(broken_user)
