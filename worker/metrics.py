"""Prometheus metrics of the worker. Every label value comes from a bounded set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime.metrics import LATENCY_BUCKETS_S, new_registry

OUTCOMES = ("served", "prepared", "rejected", "dead_lettered", "duplicate", "coalesced", "unserved")
ENDPOINT_STATES = ("in_sync", "repairing", "down")
REPAIR_OUTCOMES = ("repaired", "failed")
WRITEBACK_OUTCOMES = ("written", "failed", "dropped", "forbidden")


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or new_registry()
        self.promotions = Counter(
            "promoter_promotions_total",
            "Promotion requests handled, by outcome and reason code.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "promoter_promotion_stage_seconds",
            "Time spent in each promotion stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.promotion_seconds = Histogram(
            "promoter_promotion_seconds",
            "Time from a request consumed to its model.ready published.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "promoter_dead_letters_total",
            "Messages sent to the dead-letter topic, by reason code and error type.",
            ["reason", "error_type"],
            registry=self.registry,
        )
        self.retries = Counter(
            "promoter_promotion_retries_total", "Retries after transient failures.", registry=self.registry
        )
        self.retirements = Counter(
            "promoter_retirements_total",
            "Old Triton models unloaded and removed after no gateway routed to them.",
            registry=self.registry,
        )
        self.retirement_errors = Counter(
            "promoter_retirement_errors_total",
            "Retirements or retirement sweeps that failed unexpectedly (a bug, a broken model repository); "
            "the worker log has the traceback. Retried at the next sweep.",
            registry=self.registry,
        )
        self.prepared_versions = Gauge(
            "promoter_prepared_versions",
            "Versions loaded and proved on every Triton endpoint, awaiting an alias (not expired), all models.",
            registry=self.registry,
        )
        self.prepared_retired = Counter(
            "promoter_prepared_retired_total",
            "Prepared versions unloaded and removed because no alias took them in time (or newer ones pushed "
            "them out of PROMOTER_WORKER_MAX_PREPARED_VERSIONS).",
            registry=self.registry,
        )
        self.loaded_models = Gauge(
            "promoter_triton_loaded_models",
            "Triton models of this system READY on the first endpoint (updated by every fleet check).",
            registry=self.registry,
        )
        self.fleet_repairs = Counter(
            "promoter_fleet_repairs_total",
            "Models reloaded on a Triton endpoint that restarted or lost them, by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.fleet_repair_seconds = Histogram(
            "promoter_fleet_repair_seconds",
            "Time to reload and prove one model on one endpoint.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.endpoint_state = Gauge(
            "promoter_fleet_endpoint_state",
            "1 for the state each Triton endpoint is in (in_sync, repairing, down), 0 for the others.",
            ["endpoint", "state"],
            registry=self.registry,
        )
        self.endpoint_missing_models = Gauge(
            "promoter_fleet_endpoint_missing_models",
            "Triton models an endpoint should hold and does not.",
            ["endpoint"],
            registry=self.registry,
        )
        self.registry_corrections = Counter(
            "promoter_registry_corrections_total",
            "Requests sent because an MLflow registry alias differs from what is served, by action (promote, unserve).",
            ["action"],
            registry=self.registry,
        )
        self.registry_reconciles = Counter(
            "promoter_registry_reconciles_total",
            "Comparisons of the served aliases with the MLflow registry, by outcome (ok, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.registry_writebacks = Counter(
            "promoter_registry_writebacks_total",
            "Decisions written back to MLflow registry tags, by outcome (written, failed, dropped, forbidden).",
            ["outcome"],
            registry=self.registry,
        )
        self.log_records = Gauge(
            "promoter_serving_log_records",
            "Records of model.ready this worker has read.",
            registry=self.registry,
        )
