"""``promoter status`` shows each Triton endpoint from the freshest fleet report of a live worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from promoter_cli.serving_status import ServingStatus
from schemas.fleet_status import EndpointState, EndpointStatus, WorkerFleetStatus, WorkerFleetStatusData

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class Record:
    def __init__(self, value: bytes) -> None:
        self.value = value
        self.offset = 0


def report(
    replica: str, age_s: float, state: EndpointState, *, missing: tuple[str, ...] = (), error: str | None = None
) -> Record:
    event = WorkerFleetStatus(
        source=f"/model-promoter/worker/{replica}/fleet",
        time=NOW - timedelta(seconds=age_s),
        data=WorkerFleetStatusData(
            replica_id=replica,
            interval_s=15,
            expected_models=1,
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
