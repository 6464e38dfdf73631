"""What differs between the MLflow registry's aliases and what is served, and the requests that heal it."""

from __future__ import annotations

from typing import Any

from schemas.catalog import parse_event
from schemas.model_ready import ModelReadyData
from schemas.promotion_requested import PromotionRequested
from tests.event_samples import all_events
from worker.errors import TransientFailure
from worker.metrics import WorkerMetrics
from worker.registry_reconcile import Correction, RegistryReconciler, registry_drift
from worker.serving_state import ServingState

SAMPLE: ModelReadyData = next(e for e in all_events() if e.type == "io.modelpromoter.model.ready.v1").data


def served(
    model: str, alias: str, version: int, generation: int = 0, *, pinned: bool | None = False, registry: int | None = 0
) -> ModelReadyData:
    """A served record; by default chosen by the MLflow alias (``registry``: 0 means ``version``)."""
    data: ModelReadyData = SAMPLE.model_copy(
        update={
            "model_name": model,
            "alias": alias,
            "version": version,
            "generation": generation,
            "pinned": pinned,
            "registry_version": version if registry == 0 else registry,
        }
    )
    return data


class FakeRegistry:
    def __init__(self, aliases: dict[str, dict[str, int] | None]) -> None:
        self.aliases_by_model = aliases
        self.down: set[str] = set()

    async def aliases(self, name: str) -> dict[str, int] | None:
        if name in self.down:
            raise TransientFailure(f"MLflow registry call failed (get model {name!r}): 503")
        return self.aliases_by_model.get(name)


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, PromotionRequested]] = []

    async def publish(self, message: bytes, topic: str, **kwargs: Any) -> None:
        self.sent.append((topic, kwargs.get("key"), parse_event(message, PromotionRequested)))


def _routes(*records: ModelReadyData) -> dict[tuple[str, str], ModelReadyData]:
    return {(r.model_name, r.alias): r for r in records}


def test_drift_is_an_alias_moved_set_or_deleted_in_the_registry() -> None:
    now_served = _routes(
        served("iris", "champion", 3),
        served("iris", "old", 1),  # its MLflow alias was deleted since
        served("iris", "staging", 2, pinned=None, registry=None),  # announced by an older worker
        served("iris", "latest", 5, pinned=True, registry=None),  # an ingress policy alias MLflow never had
        served("fraud", "champion", 7),
    )
    registry = {"iris": {"champion": 4, "challenger": 2}, "fraud": {"champion": 7}}
    assert registry_drift(now_served, registry) == [
        Correction("iris", "challenger", None, 2),  # set in MLflow, not served
        Correction("iris", "champion", 3, 4),  # moved in MLflow
        Correction("iris", "old", 1, None),  # deleted in MLflow
    ]  # iris@staging and iris@latest: MLflow never had (or may never have had) them, left alone
    assert registry_drift(now_served, {"fraud": {"champion": 7}}) == []


def test_a_pinned_version_holds_until_the_alias_moves_in_mlflow() -> None:
    pin = _routes(served("iris", "champion", 5, pinned=True, registry=4))  # a DAG pinned v5 while MLflow said v4

    assert registry_drift(pin, {"iris": {"champion": 4}}) == []
    assert registry_drift(pin, {"iris": {"champion": 6}}) == [Correction("iris", "champion", 5, 6)]
    assert registry_drift(pin, {"iris": {}}) == [Correction("iris", "champion", 5, None)]
    assert registry_drift(pin, {"iris": {"champion": 5}}) == [], "MLflow caught up with the pin"


def test_a_correction_says_what_differs() -> None:
    assert Correction("iris", "champion", 3, 4).reason() == (
        "registry drift: iris@champion points at v4 in MLflow; v3 is served"
    )
    assert Correction("iris", "challenger", None, 2).reason() == (
        "registry drift: iris@challenger points at v2 in MLflow; it is not served"
    )
    assert Correction("iris", "old", 1, None).reason() == "registry drift: iris@old was deleted in MLflow; v1 is served"


def reconciler(registry: FakeRegistry, state: ServingState) -> tuple[RegistryReconciler, FakePublisher, WorkerMetrics]:
    publisher, metrics = FakePublisher(), WorkerMetrics()
    return RegistryReconciler(registry, state, publisher, "requests", "w-0", metrics), publisher, metrics


async def test_each_difference_is_requested_once_as_a_registry_correction() -> None:
    state = ServingState()
    state.apply(served("iris", "champion", 3, 0))
    registry = FakeRegistry({"iris": {"champion": 4}})
    reconcile, publisher, metrics = reconciler(registry, state)

    assert await reconcile.run_once() == [Correction("iris", "champion", 3, 4)]
    ((topic, key, event),) = publisher.sent
    assert (topic, key) == ("requests", b"iris")
    assert event.source == "/model-promoter/worker/w-0/registry-reconcile"
    assert event.subject == "iris"
    data = event.data
    assert (data.model_name, data.alias, data.version, data.action) == ("iris", "champion", None, "promote")
    assert data.origin == "mlflow_webhook"
    assert data.requester == "registry-reconcile/w-0"
    assert data.reason == "registry drift: iris@champion points at v4 in MLflow; v3 is served"
    assert metrics.registry.get_sample_value("promoter_registry_corrections_total", {"action": "promote"}) == 1

    assert await reconcile.run_once() == []  # still drifting (e.g. v4 was rejected): not requested again
    assert len(publisher.sent) == 1

    state.apply(served("iris", "champion", 4, 1))  # healed
    assert await reconcile.run_once() == []
    state.apply(served("iris", "champion", 3, 2, pinned=True, registry=4))  # a pinned rollback: it holds
    assert await reconcile.run_once() == []
    registry.aliases_by_model["iris"] = {}  # then the alias is deleted in MLflow: the pin yields
    assert await reconcile.run_once() == [Correction("iris", "champion", 3, None)]
    _, _, unserve = publisher.sent[1]
    assert (unserve.data.action, unserve.data.version, unserve.data.alias) == ("unserve", None, "champion")
    assert unserve.data.reason == "registry drift: iris@champion was deleted in MLflow; v3 is served"
    assert metrics.registry.get_sample_value("promoter_registry_corrections_total", {"action": "unserve"}) == 1


async def test_an_unreadable_or_deleted_model_is_skipped_and_the_others_still_compared() -> None:
    state = ServingState()
    for record in (served("iris", "champion", 3, 0), served("fraud", "champion", 1, 0), served("gone", "a", 1, 0)):
        state.apply(record)
    registry = FakeRegistry({"iris": {"champion": 4}, "fraud": {"champion": 2}, "gone": None})
    registry.down.add("fraud")
    reconcile, publisher, metrics = reconciler(registry, state)

    assert await reconcile.run_once() == [Correction("iris", "champion", 3, 4)]
    assert metrics.registry.get_sample_value("promoter_registry_reconciles_total", {"outcome": "failed"}) == 1
    assert [event.data.model_name for _, _, event in publisher.sent] == ["iris"]  # nothing unserved for "gone"

    registry.down.clear()
    assert await reconcile.run_once() == [Correction("fraud", "champion", 1, 2)]
    assert metrics.registry.get_sample_value("promoter_registry_reconciles_total", {"outcome": "ok"}) == 1
