"""Settings of the promotion worker (``PROMOTER_WORKER_*``), beside the shared ones in runtime.settings."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from runtime.settings import PromoterSettings


class WorkerSettings(PromoterSettings):
    model_config = SettingsConfigDict(env_prefix="PROMOTER_WORKER_")

    replica_id: str = Field(default_factory=socket.gethostname, description="Names this replica in events.")
    group_id: str = Field("model-promoter-worker", description="Kafka consumer group of all worker replicas.")
    download_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "model-promoter-downloads",
        description="Scratch space for MLflow artifact downloads.",
    )
    max_artifact_bytes: int = Field(2 * 1024**3, gt=0, description="Largest artifact tree accepted.")
    max_attempts: int = Field(5, ge=1, description="Tries of a transiently failing promotion before the DLQ.")
    backoff_initial_s: float = Field(0.5, gt=0, description="First retry delay; doubles per attempt, with jitter.")
    backoff_max_s: float = Field(30.0, gt=0, description="Longest retry delay.")
    required_version_tag: str | None = Field(
        None, description="`key=value` every served version must carry, e.g. validation_status=approved."
    )
    metric_thresholds: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Minimum run metrics, e.g. `accuracy>=0.9,f1>=0.8`.",
    )
    max_batch_size: int = Field(64, ge=1, description="Triton max_batch_size (tag triton.max_batch_size).")
    max_queue_delay_us: int = Field(100, ge=0, description="Dynamic batching delay (tag triton.max_queue_delay_us).")
    instance_count: int = Field(1, ge=1, description="Model instances per Triton (tag triton.instance_count).")
    parity_rtol: float = Field(1e-6, ge=0, description="Relative tolerance of the Triton vs MLflow parity check.")
    parity_atol: float = Field(1e-6, ge=0, description="Absolute tolerance of the parity check.")
    onnx_backend: bool = Field(False, description="Every Triton endpoint has the onnxruntime backend.")
    keep_loaded_versions: int = Field(2, ge=1, description="Versions per model kept loaded for instant rollback.")
    prepared_ttl_s: float = Field(
        3600.0, gt=0, description="A prepared version no alias takes within this long is unloaded and removed."
    )
    max_prepared_versions: int = Field(
        2, ge=1, description="Prepared versions per model awaiting an alias; a newer one pushes the oldest out."
    )
    concurrency: int = Field(
        1,
        ge=1,
        le=64,
        description="Different models this replica promotes at once; one model's requests stay in order.",
    )
    retire_grace_s: float = Field(300.0, ge=0, description="Unload an unacked old version after this long.")
    fleet_check_interval_s: float = Field(
        1.0, gt=0, description="How often each Triton endpoint is checked for a restart or a lost model."
    )
    fleet_status_interval_s: float = Field(
        15.0, gt=0, description="How often the fleet view is published for `promoter status` (also on change)."
    )
    reconcile_interval_s: float = Field(
        300.0, ge=0, description="How often served aliases are compared with the MLflow registry; 0 turns it off."
    )
    registry_writeback: bool = Field(
        True, description="Write each decision back onto the MLflow model version as `promoter.*` tags."
    )
    alias_history_size: int = Field(
        20, ge=1, le=100, description="Entries kept in the registered model's `promoter.alias_history` tag."
    )
    health_host: str = Field("127.0.0.1", description="Bind address of /health, /ready and /metrics.")
    health_port: int = Field(8081, ge=0, le=65535, description="Port of /health, /ready and /metrics.")

    @field_validator("metric_thresholds", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        thresholds: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, minimum = part.partition(">=")
            if not sep or not name.strip():
                raise ValueError(f"threshold {part!r} must look like metric>=number")
            thresholds[name.strip()] = float(minimum)
        return thresholds

    @field_validator("required_version_tag")
    @classmethod
    def _tag_has_value(cls, value: str | None) -> str | None:
        if value is not None and "=" not in value:
            raise ValueError("must look like key=value")
        return value
