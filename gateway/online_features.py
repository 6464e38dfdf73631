"""Feast online features for ``/predict``: records may carry an entity id instead of, or besides, feature values.

A model configured in ``PROMOTER_GATEWAY_FEAST_MODELS`` names its entity key (e.g. ``iris_id``) and, for each
signature column, the Feast feature reference that holds it (``iris_measurements:petal_width``), optionally the
feature service to ask for. For a record with an entity id and missing columns the gateway asks Feast's feature
server (``POST /get-online-features``, ``PROMOTER_GATEWAY_FEAST_SERVER_URL``) for the missing features of all such
records at once. Values in the payload always win; only missing columns are filled.

The feature store never makes a request fail with a 5xx: when it is unreachable, answers an error, is slower
than ``PROMOTER_GATEWAY_FEAST_TIMEOUT_S`` or has no features for an entity, the record is served from its payload
alone, and if that is incomplete the answer is a 422 naming the missing features and why they could not be
looked up. Requests whose records are complete (or carry no entity id, or are for a model without a feature
configuration) never reach the feature store.

The gateway speaks Feast's HTTP API and imports nothing of Feast: Feast runs in its own process and venv
(its pins conflict with the project's: README "Feast online features").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.settings import FeatureSource
from runtime.logging import get_logger
from runtime.metrics import LATENCY_BUCKETS_S

log = get_logger(__name__)

ONLINE_FEATURES_PATH = "/get-online-features"
#: Why a lookup fell back to the payload alone.
FALLBACK_REASONS = ("timeout", "unreachable", "error")


class MissingFeatures(ValueError):
    """A record is still incomplete after the lookup; ``field`` names the first missing feature."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class FeatureMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.lookups = Counter(
            "gateway_feature_lookups_total",
            "Lookups sent to the Feast feature server for /predict records that carried an entity id and missed "
            "features, by model.",
            ["model"],
            registry=registry,
        )
        self.misses = Counter(
            "gateway_feature_misses_total",
            "Entities the feature store had no features for, by model.",
            ["model"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "gateway_feature_fallbacks_total",
            "Lookups that fell back to the payload alone, by model and reason (timeout: past "
            "PROMOTER_GATEWAY_FEAST_TIMEOUT_S; unreachable: no connection; error: an error or unreadable answer).",
            ["model", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "gateway_feature_lookup_duration_seconds",
            "Time of one feature-store lookup, failed ones included, by model.",
            ["model"],
            buckets=(0.0005, 0.001, 0.002, 0.005, *LATENCY_BUCKETS_S[2:]),
            registry=registry,
        )


@dataclass
class _Pending:
    """A record that carries an entity id and misses features."""

    where: str
    record: dict[str, Any]
    entity: int | str
    missing: list[str]


@dataclass
class _Lookup:
    """What the feature store answered: entity id -> feature name -> value (None: not found)."""

    values: dict[int | str, dict[str, Any]] = field(default_factory=dict)
    failure: str | None = None  # why the lookup failed, for people


class OnlineFeatures:
    """Completes /predict records from Feast's feature server, for the models configured."""

    def __init__(
        self,
        server_url: str,
        sources: dict[str, FeatureSource],
        timeout_s: float,
        metrics: FeatureMetrics,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.sources = sources
        self.timeout_s = timeout_s
        self.metrics = metrics
        self._url = server_url.rstrip("/") + ONLINE_FEATURES_PATH
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def close(self) -> None:
        await self._client.aclose()

    def source_for(self, model: str) -> FeatureSource | None:
        return self.sources.get(model)

    async def complete(self, model: str, source: FeatureSource, columns: list[str], body: Any) -> Any:
        """``body`` (one record or a list) with entity ids removed and missing features filled from Feast.

        Payload values win. Records without an entity id are returned as they are (the usual validation names
        what they miss); a record with one that stays incomplete raises :class:`MissingFeatures`.
        """
        records = body if isinstance(body, list) else [body]
        if not any(isinstance(r, dict) and source.entity_key in r for r in records):
            return body
        completed: list[Any] = []
        pending: list[_Pending] = []
        for index, record in enumerate(records):
            if not isinstance(record, dict) or source.entity_key not in record:
                completed.append(record)
                continue
            where = f"records[{index}]" if isinstance(body, list) else "record"
            entity = _entity_id(record[source.entity_key], f"{where}.{source.entity_key}")
            values = {name: value for name, value in record.items() if name != source.entity_key}
            completed.append(values)
            missing = [column for column in columns if column not in values]
            if missing:
                pending.append(_Pending(where, values, entity, missing))
        if pending:
            lookup = await self._lookup(model, source, pending)
            for item in pending:
                found = lookup.values.get(item.entity, {})
                for column in item.missing:
                    value = found.get(source.feature_name(column)) if column in source.features else None
                    if value is not None:
                        item.record[column] = value
                _raise_if_incomplete(item, source, lookup)
        return completed if isinstance(body, list) else completed[0]

    async def _lookup(self, model: str, source: FeatureSource, pending: list[_Pending]) -> _Lookup:
        entities = list(dict.fromkeys(item.entity for item in pending))
        wanted = {column for item in pending for column in item.missing if column in source.features}
        if not wanted:
            return _Lookup()
        request: dict[str, Any] = {"entities": {source.entity_key: entities}}
        if source.feature_service:
            request["feature_service"] = source.feature_service
        else:
            request["features"] = sorted(source.features[column] for column in wanted)
        self.metrics.lookups.labels(model).inc()
        started = time.perf_counter()
        reason, failure = None, None
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.post(self._url, json=request)
            answer = _parse_answer(response, source.entity_key, entities)
        except (TimeoutError, httpx.TimeoutException):
            reason, failure = "timeout", f"the feature store did not answer within {self.timeout_s:g} s"
        except httpx.TransportError as error:
            reason, failure = "unreachable", f"the feature store is unreachable ({type(error).__name__})"
        except FeatureStoreError as error:
            reason, failure = "error", f"the feature store failed: {error}"
        finally:
            self.metrics.latency.labels(model).observe(time.perf_counter() - started)
        if reason is not None:
            self.metrics.fallbacks.labels(model, reason).inc()
            log.warning("feature lookup fell back to the payload", model=model, reason=reason, detail=failure)
            return _Lookup(failure=failure)
        names = {source.feature_name(column) for column in wanted}
        misses = sum(1 for entity in entities if all(answer.get(entity, {}).get(n) is None for n in names))
        if misses:
            self.metrics.misses.labels(model).inc(misses)
        return _Lookup(values=answer)


class FeatureStoreError(Exception):
    """The feature server answered, but not with online features."""


def _entity_id(value: Any, where: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MissingFeatures(where, f"{where}: must be an entity id (an integer or a string)")
    return value


def _parse_answer(response: httpx.Response, entity_key: str, entities: list[int | str]) -> dict[int | str, Any]:
    """Feast's ``/get-online-features`` JSON as entity id -> feature name -> value."""
    if response.status_code != 200:
        raise FeatureStoreError(f"HTTP {response.status_code}: {response.text[:200]}")
    try:
        document = response.json()
        names = document["metadata"]["feature_names"]
        columns = [result["values"] for result in document["results"]]
    except (ValueError, KeyError, TypeError) as error:
        raise FeatureStoreError(f"unreadable answer ({type(error).__name__})") from error
    if len(names) != len(columns) or any(len(c) != len(entities) for c in columns):
        raise FeatureStoreError("an answer that does not match the entities asked for")
    by_name = dict(zip(names, columns, strict=True))
    by_name.pop(entity_key, None)
    return {entity: {name: values[row] for name, values in by_name.items()} for row, entity in enumerate(entities)}


def _raise_if_incomplete(item: _Pending, source: FeatureSource, lookup: _Lookup) -> None:
    still = [column for column in item.missing if column not in item.record]
    if not still:
        return
    if lookup.failure is not None:
        why = lookup.failure
    elif any(column not in source.features for column in still):
        why = "not in this model's feature configuration (PROMOTER_GATEWAY_FEAST_MODELS)"
    else:
        why = f"no online features for {source.entity_key}={item.entity!r}"
    listed = ", ".join(repr(column) for column in still)
    raise MissingFeatures(
        f"{item.where}.{still[0]}",
        f"{item.where}: missing features {listed} ({why}; send them in the payload)",
    )
