"""Prometheus groundwork: one registry per service, standard buckets, bounded label values.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms). Label values
must come from bounded sets (reason codes, stage names, outcomes); :func:`bounded_label` folds
anything unexpected into ``other`` so a bad input cannot explode the series count.
"""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

#: Seconds; fits both a 3 ms inference and a 10 s model load.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
OTHER_LABEL = "other"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def new_registry(*, process_metrics: bool = True) -> CollectorRegistry:
    """A fresh registry (not the global one), with process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=True)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format of ``registry`` (serve with ``METRICS_CONTENT_TYPE``)."""
    return generate_latest(registry)


def bounded_label(value: str, allowed: Collection[str]) -> str:
    """``value`` if it is one of ``allowed``, else ``"other"``."""
    return value if value in allowed else OTHER_LABEL
