"""What every console page shares: its settings, and reading the topics with a failure shown to the reader."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import streamlit as st

from console.settings import ConsoleSettings
from promoter_cli.errors import KAFKA_UNREACHABLE
from runtime.settings import KafkaSettings, TopicSettings
from runtime.topic_reading import MissingTopicError

T = TypeVar("T")


@dataclass(frozen=True)
class ConsoleConfig:
    console: ConsoleSettings
    kafka: KafkaSettings
    topics: TopicSettings

    @classmethod
    def from_env(cls) -> ConsoleConfig:
        return cls(ConsoleSettings(), KafkaSettings(), TopicSettings())


def read_topics(what: str, reading: Coroutine[Any, Any, T], kafka: KafkaSettings) -> T | None:
    """Run one topic read under a spinner; on failure show why and what to check, and return None."""
    try:
        with st.spinner(f"reading {what} ..."):
            return asyncio.run(reading)
    except MissingTopicError as error:
        st.error(str(error))
    except TimeoutError as error:
        st.error(f"cannot read {what} to its end: {error}; is the broker overloaded? (PROMOTER_CONSOLE_READ_TIMEOUT_S)")
    except KAFKA_UNREACHABLE as error:
        st.error(
            f"cannot reach Kafka at {kafka.bootstrap_servers}: {error}; check PROMOTER_KAFKA_BOOTSTRAP_SERVERS "
            "(and the PROMOTER_KAFKA_* security settings)"
        )
    return None
