"""Configuration shared by every service, read from the environment with pydantic-settings.

Every variable is named ``PROMOTER_<GROUP>_<FIELD>`` and documented in the README's
settings table (``tests/unit/runtime/test_settings_documented.py`` fails when one is missing).
Service-specific settings subclass :class:`PromoterSettings` in their own package.
"""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas import topics


def comma_list(value: object) -> object:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: how a list setting is written in one environment variable.

    For ``field_validator(..., mode="before")``; anything but a string (a list from code) passes unchanged.
    """
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class PromoterSettings(BaseSettings):
    """Base class: every subclass's variables must appear in the README table."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)


class KafkaSettings(PromoterSettings):
    """How to reach the Kafka-protocol broker. Defaults suit real Kafka; the local stack overrides some."""

    model_config = SettingsConfigDict(env_prefix="PROMOTER_KAFKA_")

    bootstrap_servers: str = Field("localhost:9092", description="Comma-separated host:port list.")
    client_id: str = Field("model-promoter", description="Client id reported to the broker.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How clients talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (PLAIN when SASL is on and this is unset)."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password; never logged or printed.")
    ssl_cafile: Path | None = Field(None, description="CA bundle for SSL / SASL_SSL.")
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS.")
    fetch_max_wait_ms: int = Field(500, ge=1, description="Consumer long-poll wait; drives latency.")
    session_timeout_ms: int = Field(10_000, ge=1000, description="Consumer group session timeout.")
    heartbeat_interval_ms: int = Field(3_000, ge=100, description="Consumer group heartbeat interval.")
    request_timeout_ms: int = Field(40_000, ge=1000, description="Broker request timeout.")
    enable_idempotence: bool = Field(
        True, description="Idempotent producer. The local tansu broker cannot do it: set false there."
    )
    linger_ms: int = Field(0, ge=0, description="Producer batching delay.")
    create_topics: bool = Field(
        True,
        description=(
            "Create missing topics at start-up; false: only check they exist and refuse to start without them "
            "(Kubernetes, where Strimzi KafkaTopic objects create them)."
        ),
    )

    def bootstrap_list(self) -> list[str]:
        """The bootstrap servers, one ``host:port`` each."""
        servers = comma_list(self.bootstrap_servers)
        assert isinstance(servers, list)  # noqa: S101 - a str setting always splits into a list
        return servers

    def _security_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
            if self.ssl_certfile:
                context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None)
            kwargs["ssl_context"] = context
        if self.security_protocol.startswith("SASL_"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return kwargs

    def common_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client (producer, consumer, admin) takes."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            **self._security_kwargs(),
        }

    def producer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``aiokafka.AIOKafkaProducer``."""
        return {
            **self.common_kwargs(),
            "acks": "all",
            "enable_idempotence": self.enable_idempotence,
            "linger_ms": self.linger_ms,
        }

    def consumer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``aiokafka.AIOKafkaConsumer``."""
        return {
            **self.common_kwargs(),
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "auto_offset_reset": "earliest",
            "enable_auto_commit": False,
        }


class MLflowSettings(PromoterSettings):
    """Where the MLflow tracking server (and model registry) is."""

    model_config = SettingsConfigDict(env_prefix="PROMOTER_MLFLOW_")

    tracking_uri: str = Field("http://localhost:5000", description="MLflow tracking server URI.")
    request_timeout_s: float = Field(30.0, gt=0, description="Timeout of one registry call.")


class TritonSettings(PromoterSettings):
    """The Triton servers a promotion loads models into, and the repository they read."""

    model_config = SettingsConfigDict(env_prefix="PROMOTER_TRITON_")

    endpoints: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost:8000"],
        description="Comma-separated host:port list, one per Triton replica, all sharing one repository.",
    )
    protocol: Literal["http", "grpc"] = Field("http", description="Protocol used on those endpoints.")
    model_repository: Path = Field(Path("./model-repository"), description="Triton --model-repository.")
    load_timeout_s: float = Field(120.0, gt=0, description="Deadline for one explicit model load.")
    request_timeout_s: float = Field(10.0, gt=0, description="Deadline for one inference or API call.")
    admin_header: str = Field(
        "x-promoter-admin",
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="Header name of Triton's --http-restricted-api / --grpc-restricted-protocol (lower case).",
    )
    admin_token: SecretStr | None = Field(
        None, description="Value of that header; unset: no header is sent (for a Triton without the restriction)."
    )

    @field_validator("admin_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            # An empty Secret (a missing key) would send an empty header and read as a refused token.
            raise ValueError("is set but empty: set the token Triton expects, or unset it for an unrestricted Triton")
        return value

    @field_validator("endpoints", mode="before")
    @classmethod
    def _split_endpoints(cls, value: object) -> object:
        value = comma_list(value)
        if isinstance(value, list) and not value:
            raise ValueError("at least one Triton endpoint (host:port) is required")
        return value


class LogSettings(PromoterSettings):
    """Logging output of every service."""

    model_config = SettingsConfigDict(env_prefix="PROMOTER_LOG_")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level logged.")
    format: Literal["json", "console"] = Field("json", description="json for machines, console for people.")


class TopicSettings(PromoterSettings):
    """Topic names (defaults in :mod:`schemas.topics`) and how to create them."""

    model_config = SettingsConfigDict(env_prefix="PROMOTER_TOPIC_")

    promotion_requested: str = Field(topics.PROMOTION_REQUESTED.name, description="Promotion requests.")
    model_ready: str = Field(topics.MODEL_READY.name, description="The serving-state log.")
    model_rejected: str = Field(topics.MODEL_REJECTED.name, description="Promotions that failed for good.")
    promotion_dlq: str = Field(topics.PROMOTION_DLQ.name, description="Dead letters.")
    gateway_status: str = Field(topics.GATEWAY_STATUS.name, description="Gateway acks and heartbeats, worker views.")
    routing_updated: str = Field(topics.ROUTING_UPDATED.name, description="A/B weights and shadow per model.")
    dead_letter_replays: str = Field(topics.DEAD_LETTER_REPLAYS.name, description="Audit of dead-letter replays.")
    replication_factor: int = Field(1, ge=1, description="Replication factor when creating topics.")

    def specs(self) -> list[topics.TopicSpec]:
        """Every topic with the configured name."""
        renamed = {
            topics.PROMOTION_REQUESTED: self.promotion_requested,
            topics.MODEL_READY: self.model_ready,
            topics.MODEL_REJECTED: self.model_rejected,
            topics.PROMOTION_DLQ: self.promotion_dlq,
            topics.GATEWAY_STATUS: self.gateway_status,
            topics.ROUTING_UPDATED: self.routing_updated,
            topics.DEAD_LETTER_REPLAYS: self.dead_letter_replays,
        }
        return [replace(spec, name=name) for spec, name in renamed.items()]
