"""``promoter status``: each Triton endpoint from the freshest fleet report of a live worker; prepared versions
bounded as the workers bound them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from promoter_cli.serving_status import ServingStatus
from schemas.fleet_status import EndpointState, EndpointStatus, WorkerFleetStatus, WorkerFleetStatusData
from schemas.prepared_version import ModelPrepared, ModelPreparedData
from tests.event_samples import all_events
from worker.triton_naming import triton_model_name

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PREPARED: ModelPreparedData = next(e for e in all_events() if e.type == "io.modelpromoter.model.prepared.v1").data


class Record:
    def __init__(self, value: bytes) -> None:
        self.value = value
        self.offset = 0


def report(
    replica: str,
    age_s: float,
    state: EndpointState,
    *,
    missing: tuple[str, ...] = (),
    error: str | None = None,
    max_prepared: int | None = None,
) -> Record:
    event = WorkerFleetStatus(
        source=f"/model-promoter/worker/{replica}/fleet",
        time=NOW - timedelta(seconds=age_s),
        data=WorkerFleetStatusData(
            replica_id=replica,
            interval_s=15,
            expected_models=1,
            max_prepared_versions=max_prepared,
            endpoints=[
                EndpointStatus(endpoint="t0:8000", state="in_sync", since=NOW - timedelta(hours=1)),
                EndpointStatus(
                    endpoint="t1:8000",
                    state=state,
                    missing=list(missing),
                    since=datetime(2026, 11, 22, 11, 59, 30, tzinfo=UTC),
                    error=error,
                ),
            ],
        ),
    )
    return Record(event.to_json_bytes())


def test_no_report_yet_says_so() -> None:
    assert ServingStatus().endpoint_lines(NOW) == ["Triton endpoints: no worker has reported them yet"]


def test_each_endpoint_from_the_freshest_live_report() -> None:
    status = ServingStatus()
    status.apply(report("w-0", 20, "down", error="Triton t1:8000 is unreachable"))
    status.apply(report("w-1", 5, "repairing", missing=("iris--v3",)))
    assert status.endpoint_lines(NOW) == [
        "Triton t0:8000 — in sync since 11:00:00 (worker w-1)",
        "Triton t1:8000 — repairing since 11:59:30; missing: iris--v3 (worker w-1)",
    ]
    rows = status.endpoints(NOW)
    assert rows[1].as_json()["state"] == "repairing"
    assert rows[1].as_json()["reported_by"] == "w-1"
    assert rows[1].as_json()["missing"] == ["iris--v3"]


def test_a_silent_worker_is_not_believed() -> None:
    status = ServingStatus()
    status.apply(report("w-0", 46, "down", error="Triton t1:8000 is unreachable"))
    assert status.endpoint_lines(NOW) == ["Triton endpoints: no live worker has reported them lately"]
    status.apply(report("w-0", 44, "down", error="Triton t1:8000 is unreachable"))
    assert status.endpoint_lines(NOW)[1] == (
        "Triton t1:8000 — down since 11:59:30; Triton t1:8000 is unreachable (worker w-0)"
    )


def test_an_older_report_of_a_replica_does_not_replace_a_newer_one() -> None:
    status = ServingStatus()
    status.apply(report("w-0", 1, "in_sync"))
    status.apply(report("w-0", 10, "down", error="old news"))
    assert [row.status.state for row in status.endpoints(NOW)] == ["in_sync", "in_sync"]


def _prepared(version: int) -> Record:
    data = PREPARED.model_copy(
        update={
            "model_name": "iris",
            "version": version,
            "triton_model_name": triton_model_name("iris", version),
            "expires_at": NOW + timedelta(hours=1),
        }
    )
    return Record(ModelPrepared(source="/t", subject="iris", data=data).to_json_bytes())


@pytest.mark.parametrize("report_first", [True, False])
def test_prepared_versions_are_bounded_as_the_workers_report_they_bound_them(report_first: bool) -> None:
    status = ServingStatus()
    bound_3 = report("w-0", 1, "in_sync", max_prepared=3)  # PROMOTER_WORKER_MAX_PREPARED_VERSIONS=3
    if report_first:
        status.apply(bound_3)
    for version in (4, 5, 6):
        status.apply(_prepared(version))
    if not report_first:
        status.apply(bound_3)

    assert [record.version for record in status.prepared(NOW)] == [4, 5, 6], "all three are held by the worker"
    status.apply(_prepared(7))
    assert [record.version for record in status.prepared(NOW)] == [5, 6, 7], "a fourth pushes the oldest out"


def test_without_a_reported_bound_prepared_versions_are_bounded_by_the_default() -> None:
    status = ServingStatus()
    status.apply(report("w-0", 1, "in_sync"))  # a worker older than the field
    for version in (4, 5, 6):
        status.apply(_prepared(version))
    assert [record.version for record in status.prepared(NOW)] == [5, 6]
