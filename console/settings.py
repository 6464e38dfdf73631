"""Settings of the console (``PROMOTER_CONSOLE_*``); Kafka and topic names come from the shared settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from runtime.settings import PromoterSettings, comma_list

#: Bounds of an automatic refresh's interval: a page reads its topics to their end each time.
MIN_REFRESH_INTERVAL_S = 2.0
MAX_REFRESH_INTERVAL_S = 3600.0


class ConsoleSettings(PromoterSettings):
    model_config = SettingsConfigDict(env_prefix="PROMOTER_CONSOLE_")

    host: str = Field("127.0.0.1", description="Bind address of the console (Streamlit's server).")
    port: int = Field(8501, ge=0, le=65535, description="Port of the console.")
    gateway_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8080"],
        description="Comma-separated base URLs of the gateways the Try-a-model page can call.",
    )
    allow_replay: bool = Field(
        False, description="Show the Replay button on the Dead letters page (`promoter console --allow-replay`)."
    )
    read_timeout_s: float = Field(30.0, gt=0, description="Deadline to read a topic to its end for one page.")
    refresh_interval_s: float = Field(
        10.0,
        ge=MIN_REFRESH_INTERVAL_S,
        le=MAX_REFRESH_INTERVAL_S,
        description="The interval a page's 'Refresh automatically' toggle starts with (Serving, Dead letters).",
    )

    @field_validator("gateway_urls", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        value = comma_list(value)
        if isinstance(value, list):
            if not value:
                raise ValueError("at least one gateway URL (http://host:port) is required")
            return [str(url).rstrip("/") for url in value]
        return value
