"""An alias moved in MLflow with no event at all (the webhook was lost) is served within the reconcile interval."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

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
)

pytestmark = pytest.mark.integration

READY = "io.modelpromoter.model.ready.v1"
RECONCILE_INTERVAL_S = 3


async def test_an_alias_moved_without_an_event_is_served_within_the_interval(
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
        assert worker.metric("promoter_registry_corrections_total") == 1
        assert "registry drift corrected: promotion requested" in worker.process.log_text()
