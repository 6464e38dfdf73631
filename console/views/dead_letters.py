"""Dead letters: the filters of ``promoter dlq list``, one letter's detail with its next step, and (only when
the console was started with ``--allow-replay``) a Replay button behind a confirmation, writing the same audit
record as ``promoter dlq replay``. The letters are read again every few seconds once asked (page_support.refreshing).
"""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime

import streamlit as st

from console.page_support import ConsoleConfig, read_topics, refreshing
from promoter_cli.dead_letter_log import DeadLetter, LetterFilter, read_dead_letters
from promoter_cli.dead_letter_replay import replay
from promoter_cli.oncall_commands import DEFAULT_MAX_REPLAYS
from runtime.logging import bind_event, get_logger

TITLE = "Dead letters"
PENDING_KEY = "dead_letters.replay_pending"  # (partition, offset) of the letter awaiting confirmation

log = get_logger(__name__)


def _selection() -> LetterFilter | None:
    left, middle, right = st.columns(3)
    model = left.text_input("Model", key="dlq.model", help="Only letters of this registered model.")
    reason = middle.text_input("Reason code", key="dlq.reason", help="e.g. retries_exhausted")
    event_id = right.text_input("Event id", key="dlq.event_id")
    since = left.text_input("Failed since", key="dlq.since", help="2h, 30m, 1d or an ISO 8601 time")
    until = middle.text_input("Failed until", key="dlq.until", help="a duration ago or an ISO 8601 time")
    offsets = right.text_input("Offsets", key="dlq.offsets", help="120 or 100-200")
    try:
        return LetterFilter.parse(
            model=model, reason=reason, since=since, until=until, event_id=event_id, offsets=offsets
        )
    except ValueError as error:
        st.error(str(error))
        return None


def _label(letter: DeadLetter) -> str:
    return f"{letter.partition}:{letter.offset} {letter.model} {letter.target} ({letter.reason_code})"


def _detail(letter: DeadLetter) -> None:
    explained = letter.explained()
    st.subheader(f"Dead letter {letter.partition}:{letter.offset}")
    st.markdown(f"**error:** {explained['error']}")
    st.info(f"Next step: {explained['next_step']}")
    st.markdown("**event**")
    st.json(explained["event"])
    st.markdown("**diagnostics**")
    st.dataframe([{"header": k, "value": v} for k, v in explained["diagnostics"].items()], hide_index=True)


def _replay(config: ConsoleConfig, letter: DeadLetter) -> None:
    where = (letter.partition, letter.offset)
    if st.session_state.get(PENDING_KEY) != where:
        if st.button("Replay this letter"):
            st.session_state[PENDING_KEY] = where
            st.rerun()
        return
    target = letter.header("source-topic") or "?"
    st.warning(f"Replay {_label(letter)} to {target}? Fix its cause first, or it fails again.")
    confirm, cancel = st.columns(2)
    if cancel.button("Cancel"):
        del st.session_state[PENDING_KEY]
        st.rerun()
    if not confirm.button("Yes, replay it"):
        return
    del st.session_state[PENDING_KEY]
    replayed_by = getpass.getuser()
    with bind_event(letter.header("event-id"), letter.model, replayed_by=replayed_by, source="console"):
        report = asyncio.run(
            replay(
                [letter],
                kafka=config.kafka,
                topics=config.topics,
                replayed_by=replayed_by,
                max_replays=DEFAULT_MAX_REPLAYS,
            )
        )
        for _, why in report.refused:
            log.warning("dead letter replay refused", dlq_offset=letter.offset, why=why)
            st.error(f"Refused: {why}")
        if report.replayed:
            log.info("dead letter replayed", dlq_offset=letter.offset, target_topic=target)
            st.success(f"Replayed {_label(letter)} to {target} (audited on {config.topics.dead_letter_replays})")


def render(config: ConsoleConfig) -> None:
    st.title(TITLE)
    refreshing("dead-letters", config.console, lambda: _letters(config))


def _letters(config: ConsoleConfig) -> None:
    selection = _selection()
    if selection is None:
        return
    topic = config.topics.promotion_dlq
    letters = read_topics(topic, read_dead_letters(config.kafka, topic), config.kafka)
    if letters is None:
        return
    matching = [letter for letter in letters if selection.matches(letter)]
    st.caption(f"{len(matching)} of {len(letters)} dead letters match (read at {datetime.now(UTC):%H:%M:%S} UTC)")
    if not matching:
        return
    st.dataframe([letter.summary() for letter in matching], hide_index=True)
    by_label = {_label(letter): letter for letter in reversed(matching)}  # newest first
    chosen = st.selectbox("Letter", list(by_label))
    if chosen is None:
        return
    letter = by_label[chosen]
    _detail(letter)
    if config.console.allow_replay:
        _replay(config, letter)
    else:
        st.caption("Replay is off: start the console with `promoter console --allow-replay` to replay from here.")
