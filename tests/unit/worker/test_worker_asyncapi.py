"""The worker's AsyncAPI document (served at /docs/asyncapi) lists its topics and event schemas."""

from __future__ import annotations

import json

from faststream.specification import AsyncAPI

from runtime.settings import TopicSettings
from worker.app import build_app


def test_asyncapi_lists_every_topic_the_worker_reads_and_writes() -> None:
    broker = build_app().broker
    assert broker is not None
    document = json.loads(AsyncAPI(broker, title="worker").to_specification().to_json())

    addresses = {channel["address"] for channel in document["channels"].values()}
    topics = TopicSettings()
    assert addresses == {
        topics.promotion_requested,
        topics.model_ready,
        topics.model_rejected,
        topics.promotion_dlq,
        topics.gateway_status,
    }
    assert {"ModelReady", "PromotionRejected", "SignatureSummary", "WorkerFleetStatus"} <= set(
        document["components"]["schemas"]
    )
