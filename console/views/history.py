"""History: per model, a timeline of which version served under which alias from when to when, with the
rejections and their reasons marked on it (from model.ready and model.rejected)."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from console.charts import rejection_rows, timeline_chart, timeline_rows
from console.page_support import ConsoleConfig, read_topics
from console.topic_views import read_history

TITLE = "History"


def render(config: ConsoleConfig) -> None:
    st.title(TITLE)
    st.button("Refresh")
    history = read_topics(
        "the serving history", read_history(config.kafka, config.topics, config.console.read_timeout_s), config.kafka
    )
    if history is None:
        return
    models = history.models()
    if not models:
        st.info("No model was served or rejected yet.")
        return
    model = st.selectbox("Model", models)
    if model is None:
        return
    now = datetime.now(UTC)
    spans, rejections = history.spans(model), history.rejections_of(model)
    st.altair_chart(timeline_chart(model, spans, rejections, now))
    st.markdown("**Served**")
    served = [
        {**row, "start": row["start"].isoformat(), "end": row["end"].isoformat()} for row in timeline_rows(spans, now)
    ]
    st.dataframe(served, hide_index=True)
    if rejections:
        st.markdown(f"**Rejected** ({len(rejections)})")
        st.dataframe([{**row, "at": row["at"].isoformat()} for row in rejection_rows(rejections)], hide_index=True)
