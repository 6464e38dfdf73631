"""Two worker replicas in one group, disrupted mid-flight: a forced rebalance, a replica frozen until the group
evicted it. Neither loses a request nor decides one twice."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from deploy.stack.local_stack import LocalStack
from tests.group_rebalance import (
    Disruption,
    first_frozen_past_its_session,
    intruder_joins_and_leaves,
    rebalance_mid_flight,
)
from tests.worker_harness import register_iris

pytestmark = pytest.mark.integration

MODELS = 12


async def promoted_through(stack: LocalStack, run_dir: Path, disrupt: Disruption) -> None:
    models = {
        name: register_iris(stack.mlflow_tracking_uri, name)
        for name in (f"iris-reb{i}-{uuid.uuid4().hex[:6]}" for i in range(MODELS))
    }
    figures = await rebalance_mid_flight(
        stack, run_dir, models, served_timeout_s=120, worker_env={"PROMOTER_WORKER_CONCURRENCY": "2"}, disrupt=disrupt
    )

    # Partitions were revoked while promotions were under way.
    assert figures["rebalance_lanes_at_revocation"] > 0, figures
    # Exactly one decision per request, none without, and each version loaded once.
    assert figures["rebalance_requests"] == MODELS
    assert figures["rebalance_lost"] == 0, figures
    assert figures["rebalance_duplicates"] == 0, figures
    assert figures["rebalance_duplicate_loads"] == 0, figures
    assert figures["rebalance_served_by_first"] + figures["rebalance_served_by_second"] >= MODELS, figures


async def test_a_rebalance_in_the_middle_of_promotions_neither_loses_nor_repeats_a_request(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    # A member joins, then leaves: two rebalances, each revoking every partition of both replicas.
    await promoted_through(local_stack, tmp_path, intruder_joins_and_leaves)


async def test_a_replica_frozen_past_its_session_neither_loses_nor_repeats_a_request(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    # Evicted while frozen, the first replica resumes the promotions it had in flight after the second took
    # them over from their last commit: each request's answer reaches the other replica through the log in time.
    await promoted_through(local_stack, tmp_path, first_frozen_past_its_session)
