"""Serving: per model and alias the version each live gateway serves (lagging and silent marked), the traffic
policy drawn as a chart, and each Triton endpoint's state from the workers' fleet reports; refreshed on a button,
or every few seconds once asked (page_support.refreshing)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st

from console.charts import policy_chart
from console.page_support import ConsoleConfig, read_topics, refreshing
from console.topic_views import ServingSnapshot, read_serving
from promoter_cli.serving_status import STATE_WORDS, AliasStatus, EndpointRow

TITLE = "Serving"
STATE_COLOURS = {"in_sync": "green", "repairing": "orange", "down": "red"}


def gateway_rows(status: AliasStatus) -> list[dict[str, Any]]:
    """One row per gateway for one alias: on the version, lagging (routing what instead), or silent."""
    rows: list[dict[str, Any]] = [
        {"gateway": g, "routes": f"v{status.version}", "state": "✅ on version"} for g in status.on_version
    ]
    rows += [
        {"gateway": g, "routes": f"v{v}" if v is not None else "not routed", "state": "⚠️ lagging"}
        for g, v in sorted(status.lagging.items())
    ]
    rows += [{"gateway": g, "routes": "?", "state": "🔇 silent"} for g in status.silent]
    return rows


def endpoint_text(row: EndpointRow) -> str:
    state = row.status.state
    badge = f":{STATE_COLOURS[state]}[{STATE_WORDS[state]}]"
    text = f"**Triton {row.status.endpoint}** {badge} since {row.status.since:%H:%M:%S}"
    text += "".join(f" — {detail}" for detail in row.details())
    return f"{text} (worker {row.reported_by})"


def _models(snapshot: ServingSnapshot) -> None:
    by_model: dict[str, list[AliasStatus]] = {}
    for status in snapshot.status.report():
        by_model.setdefault(status.model, []).append(status)
    if not by_model:
        st.info("Nothing is served yet: no model.ready on the serving-state log.")
    for model, aliases in by_model.items():
        st.subheader(model)
        for status in aliases:
            live = len(status.on_version) + len(status.lagging)
            served = f"{len(status.on_version)}/{live} live gateways"
            st.markdown(f"**@{status.alias}** should serve **v{status.version}** — {served}")
            rows = gateway_rows(status)
            if rows:
                st.dataframe(rows, hide_index=True)
            else:
                st.warning("no gateway has reported yet")
        policy = snapshot.policies.get(model)
        if policy is None:
            st.caption("No A/B policy: every request goes to the gateways' default alias (or the pinned one).")
        else:
            st.altair_chart(policy_chart(policy))


def _endpoints(snapshot: ServingSnapshot) -> None:
    st.subheader("Triton endpoints")
    rows = snapshot.status.endpoints()
    if not rows:
        st.caption(snapshot.status.endpoint_lines()[0])
    for row in rows:
        st.markdown(endpoint_text(row))


def _serving(config: ConsoleConfig) -> None:
    snapshot = read_topics(
        "the serving state", read_serving(config.kafka, config.topics, config.console.read_timeout_s), config.kafka
    )
    if snapshot is None:
        return
    st.caption(f"Read at {datetime.now(UTC):%H:%M:%S} UTC")
    _models(snapshot)
    _endpoints(snapshot)


def render(config: ConsoleConfig) -> None:
    st.title(TITLE)
    st.button("Refresh")
    refreshing("serving", config.console, lambda: _serving(config))
