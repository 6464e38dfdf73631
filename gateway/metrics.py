"""Prometheus metrics of a gateway replica. Labels are bounded: models and aliases come from the log,
an unknown model is counted as ``unknown``, Triton endpoints come from the settings, APIs, protocols, outcomes,
retry reasons and ejection scopes (``gateway.endpoint_rotation``) are fixed sets."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from runtime.metrics import LATENCY_BUCKETS_S, bounded_label, new_registry

HTTP = "http"
GRPC = "grpc"
SHADOW_OUTCOMES = ("ok", "error", "timeout", "unavailable", "dropped")
MERGE_OUTCOMES = ("merged", "retried_alone", "failed")
UNKNOWN_MODEL = "unknown"
#: Why an inference was sent again to another endpoint: it failed before Triton ran it.
RETRY_REASONS = ("unreachable", "reset", "unavailable", "unknown_model", "trial_timeout")
#: Finer than the shared buckets at the low end: a proxied inference takes a few milliseconds.
REQUEST_BUCKETS_S: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, *LATENCY_BUCKETS_S[3:])


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = new_registry()
        self.requests = Counter(
            "gateway_requests_total",
            "Inference requests answered, by model, alias, version, API, protocol (http, grpc) and HTTP status "
            "(for gRPC the HTTP status its status code stands for, e.g. 404 for NOT_FOUND).",
            ["model", "alias", "version", "api", "protocol", "code"],
            registry=self.registry,
        )
        self.errors = Counter(
            "gateway_errors_total",
            "Inference requests that failed, by model, alias, version and reason.",
            ["model", "alias", "version", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer one inference request, by model, API and protocol (http, grpc).",
            ["model", "api", "protocol"],
            buckets=REQUEST_BUCKETS_S,
            registry=self.registry,
        )
        self.swaps = Counter(
            "gateway_swaps_total",
            "Routing changes applied from the log after start-up (swap, stop, policy).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.stale_events = Counter(
            "gateway_stale_events_total", "Log events ignored as stale (generation not newer).", registry=self.registry
        )
        self.log_records = Counter(
            "gateway_log_records_total", "Records read from model.ready and routing.updated.", registry=self.registry
        )
        self.shadow = Counter(
            "gateway_shadow_requests_total",
            "Shadow copies by model and outcome; never seen by callers.",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.merged_inferences = Counter(
            "gateway_merged_inferences_total",
            "Triton inferences that carried several waiting requests, by model and outcome (merged: answered "
            "and cut per caller; retried_alone: refused, so sent again one by one; failed: Triton unreachable).",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.merged_requests = Counter(
            "gateway_merged_requests_total",
            "Caller requests answered from a merged Triton inference, by model.",
            ["model"],
            registry=self.registry,
        )
        self.upstream_retries = Counter(
            "gateway_upstream_retries_total",
            "Inferences sent again to another Triton endpoint because the first failed before Triton ran them, "
            "by reason (unreachable, reset, unavailable: HTTP 503, unknown_model: not loaded or not ready there, "
            "trial_timeout: an ejected endpoint's trial got no answer within half the deadline).",
            ["reason"],
            registry=self.registry,
        )
        self.ejections = Counter(
            "gateway_endpoint_ejections_total",
            "Triton endpoints taken out of rotation, by endpoint and scope (endpoint: for every model, model: for "
            "one Triton model).",
            ["endpoint", "scope"],
            registry=self.registry,
        )
        self.readmissions = Counter(
            "gateway_endpoint_readmissions_total",
            "Ejected Triton endpoints let back into rotation (Triton answered a request there, or no request tried it "
            "for 60 s), by endpoint and scope.",
            ["endpoint", "scope"],
            registry=self.registry,
        )
        self.ejected = Gauge(
            "gateway_ejected_upstreams",
            "Out of rotation now: whole Triton endpoints (scope endpoint) and (endpoint, Triton model) pairs "
            "(scope model).",
            ["scope"],
            registry=self.registry,
        )
        self.grpc_front_restarts = Counter(
            "gateway_grpc_front_restarts_total",
            "Native gRPC front processes started again after one died (PROMOTER_GATEWAY_GRPC_FRONT=native).",
            registry=self.registry,
        )
        self.ready = Gauge("gateway_ready", "1 once the serving-state log is replayed.", registry=self.registry)
        self.routes = Gauge("gateway_routes", "Aliases currently routed.", registry=self.registry)

    def shadow_outcome(self, model: str, outcome: str) -> None:
        self.shadow.labels(model, bounded_label(outcome, SHADOW_OUTCOMES)).inc()

    def merged_inference(self, model: str, outcome: str, *, requests: int = 0) -> None:
        self.merged_inferences.labels(model, bounded_label(outcome, MERGE_OUTCOMES)).inc()
        if requests:
            self.merged_requests.labels(model).inc(requests)

    def upstream_retry(self, reason: str) -> None:
        self.upstream_retries.labels(bounded_label(reason, RETRY_REASONS)).inc()
