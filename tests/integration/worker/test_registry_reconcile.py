"""Lost webhooks heal within the reconcile interval: an alias moved in MLflow is served, one deleted is unserved;
a pinned version stays until the alias moves in MLflow."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from deploy.stack.local_stack import LocalStack
from schemas.catalog import parse_event
from schemas.promotion_requested import PromotionRequested
from tests.worker_harness import (
    events_about,
    produce,
    register_iris,
    request_bytes,
    running_worker,
    set_alias,
    snapshot,
    wait_for,
)

pytestmark = pytest.mark.integration

READY = "io.modelpromoter.model.ready.v1"
STOPPED = "io.modelpromoter.serving.stopped.v1"
RECONCILE_INTERVAL_S = 1


async def test_registry_drift_heals_and_a_pin_holds_until_the_alias_moves(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    name = f"drift-{uuid.uuid4().hex[:6]}"
    uri = local_stack.mlflow_tracking_uri
    v1, v2 = register_iris(uri, name), register_iris(uri, name, regularisation=0.05)
    set_alias(uri, name, "champion", v1)
    bootstrap = local_stack.kafka_bootstrap_servers

    with running_worker(
        local_stack, tmp_path, PROMOTER_WORKER_RECONCILE_INTERVAL_S=str(RECONCILE_INTERVAL_S)
    ) as worker:
        requested, ready_topic = worker.topic("promotion_requested"), worker.topic("model_ready")
        await produce(bootstrap, requested, [(name.encode(), request_bytes(name))])
        (first,) = await events_about(bootstrap, ready_topic, name, event_type=READY)
        assert first["data"]["version"] == v1

        set_alias(uri, name, "champion", v2)  # MLflow's webhook never reaches us: nothing is published
        served = await events_about(bootstrap, ready_topic, name, count=2, event_type=READY, timeout_s=90)
        assert served[1]["data"]["version"] == v2
        assert served[1]["data"]["alias"] == "champion"

        requests = [parse_event(r.value, PromotionRequested) for r in await snapshot(bootstrap, requested) if r.value]
        corrections = [e for e in requests if e.source.endswith("/registry-reconcile")]
        assert len(corrections) == 1, "one correction per drift, not one per interval while it is promoted"
        (correction,) = corrections
        assert correction.data.model_name == name
        assert correction.data.version is None  # the worker re-reads the alias when it acts
        assert correction.data.reason == (f"registry drift: {name}@champion points at v{v2} in MLflow; v{v1} is served")
        assert served[1]["data"]["request_event_id"] == correction.id
        assert worker.metric("promoter_registry_corrections_total", action="promote") == 1
        assert "registry drift corrected: promotion requested" in worker.process.log_text()

        await produce(bootstrap, requested, [(name.encode(), request_bytes(name, version=v1))])  # a DAG pins v1
        pin = (await events_about(bootstrap, ready_topic, name, count=3, event_type=READY))[2]["data"]
        assert (pin["version"], pin["pinned"], pin["registry_version"]) == (v1, True, v2)
        reconciles = worker.metric("promoter_registry_reconciles_total", outcome="ok")
        await wait_for(
            lambda: worker.metric("promoter_registry_reconciles_total", outcome="ok") >= reconciles + 2,
            timeout_s=30,
            what="two reconciles after the pin",
        )
        assert worker.metric("promoter_registry_corrections_total", action="promote") == 1, "the pin is not reverted"

        MlflowClient(uri).delete_registered_model_alias(name, "champion")  # the alias moves: the pin yields
        (stopped,) = await events_about(bootstrap, ready_topic, name, event_type=STOPPED, timeout_s=30)
        assert stopped["data"]["alias"] == "champion"
        assert stopped["data"]["reason"] == f"registry drift: {name}@champion was deleted in MLflow; v{v1} is served"
        assert worker.metric("promoter_registry_corrections_total", action="unserve") == 1
        assert "registry drift corrected: unserve requested" in worker.process.log_text()
