"""Settings of a gateway replica (``PROMOTER_GATEWAY_*``), beside the shared ones in runtime.settings."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from gateway.triton_connections import Endpoint
from runtime.settings import KafkaSettings, PromoterSettings, TopicSettings, TritonSettings, comma_list
from schemas.names import Alias


class FeatureSource(BaseModel):
    """Where one model's features live in Feast (one entry of ``PROMOTER_GATEWAY_FEAST_MODELS``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity_key: str = Field(min_length=1, description="Feast join key the records carry, e.g. iris_id.")
    features: dict[str, str] = Field(
        min_length=1,
        description="Signature column -> Feast feature reference 'feature_view:feature'.",
    )
    feature_service: str | None = Field(
        None, min_length=1, description="Ask Feast for this feature service instead of the references."
    )

    @model_validator(mode="after")
    def _references(self) -> FeatureSource:
        bad = sorted(column for column, ref in self.features.items() if ref.count(":") != 1 or ref.startswith(":"))
        if bad:
            raise ValueError(f"features[{bad[0]!r}]: expected a Feast reference 'feature_view:feature'")
        return self

    def feature_name(self, column: str) -> str:
        """The name Feast answers with for ``column`` (the reference without its view)."""
        return self.features[column].split(":", 1)[1]


class GatewaySettings(PromoterSettings):
    model_config = SettingsConfigDict(env_prefix="PROMOTER_GATEWAY_")

    gateway_id: str = Field(default_factory=socket.gethostname, description="Names this replica in acks and logs.")
    host: str = Field("127.0.0.1", description="Bind address of the HTTP API.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP API.")
    grpc_port: int = Field(
        8085, ge=0, le=65535, description="Port of the gRPC API (inference.GRPCInferenceService), on the same host."
    )
    grpc_front: Literal["native", "python"] = Field(
        "native",
        description=(
            "Who answers PROMOTER_GATEWAY_GRPC_PORT: native (the Go front promoter-grpc-front, `make grpc-front`, "
            "with the Python server as its slow path on a loopback port) or python (the Python server alone)."
        ),
    )
    grpc_front_binary: str = Field(
        "",
        description=(
            "Path of promoter-grpc-front (empty: on PATH, else .cache/bin/ of the checkout, where `make grpc-front` "
            "builds it)."
        ),
    )
    grpc_front_threads: int = Field(
        1,
        ge=0,
        description=(
            "Cores the native gRPC front runs Go code on at once (its GOMAXPROCS; 0: every core it may use). One "
            "costs the least CPU per request and answers several thousand requests/s; scale with replicas."
        ),
    )
    triton_grpc_endpoints: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated host:port list of Triton's gRPC endpoints, in the order of PROMOTER_TRITON_ENDPOINTS "
            "(empty: each HTTP endpoint's host with its port + 1, Triton's default 8000/8001 pairing)."
        ),
    )
    client_id_header: str = Field("X-Client-Id", description="Header naming the caller, for sticky A/B routing.")
    default_alias: Alias = Field("champion", description="Alias served when no A/B policy or pin applies.")
    shadow_max_in_flight: int = Field(64, ge=1, description="Shadow copies in flight at most; more are dropped.")
    merge_in_flight_per_endpoint: int = Field(
        1,
        ge=0,
        description=(
            "Inferences per Triton model and endpoint in flight before new small requests wait and are merged "
            "into one inference (0: never merge)."
        ),
    )
    heartbeat_interval_s: float = Field(5.0, gt=0, description="Period of the heartbeat on gateway.status.")
    triton_connect_timeout_s: float = Field(1.0, gt=0, description="Deadline to connect to Triton.")
    ejection_backoff_initial_s: float = Field(
        0.5,
        gt=0,
        description=(
            "How long a failing Triton endpoint (or endpoint and model) stays out of rotation before one trial "
            "request; doubles after every failed trial."
        ),
    )
    ejection_backoff_max_s: float = Field(5.0, gt=0, description="Longest time out of rotation before a trial.")
    max_request_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Largest request body accepted; larger ones get a 413."
    )
    replay_timeout_s: float = Field(120.0, gt=0, description="Deadline to replay the serving-state log at start.")
    feast_server_url: str | None = Field(
        None, description="Feast feature server (`feast serve`) for /predict records with entity ids; unset: none."
    )
    feast_models: dict[str, FeatureSource] = Field(
        default_factory=dict,
        description=(
            "JSON: registered model name -> {entity_key, features: {signature column: 'view:feature'}, "
            "feature_service?}: the models whose /predict records may carry entity ids."
        ),
    )
    feast_timeout_s: float = Field(
        0.25, gt=0, description="Deadline of one feature lookup; past it the payload alone is used."
    )

    @model_validator(mode="after")
    def _feast_server_for_models(self) -> GatewaySettings:
        if self.feast_models and not self.feast_server_url:
            raise ValueError("PROMOTER_GATEWAY_FEAST_MODELS needs PROMOTER_GATEWAY_FEAST_SERVER_URL")
        return self

    @field_validator("triton_grpc_endpoints", mode="before")
    @classmethod
    def _split_endpoints(cls, value: object) -> object:
        return comma_list(value)

    def triton_grpc_targets(self, http_endpoints: list[str]) -> list[str]:
        """Triton's gRPC addresses: the configured ones, else derived from the HTTP endpoints (port + 1)."""
        if self.triton_grpc_endpoints:
            return list(self.triton_grpc_endpoints)
        return [_next_port(endpoint) for endpoint in http_endpoints]


def _next_port(endpoint: str) -> str:
    parsed = Endpoint.parse(endpoint)
    return Endpoint(parsed.host, parsed.port + 1, parsed.tls).authority


@dataclass(frozen=True)
class GatewayConfig:
    """Every setting a gateway replica reads, loaded once from the environment."""

    kafka: KafkaSettings
    topics: TopicSettings
    triton: TritonSettings
    gateway: GatewaySettings

    @classmethod
    def from_env(cls) -> GatewayConfig:
        return cls(KafkaSettings(), TopicSettings(), TritonSettings(), GatewaySettings())
