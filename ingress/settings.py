"""Settings of the webhook ingress (``PROMOTER_INGRESS_*``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from runtime.settings import PromoterSettings, comma_list


class IngressSettings(PromoterSettings):
    model_config = SettingsConfigDict(env_prefix="PROMOTER_INGRESS_")

    host: str = Field("127.0.0.1", description="Bind address of the webhook receiver.")
    port: int = Field(8090, ge=0, le=65535, description="Port of the webhook receiver.")
    webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated MLflow webhook secrets; two during a rotation. Required.",
    )
    max_timestamp_skew_s: float = Field(300.0, gt=0, description="Refuse deliveries older or newer than this.")
    dedupe_window: int = Field(100_000, ge=1, description="Delivery ids remembered to drop MLflow's retries.")
    publish_timeout_s: float = Field(10.0, gt=0, description="Answer 503 when Kafka has not acked by then.")
    promote_on_version_created: str | None = Field(
        None, description="Alias to serve every new model version under (e.g. staging); unset: ignore."
    )
    prepare_on_version_created: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Registered models whose every new version is prepared (loaded, proved, routed by no alias), "
            "comma-separated; `*` for every model. Unset: none."
        ),
    )
    promote_on_tag: str | None = Field(
        None, description="`key=value` version tag that promotes the version, e.g. validation_status=approved."
    )
    promote_on_tag_alias: str = Field("staging", description="Alias a version promoted by that tag is served under.")

    def prepares_new_versions_of(self, model_name: object) -> bool:
        """True when the policy prepares every new version of ``model_name``."""
        return "*" in self.prepare_on_version_created or model_name in self.prepare_on_version_created

    @field_validator("webhook_secrets", "prepare_on_version_created", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return comma_list(value)
