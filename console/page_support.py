"""What every console page shares: its settings, reading the topics with a failure shown to the reader, and
an opt-in automatic refresh of what a page read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import streamlit as st

from console.settings import MAX_REFRESH_INTERVAL_S, MIN_REFRESH_INTERVAL_S, ConsoleSettings
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


def refreshing(page: str, settings: ConsoleSettings, content: Callable[[], None]) -> None:
    """Render ``content``; with the page's "Refresh automatically" toggle on (off at first), Streamlit reruns it,
    and only it, every chosen number of seconds (``st.fragment(run_every=...)``): the page reads its topics again.

    Widgets inside ``content`` keep their values across refreshes (keyed); the toggle and interval are per page.
    """
    toggle, interval = st.columns([1, 2])
    on = toggle.toggle("Refresh automatically", key=f"{page}.auto_refresh")
    every = interval.number_input(
        "every (seconds)",
        min_value=MIN_REFRESH_INTERVAL_S,
        max_value=MAX_REFRESH_INTERVAL_S,
        value=settings.refresh_interval_s,
        step=1.0,
        key=f"{page}.refresh_s",
        disabled=not on,
    )
    st.fragment(content, run_every=every if on else None)()
