"""Two worker replicas in one group: a rebalance forced mid-flight neither loses a request nor serves one twice."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from deploy.stack.local_stack import LocalStack
from tests.group_rebalance import rebalance_mid_flight
from tests.worker_harness import register_iris

pytestmark = pytest.mark.integration

MODELS = 12


async def test_a_rebalance_in_the_middle_of_promotions_neither_loses_nor_repeats_a_request(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    models = {
        name: register_iris(local_stack.mlflow_tracking_uri, name)
        for name in (f"iris-reb{i}-{uuid.uuid4().hex[:6]}" for i in range(MODELS))
    }
    figures = await rebalance_mid_flight(
        local_stack, tmp_path, models, served_timeout_s=120, PROMOTER_WORKER_CONCURRENCY="2"
    )

    # The rebalances (a member joining, then leaving) revoked partitions while promotions were under way.
    assert figures["rebalance_lanes_at_revocation"] > 0, figures
    # Exactly one decision per request, none without, and each version loaded once.
    assert figures["rebalance_requests"] == MODELS
    assert figures["rebalance_lost"] == 0, figures
    assert figures["rebalance_duplicates"] == 0, figures
    assert figures["rebalance_duplicate_loads"] == 0, figures
    assert figures["rebalance_served_by_first"] + figures["rebalance_served_by_second"] >= MODELS, figures
