"""The Kubernetes manifests parse, reference each other, and set only settings the code reads."""

from __future__ import annotations

import yaml

from tests.paths import REPO
from tests.unit.runtime.test_settings_documented import env_names

K8S = REPO / "deploy" / "k8s"


def _documents() -> list[dict[str, object]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents: list[dict[str, object]] = []
    for resource in kustomization["resources"]:
        documents.extend(d for d in yaml.safe_load_all((K8S / resource).read_text()) if d)
    return documents


def _promoter_env_names(node: object) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("PROMOTER_"):
                found.add(key)
            if key == "name" and isinstance(value, str) and value.startswith("PROMOTER_"):
                found.add(value)
            found |= _promoter_env_names(value)
    elif isinstance(node, list):
        for item in node:
            found |= _promoter_env_names(item)
    return found


def test_every_manifest_is_listed_and_parses() -> None:
    documents = _documents()
    listed = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == listed
    kinds = {str(d["kind"]) for d in documents}
    assert {"Deployment", "StatefulSet", "ConfigMap", "PersistentVolumeClaim"} <= kinds


def test_manifests_only_set_real_settings() -> None:
    used = _promoter_env_names(_documents())
    assert used, "the manifests configure the services through PROMOTER_* variables"
    assert not sorted(used - env_names()), "manifests set variables no code reads"


def test_worker_and_triton_share_the_model_repository() -> None:
    claims = {
        str(d["metadata"]["name"]): d  # type: ignore[index]
        for d in _documents()
        if d["kind"] == "PersistentVolumeClaim"
    }
    text = (K8S / "worker.yaml").read_text() + (K8S / "triton.yaml").read_text()
    assert "model-repository" in claims
    assert text.count("claimName: model-repository") == 2


def test_alerts_only_use_metrics_the_services_export() -> None:
    import re

    from gateway.metrics import GatewayMetrics
    from ingress.receiver import WebhookReceiver
    from ingress.settings import IngressSettings
    from runtime.metrics import new_registry
    from worker.metrics import WorkerMetrics

    registries = [WorkerMetrics().registry, GatewayMetrics().registry]
    ingress_registry = new_registry(process_metrics=False)

    async def publish(_: object) -> None:
        return None

    WebhookReceiver(IngressSettings(webhook_secrets=["s"]), publish, ingress_registry)
    registries.append(ingress_registry)
    exported = {
        sample.name for registry in registries for family in registry.collect() for sample in family.samples
    } | {
        family.name + ("_total" if family.type == "counter" else "")
        for registry in registries
        for family in registry.collect()
    }
    rules = yaml.safe_load((K8S / "alerts.yaml").read_text())["spec"]["groups"][0]["rules"]
    used = {name for rule in rules for name in re.findall(r"\b((?:promoter|gateway)_[a-z_]+)", rule["expr"])}
    assert used
    assert not sorted(used - exported), "alerts use metrics nobody exports"


def test_gateways_are_probed_on_their_own_endpoints_behind_a_service() -> None:
    documents = _documents()
    gateway = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway")  # type: ignore[index]
    (container,) = gateway["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    assert container["command"] == ["promoter-gateway"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert str(ports["http"]) == env["PROMOTER_GATEWAY_PORT"]
    service = next(d for d in documents if d["kind"] == "Service" and d["metadata"]["name"] == "gateway")  # type: ignore[index]
    assert service["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]  # type: ignore[index]
