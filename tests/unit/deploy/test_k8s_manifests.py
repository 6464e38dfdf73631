"""The Kubernetes manifests reference each other, set only settings the code reads, and watch only real metrics."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from deploy.stack.triton_server import BLAS_THREADS
from tests.paths import REPO
from tests.unit.deploy.kustomization import K8S, Manifest, find, kustomization, pod_spec, render
from tests.unit.runtime.test_settings_documented import env_names

OBJECTS = render()
SERVICES = ("promotion-worker", "gateway", "promoter-ingress")
DASHBOARD = K8S / "grafana" / "model-promoter.json"


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


def _container(workload: Manifest) -> dict[str, Any]:
    (container,) = pod_spec(workload)["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_every_manifest_is_listed() -> None:
    listed = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == listed
    kinds = {o["kind"] for o in OBJECTS}
    assert {"Deployment", "StatefulSet", "Job", "ConfigMap", "PersistentVolumeClaim", "NetworkPolicy"} <= kinds


def test_manifests_only_set_real_settings() -> None:
    used = _promoter_env_names(OBJECTS)
    assert used, "the manifests configure the services through PROMOTER_* variables"
    assert not sorted(used - env_names()), "manifests set variables no code reads"


def test_worker_and_triton_share_the_model_repository() -> None:
    find(OBJECTS, "PersistentVolumeClaim", "model-repository")
    worker, triton = find(OBJECTS, "Deployment", "promotion-worker"), find(OBJECTS, "StatefulSet", "triton")
    for workload in (worker, triton):
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in pod_spec(workload)["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims == {"model-repository"}
    worker_env = {k: v.get("value") for k, v in _env(_container(worker)).items()}
    repository = find(OBJECTS, "ConfigMap", "model-promoter")["data"]["PROMOTER_TRITON_MODEL_REPOSITORY"]
    mounts = {m["mountPath"]: m for m in _container(worker)["volumeMounts"]}
    assert not mounts[repository].get("readOnly"), "the worker stages models into the repository"
    assert "--model-repository=" + repository in _container(triton)["args"]
    assert worker_env["PROMOTER_WORKER_DOWNLOAD_DIR"] in mounts, "downloads go to a mounted scratch volume"


def test_services_are_probed_on_their_own_endpoints_behind_a_service() -> None:
    port_settings = {"gateway": "PROMOTER_GATEWAY_PORT", "promoter-ingress": "PROMOTER_INGRESS_PORT"}
    for name, port_setting in port_settings.items():
        workload = find(OBJECTS, "Deployment", name)
        container = _container(workload)
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert str(ports["http"]) == _env(container)[port_setting]["value"]
        service = find(OBJECTS, "Service", name)
        assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} == (
            {"http", "grpc"} if name == "gateway" else {"http"}
        )
    gateway = _container(find(OBJECTS, "Deployment", "gateway"))
    grpc_port = next(p["containerPort"] for p in gateway["ports"] if p["name"] == "grpc")
    assert str(grpc_port) == _env(gateway)["PROMOTER_GATEWAY_GRPC_PORT"]["value"]
    assert _container(find(OBJECTS, "Deployment", "promoter-ingress"))["command"] == ["promoter-ingress"]


def test_the_webhook_job_registers_the_ingress_service_url() -> None:
    job = find(OBJECTS, "Job", "register-mlflow-webhook")
    command = _container(job)["command"]
    assert command[:3] == ["promoter", "webhook", "register"]
    url = command[command.index("--url") + 1]
    service = find(OBJECTS, "Service", "promoter-ingress")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert url == f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc/webhooks/mlflow"
    secret_of = {
        name: _env(_container(w))["PROMOTER_INGRESS_WEBHOOK_SECRETS"]["valueFrom"]["secretKeyRef"]
        for name, w in (("job", job), ("ingress", find(OBJECTS, "Deployment", "promoter-ingress")))
    }
    assert secret_of["job"] == secret_of["ingress"], "MLflow must sign with a secret the ingress verifies"


def test_each_service_uses_its_own_kafka_user_and_the_secret_strimzi_creates_for_it() -> None:
    users = {o["metadata"]["name"] for o in OBJECTS if o["kind"] == "KafkaUser"}
    used = set()
    for name in SERVICES:
        env = _env(_container(find(OBJECTS, "Deployment", name)))
        user = env["PROMOTER_KAFKA_SASL_USERNAME"]["value"]
        assert env["PROMOTER_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": user, "key": "password"}
        used.add(user)
    assert used <= users
    assert users - used == {"promoter-oncall"}, "the on-call user is for people running `promoter`, not a pod"


def test_services_only_check_their_topics_because_strimzi_creates_them() -> None:
    config = find(OBJECTS, "ConfigMap", "model-promoter")["data"]
    assert config["PROMOTER_KAFKA_CREATE_TOPICS"] == "false"
    for name in SERVICES:
        container = _container(find(OBJECTS, "Deployment", name))
        assert {"configMapRef": {"name": "model-promoter"}} in container["envFrom"], name
        assert "PROMOTER_KAFKA_CREATE_TOPICS" not in _env(container), f"{name} must not override the ConfigMap"
    acls = [acl for o in OBJECTS if o["kind"] == "KafkaUser" for acl in o["spec"]["authorization"]["acls"]]
    assert all("Create" not in acl["operations"] for acl in acls), "no service may create topics"


def test_containers_run_unprivileged_on_a_read_only_root() -> None:
    workloads = [o for o in OBJECTS if o["kind"] in {"Deployment", "StatefulSet", "Job"}]
    for workload in workloads:
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        container = _container(workload)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, "the image's HOME and TMPDIR"
    ours = [w for w in workloads if _container(w)["image"].startswith("ghcr.io/model-promoter/model-promoter:")]
    assert {pod_spec(w)["securityContext"]["runAsUser"] for w in ours} == {10001}, "the Dockerfile's USER"


def test_triton_restricts_model_control_to_the_admin_header() -> None:
    container = _container(find(OBJECTS, "StatefulSet", "triton"))
    assert "--http-restricted-api=model-repository:x-promoter-admin=$(ADMIN_TOKEN)" in container["args"]
    assert "--grpc-restricted-protocol=model-repository:x-promoter-admin=$(ADMIN_TOKEN)" in container["args"]
    assert _env(container)["ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "triton-admin", "key": "token"}
    assert container["image"].startswith("ghcr.io/model-promoter/tritonserver:24.10-py3"), "deploy/triton/Dockerfile"


def test_triton_runs_its_stubs_with_the_blas_threads_of_the_local_stack() -> None:
    env = _env(_container(find(OBJECTS, "StatefulSet", "triton")))
    assert {name: env[name]["value"] for name in BLAS_THREADS} == BLAS_THREADS


def test_only_the_worker_holds_the_token_triton_expects() -> None:
    triton = _env(_container(find(OBJECTS, "StatefulSet", "triton")))
    worker = _env(_container(find(OBJECTS, "Deployment", "promotion-worker")))
    expected = triton["ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert worker["PROMOTER_TRITON_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == expected
    assert "PROMOTER_TRITON_ADMIN_HEADER" not in worker, "the default header is the one triton.yaml restricts to"
    holders = [
        o["metadata"]["name"]
        for o in OBJECTS
        if o["kind"] in {"Deployment", "StatefulSet", "Job"} and "triton-admin" in json.dumps(pod_spec(o))
    ]
    assert sorted(holders) == ["promotion-worker", "triton"], "gateways, ingress and jobs never get the token"


def test_gateways_scale_and_keep_serving_through_disruptions() -> None:
    hpa = find(OBJECTS, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    assert "replicas" not in find(OBJECTS, "Deployment", "gateway")["spec"], "the HPA owns the replica count"
    budgets = {
        o["metadata"]["name"]: o["spec"]["selector"]["matchLabels"]
        for o in OBJECTS
        if o["kind"] == "PodDisruptionBudget"
    }
    assert budgets == {
        "gateway": {"app": "gateway"},
        "promoter-ingress": {"app": "promoter-ingress"},
        "triton": {"app": "triton"},
    }


def test_only_the_worker_and_the_gateways_reach_triton() -> None:
    policy = find(OBJECTS, "NetworkPolicy", "triton")
    (rule,) = policy["spec"]["ingress"]
    assert [peer["podSelector"]["matchLabels"]["app"] for peer in rule["from"]] == ["promotion-worker", "gateway"]
    deny = find(OBJECTS, "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_every_service_and_triton_is_scraped() -> None:
    monitors = {
        o["spec"]["selector"]["matchLabels"]["app"]: o["spec"]["podMetricsEndpoints"]
        for o in OBJECTS
        if o["kind"] == "PodMonitor"
    }
    assert set(monitors) == {*SERVICES, "triton"}
    for app, endpoints in monitors.items():
        workload = next(
            o for o in OBJECTS if o["kind"] in {"Deployment", "StatefulSet"} and o["metadata"]["name"] == app
        )
        port_names = {p["name"] for p in _container(workload)["ports"]}
        assert {e["port"] for e in endpoints} <= port_names


# --- metrics: alerts and the dashboard use only what the code exports ---------------------------------

_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, label names, keywords or durations)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings, e.g. in label matchers
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name not in _PROMQL_WORDS:
            names.add(name)
    return names


async def exported_metric_names() -> set[str]:
    """Every sample name the worker, the gateway and the ingress expose on /metrics."""
    from gateway.metrics import GatewayMetrics
    from ingress.app import create_app
    from ingress.settings import IngressSettings
    from worker.metrics import WorkerMetrics

    registries = [WorkerMetrics().registry, GatewayMetrics().registry]
    families = [family for registry in registries for family in registry.collect()]
    ingress = create_app(IngressSettings(webhook_secrets=["s"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress), base_url="http://ingress") as client:
        families.extend(text_string_to_metric_families((await client.get("/metrics")).text))
    names = {sample.name for family in families for sample in family.samples}
    # A family is also queried by its exported names: counters with _total, histograms by their series.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return names | {family.name + s for family in families for s in suffixes.get(family.type, ("",))}


def _alert_expressions() -> list[str]:
    rules = yaml.safe_load((K8S / "alerts.yaml").read_text())["spec"]["groups"][0]["rules"]
    return [str(rule["expr"]) for rule in rules]


def test_every_alert_names_its_runbook_row_and_the_row_exists() -> None:
    rules = yaml.safe_load((K8S / "alerts.yaml").read_text())["spec"]["groups"][0]["rules"]
    runbook = (REPO / "README.md").read_text().split("## On call: runbook", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `(\w+)` \|", runbook, flags=re.MULTILINE))
    for rule in rules:
        assert rule["annotations"]["runbook"] == f"README.md, On call: runbook, row {rule['alert']}"
        assert rule["alert"] in rows, f"README's runbook has no row for {rule['alert']}"
    alerts = {rule["alert"]: str(rule["expr"]) for rule in rules}
    assert 'promoter_fleet_endpoint_state{state="down"}' in alerts["TritonEndpointDown"]
    assert 'promoter_fleet_endpoint_state{state="repairing"}' in alerts["TritonEndpointRepairing"]
    assert 'promoter_fleet_repairs_total{outcome="failed"}' in alerts["FleetRepairsFailing"]


def test_alerts_match_only_label_values_the_worker_exports() -> None:
    from worker.metrics import ENDPOINT_STATES, REPAIR_OUTCOMES

    expressions = " ".join(_alert_expressions())
    states = set(re.findall(r'promoter_fleet_endpoint_state\{state="(\w+)"\}', expressions))
    outcomes = set(re.findall(r'promoter_fleet_repairs_total\{outcome="(\w+)"\}', expressions))
    assert states
    assert states <= set(ENDPOINT_STATES)
    assert outcomes
    assert outcomes <= set(REPAIR_OUTCOMES)


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [str(target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_metric_names_are_read_from_promql() -> None:
    expr = 'sum by (model) (rate(gateway_errors_total{code=~"5.."}[5m])) / clamp_min(sum(up), 1) > 0.01'
    assert metric_names(expr) == {"gateway_errors_total", "up"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(x_bucket[$__rate_interval])))") == {"x_bucket"}


async def test_alerts_and_the_dashboard_only_use_metrics_the_services_export() -> None:
    exported = await exported_metric_names()
    assert {"promoter_ingress_deliveries_total", "gateway_request_duration_seconds_bucket"} <= exported
    for source, expressions in (("alerts.yaml", _alert_expressions()), (DASHBOARD.name, _dashboard_expressions())):
        used = {name for expr in expressions for name in metric_names(expr)}
        assert used, f"{source} queries no metric"
        assert not sorted(used - exported), f"{source} uses metrics nobody exports"


def test_the_dashboard_covers_promotions_dead_letters_gateways_and_swaps() -> None:
    used = {name for expr in _dashboard_expressions() for name in metric_names(expr)}
    assert {
        "promoter_promotions_total",
        "promoter_promotion_stage_seconds_bucket",
        "promoter_dead_letters_total",
        "gateway_requests_total",
        "gateway_errors_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_swaps_total",
    } <= used
    config_map = find(OBJECTS, "ConfigMap", "model-promoter-dashboard")
    assert config_map["metadata"]["labels"] == {"grafana_dashboard": "1"}
    assert json.loads(config_map["data"][DASHBOARD.name]) == json.loads(DASHBOARD.read_text())


def test_readme_documents_the_kubernetes_deployment() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deploying to Kubernetes", 1)[1].split("\n## ", 1)[0]
    for needle in ("kubectl apply -k deploy/k8s", "deploy/triton/Dockerfile", "ReadWriteMany", "x-promoter-admin"):
        assert needle in section
