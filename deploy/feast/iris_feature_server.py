"""Feast's feature server over a Redis online store holding the iris measurements, for tests and benchmarks.

Runs in the Feast venv (``.cache/feast-server``, ``deploy/feast/requirements.txt``), not the project's:
``python iris_feature_server.py REPO_DIR ROWS_JSON --redis HOST:PORT --host H --port P``. In one process (Feast
takes ~6 s of CPU to import): write the feature repository (``feature_store.yaml``, the parquet source), apply it
(``feast apply``), materialise the rows into Redis (``feast materialize``), then serve ``/get-online-features``
(what ``feast serve`` runs, without gunicorn's fork). ``ROWS_JSON`` is a list of ``{"iris_id": int, feature: float}``.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import uvicorn
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.feature_server import get_app
from feast.types import Float64

ENTITY = "iris_id"
VIEW = "iris_measurements"
SERVICE = "iris_v1"
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
EVENT_TIME = datetime(2026, 1, 1, tzinfo=UTC)

STORE_YAML = """project: iris
provider: local
registry: registry.db
online_store:
  type: redis
  connection_string: "{redis}"
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def build_store(repo: Path, rows_json: Path, redis: str) -> FeatureStore:
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(STORE_YAML.format(redis=redis))
    frame = pd.DataFrame(json.loads(rows_json.read_text()))
    frame["event_timestamp"] = pd.Timestamp(EVENT_TIME)
    source_path = repo / "iris.parquet"
    frame.to_parquet(source_path)
    entity = Entity(name="iris", join_keys=[ENTITY], value_type=ValueType.INT64)
    view = FeatureView(
        name=VIEW,
        entities=[entity],
        ttl=timedelta(days=3650),
        schema=[Field(name=name, dtype=Float64) for name in FEATURES],
        source=FileSource(path=str(source_path), timestamp_field="event_timestamp"),
        online=True,
    )
    store = FeatureStore(repo_path=str(repo))
    store.apply([entity, view, FeatureService(name=SERVICE, features=[view])])
    store.materialize(EVENT_TIME - timedelta(days=1), EVENT_TIME + timedelta(days=1))
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("repo", type=Path)
    parser.add_argument("rows", type=Path)
    parser.add_argument("--redis", required=True, help="host:port of the Redis online store")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    store = build_store(args.repo, args.rows, args.redis)
    print("materialised", flush=True)
    uvicorn.run(get_app(store, 5), host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
