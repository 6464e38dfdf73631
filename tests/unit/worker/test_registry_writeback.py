"""Write-back of decisions to MLflow: tags per decision, bounded history, retries, 403 and a bounded queue."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

from deploy.stack.ports import free_ports
from runtime.settings import MLflowSettings
from schemas.model_ready import ModelReadyData
from schemas.promotion_rejected import PromotionRejectedData
from tests.event_samples import all_events
from worker.metrics import WorkerMetrics
from worker.registry import Registry
from worker.registry_priority import PromotionsFirst
from worker.registry_writeback import (
    MAX_HISTORY_CHARS,
    AliasChange,
    RegistryWriteback,
    TagWriter,
    alias_moved,
    encode_history,
    rejection,
    updated_history,
)
from worker.serving_state import ServingState

SAMPLE: ModelReadyData = next(e for e in all_events() if e.type == "io.modelpromoter.model.ready.v1").data


class FakeRegistry:
    """Version tags and registered-model tags in memory; ``failures`` calls raise first."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.failures = failures or []
        self.version_tags: dict[tuple[str, int], dict[str, str]] = {}
        self.model_tags: dict[tuple[str, str], str] = {}
        self.aliases: dict[tuple[str, str], int] = {}
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)

    async def write_version_tags(
        self,
        name: str,
        version: int,
        tags: Mapping[str, str],
        remove: Iterable[str],
        *,
        before_each_call: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._call()
        current = self.version_tags.setdefault((name, version), {})
        for key in remove:
            current.pop(key, None)
        for key, value in tags.items():
            if before_each_call is not None:
                await before_each_call()
            current[key] = value

    async def alias_version(self, name: str, alias: str) -> int:
        self._call()
        return self.aliases[(name, alias)]

    async def model_tag(self, name: str, key: str) -> str | None:
        self._call()
        return self.model_tags.get((name, key))

    async def set_model_tag(self, name: str, key: str, value: str) -> None:
        self._call()
        self.model_tags[(name, key)] = value


def ready(version: int, alias: str = "champion", generation: int = 0) -> ModelReadyData:
    return SAMPLE.model_copy(
        update={
            "model_name": "m",
            "alias": alias,
            "version": version,
            "triton_model_name": f"m--00000000--v{version}",
            "artifact_sha256": f"{version:064x}",
            "generation": generation,
        }
    )


def rejected(version: int | None, alias: str = "champion") -> PromotionRejectedData:
    return PromotionRejectedData(
        model_name="m", alias=alias, version=version, reason_code="missing_signature", message="log a signature"
    )


def serve(state: ServingState, record: ModelReadyData) -> list[Any]:
    before = state.served(record.model_name, record.alias)
    state.apply(record)
    return alias_moved(state, record.model_name, record.alias, record, before.version if before else None)


def writeback(registry: TagWriter, **options: Any) -> tuple[RegistryWriteback, WorkerMetrics]:
    metrics = WorkerMetrics()
    options = {"backoff_initial_s": 0.001, "backoff_max_s": 0.005, **options}
    return RegistryWriteback(registry, metrics, **options), metrics


def count(metrics: WorkerMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("promoter_registry_writebacks_total", {"outcome": outcome})
    return value or 0.0


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true within {timeout_s} s")
        await asyncio.sleep(0.01)  # poll


@asynccontextmanager
async def running(wb: RegistryWriteback) -> AsyncIterator[None]:
    task = asyncio.create_task(wb.run_forever())
    try:
        yield
    finally:
        task.cancel()


async def drained(wb: RegistryWriteback, timeout_s: float = 10.0) -> None:
    await asyncio.wait_for(wb.wait_idle(), timeout_s)


async def test_serve_reject_and_roll_back_leave_the_tags_that_were_decided() -> None:
    registry = FakeRegistry()
    wb, metrics = writeback(registry)
    state = ServingState()
    async with running(wb):
        wb.submit(serve(state, ready(1, generation=0)))
        wb.submit(rejection(state, rejected(2)))
        await drained(wb)
        assert registry.version_tags[("m", 1)]["promoter.status"] == "serving"
        assert registry.version_tags[("m", 1)]["promoter.aliases"] == "champion"
        assert registry.version_tags[("m", 1)]["promoter.triton_model"] == "m--00000000--v1"
        assert registry.version_tags[("m", 2)] | {"promoter.since": "t"} == {
            "promoter.status": "rejected",
            "promoter.since": "t",
            "promoter.reason_code": "missing_signature",
            "promoter.message": "log a signature",
        }

        wb.submit(serve(state, ready(3, generation=1)))  # champion moves on: v1 is retired
        wb.submit(serve(state, ready(2, alias="challenger", generation=2)))  # the rejected one serves now
        await drained(wb)
        assert registry.version_tags[("m", 1)]["promoter.status"] == "retired"
        assert "promoter.aliases" not in registry.version_tags[("m", 1)]
        assert registry.version_tags[("m", 2)]["promoter.status"] == "serving"
        assert "promoter.reason_code" not in registry.version_tags[("m", 2)]
        assert "promoter.message" not in registry.version_tags[("m", 2)]

        wb.submit(serve(state, ready(2, generation=3)))  # champion rolls to v2: two aliases now
        await drained(wb)
        assert registry.version_tags[("m", 2)]["promoter.aliases"] == "challenger,champion"
        assert registry.version_tags[("m", 3)]["promoter.status"] == "retired"
        history = json.loads(registry.model_tags[("m", "promoter.alias_history")])
        assert [(e["alias"], e["version"], e["to"] is None) for e in history] == [
            ("champion", 2, True),
            ("challenger", 2, True),
            ("champion", 3, False),
            ("champion", 1, False),
        ]
        assert count(metrics, "written") >= 7


class ObservedPromotionsFirst(PromotionsFirst):
    """PromotionsFirst that says when somebody first waits for its turn."""

    def __init__(self, max_wait_s: float) -> None:
        super().__init__(max_wait_s)
        self.waited = asyncio.Event()

    async def wait_turn(self) -> None:
        self.waited.set()
        await super().wait_turn()


async def test_write_back_waits_while_a_promotion_is_under_way_then_writes() -> None:
    registry = FakeRegistry()
    first = ObservedPromotionsFirst(max_wait_s=60.0)
    wb, metrics = writeback(registry, promotions_first=first)
    state = ServingState()
    async with running(wb):
        with first.promoting():
            wb.submit(serve(state, ready(1, generation=0)))
            await asyncio.wait_for(first.waited.wait(), timeout=5.0)
            assert registry.calls == 0  # its MLflow calls wait for the promotion
            assert first.under_way == 1
        await drained(wb)
        assert registry.version_tags[("m", 1)]["promoter.status"] == "serving"
        assert count(metrics, "written") >= 1


async def test_write_back_under_a_stream_of_promotions_still_goes_on_after_the_longest_wait() -> None:
    registry = FakeRegistry()
    first = PromotionsFirst(max_wait_s=0.01)
    wb, _ = writeback(registry, promotions_first=first)
    state = ServingState()
    async with running(wb):
        with first.promoting():  # never ends while the write-back runs
            wb.submit(serve(state, ready(1, generation=0)))
            await drained(wb)
        assert registry.version_tags[("m", 1)]["promoter.status"] == "serving"


async def test_a_rejection_by_alias_tags_the_version_the_alias_points_at_unless_it_serves() -> None:
    registry = FakeRegistry()
    registry.aliases[("m", "champion")] = 5
    registry.aliases[("m", "challenger")] = 1
    wb, _ = writeback(registry)
    state = ServingState()
    async with running(wb):
        wb.submit(serve(state, ready(1, generation=0)))
        wb.submit(rejection(state, rejected(None)))
        wb.submit(rejection(state, rejected(None, alias="challenger")))  # v1 serves as champion: untouched
        await drained(wb)
    assert registry.version_tags[("m", 5)]["promoter.status"] == "rejected"
    assert registry.version_tags[("m", 1)]["promoter.status"] == "serving"
    missing = PromotionRejectedData(model_name="m", alias="gone", reason_code="alias_not_found", message="no alias")
    assert rejection(state, missing) == []  # nothing in the registry to tag


@pytest.mark.usefixtures("mlflow_client_env")
async def test_while_mlflow_is_down_the_newest_decision_per_version_is_kept_and_catches_up() -> None:
    (dead_port,) = free_ports(1)
    dead = Registry(MLflowSettings(tracking_uri=f"http://127.0.0.1:{dead_port}"))
    wb, metrics = writeback(dead)
    state = ServingState()
    async with running(wb):
        wb.submit(serve(state, ready(1, generation=0)))
        wb.submit(rejection(state, rejected(2)))
        await until(lambda: count(metrics, "failed") >= 3, "write-back retried against the dead MLflow")
        wb.submit(serve(state, ready(2, generation=1)))  # newer decision about v2 (and v1) while down
        working = FakeRegistry()
        wb.writer = working  # MLflow answers again
        await drained(wb)
    assert working.version_tags[("m", 2)]["promoter.status"] == "serving"
    assert working.version_tags[("m", 1)]["promoter.status"] == "retired"
    history = json.loads(working.model_tags[("m", "promoter.alias_history")])
    assert [(e["version"], e["to"] is None) for e in history] == [(2, True), (1, False)]
    assert count(metrics, "written") == 3


async def test_a_read_only_identity_stops_write_back_for_the_run() -> None:
    registry = FakeRegistry([MlflowException("no EDIT on model m", error_code=PERMISSION_DENIED)])
    wb, metrics = writeback(registry)
    task = asyncio.create_task(wb.run_forever())
    state = ServingState()
    wb.submit(serve(state, ready(1, generation=0)))
    await asyncio.wait_for(task, 10)  # the task ends: nothing more to try this run

    wb.submit(serve(state, ready(2, generation=1)))
    assert not wb.enabled
    assert len(wb.pending) == 0
    assert registry.calls == 1
    assert count(metrics, "forbidden") == 1


async def test_the_queue_is_bounded_and_drops_the_oldest_decision() -> None:
    wb, metrics = writeback(FakeRegistry(), max_pending=3)
    state = ServingState()
    for generation, version in enumerate((1, 2, 3)):
        wb.submit(serve(state, ready(version, generation=generation)))
    assert len(wb.pending) == 3
    assert count(metrics, "dropped") >= 3
    assert ("m", "1") not in wb.pending.versions


def test_the_history_keeps_the_newest_entries_and_fits_a_tag() -> None:
    changes = [AliasChange("m", "champion", v, f"2026-01-01T00:00:{v:02d}+00:00") for v in range(1, 30)]
    history = updated_history([], changes, 20)
    assert len(history) == 20
    assert history[0] == {"alias": "champion", "version": 29, "from": "2026-01-01T00:00:29+00:00", "to": None}
    assert history[1]["to"] == "2026-01-01T00:00:29+00:00"
    assert updated_history(history, [AliasChange("m", "champion", 29, "later")], 20) == history
    stopped = updated_history(history, [AliasChange("m", "champion", None, "end")], 20)
    assert stopped[0]["to"] == "end"

    long_alias = [{"alias": "a" * 250, "version": v, "from": "x" * 32, "to": None} for v in range(100)]
    text = encode_history(long_alias)
    assert len(text) <= MAX_HISTORY_CHARS
    assert json.loads(text) == long_alias[: len(json.loads(text))]
    assert " " not in encode_history(history)
