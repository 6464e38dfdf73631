"""Feast online features at /predict on the real stack: Feast's feature server (the Feast SDK, ``feast apply`` +
materialise) over a real Redis online store holding the iris measurements keyed by ``iris_id``, one worker
promoting an iris classifier and one gateway configured to look its features up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.stack.feature_store import ENTITY_KEY, iris_feast_models, running_iris_feature_store
from deploy.stack.local_stack import LocalStack
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from tests.gateway_harness import IRIS_FEATURES, GatewayHandle, iris_records, promote, running_gateways
from tests.worker_harness import iris_frame, register_iris, running_worker, sklearn_predictions

pytestmark = pytest.mark.integration


@dataclass
class FeastWorld:
    stack: LocalStack
    gateway: GatewayHandle
    model: str
    version: int
    redis: ManagedProcess
    feast: ManagedProcess
    run_dir: Path

    def predict(self, body: Any) -> httpx.Response:
        return httpx.post(f"{self.gateway.url}/predict/{self.model}", json=body, timeout=10)

    def expected(self, records: list[dict[str, float]]) -> list[Any]:
        frame = iris_frame()[0]
        rows = [[record[name] for name in IRIS_FEATURES] for record in records]
        table = frame.iloc[: len(rows)].copy()
        table.iloc[:, :] = rows
        return list(sklearn_predictions(self.stack.mlflow_tracking_uri, self.model, self.version, table))


@pytest.fixture(scope="module")
def world(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastWorld]:
    run_dir = tmp_path_factory.mktemp("feast")
    model = f"feast-iris-{uuid.uuid4().hex[:6]}"
    rows = iris_frame()[0].to_numpy().tolist()
    with running_iris_feature_store(run_dir, rows) as (redis, feast):
        version = register_iris(local_stack.mlflow_tracking_uri, model)
        with running_worker(local_stack, run_dir / "worker") as worker:
            asyncio.run(promote(local_stack, worker, model, version))
            settings = {
                "PROMOTER_GATEWAY_FEAST_SERVER_URL": feast.spec.endpoints["feast"],
                "PROMOTER_GATEWAY_FEAST_MODELS": iris_feast_models(model),
                "PROMOTER_GATEWAY_FEAST_TIMEOUT_S": "2",
            }
            with running_gateways(local_stack, run_dir / "gateways", worker.env, ["gw-feast"], **settings) as gws:
                wait_all_ready([feast])  # applied and materialised while the worker promoted the model
                yield FeastWorld(local_stack, gws[0], model, version, redis, feast, run_dir)


def _row(index: int) -> dict[str, float]:
    return iris_records(iris_frame()[0].iloc[[index]].to_numpy())[0]


def test_entity_ids_alone_are_served_from_the_online_store(world: FeastWorld) -> None:
    ids = [0, 75, 149]
    response = world.predict([{ENTITY_KEY: i} for i in ids])
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == world.expected([_row(i) for i in ids])
    assert world.gateway.metric("gateway_feature_lookups_total", model=world.model) == 1


def test_payload_values_override_looked_up_features(world: FeastWorld) -> None:
    override = {"petal length (cm)": 6.0, "petal width (cm)": 2.5}  # a virginica's petals on a setosa (row 0)
    response = world.predict({ENTITY_KEY: 0, **override})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert [prediction] == world.expected([{**_row(0), **override}])
    assert [prediction] != world.expected([_row(0)])


def test_feast_keeps_its_metrics_files_in_the_run_directory_not_in_tmp(world: FeastWorld) -> None:
    assert world.predict({ENTITY_KEY: 1}).status_code == 200
    files = sorted(path.name for path in (world.run_dir / "feast-metrics").iterdir())
    assert any(name.endswith(f"_{world.feast.pid}.db") for name in files), files


def test_an_unknown_entity_is_a_422_naming_the_missing_features(world: FeastWorld) -> None:
    response = world.predict({ENTITY_KEY: 99_999, "sepal length (cm)": 5.0})
    assert response.status_code == 422
    assert "missing features 'sepal width (cm)', 'petal length (cm)', 'petal width (cm)'" in response.text
    assert f"no online features for {ENTITY_KEY}=99999" in response.text
    assert world.gateway.metric("gateway_feature_misses_total", model=world.model) == 1


def test_the_store_stopped_falls_back_to_the_payload_and_never_a_5xx(world: FeastWorld) -> None:
    stop_all([world.redis])
    complete = world.predict({ENTITY_KEY: 3, **_row(3)})  # needs no lookup: served
    assert complete.status_code == 200, complete.text
    assert complete.json()["predictions"] == world.expected([_row(3)])
    partial = world.predict({ENTITY_KEY: 3, "sepal length (cm)": 5.0})
    assert partial.status_code == 422, partial.text
    assert "record: missing features 'sepal width (cm)'" in partial.text
    assert "the feature store" in partial.text
    fallbacks = sum(
        world.gateway.metric("gateway_feature_fallbacks_total", model=world.model, reason=reason)
        for reason in ("timeout", "unreachable", "error")
    )
    assert fallbacks == 1
