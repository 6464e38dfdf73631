"""The console's pictures, as Altair (Vega-Lite) charts Streamlit draws: traffic policy and serving timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import altair as alt
import pandas as pd

from console.serving_history import Rejection, ServedSpan
from schemas.routing_updated import RoutingUpdatedData

WEIGHTS_ROW = "requests"
SHADOW_ROW = "shadow copies"


def policy_rows(policy: RoutingUpdatedData) -> list[dict[str, Any]]:
    """One bar segment per alias's share of requests, and the shadow's share of copies."""
    rows: list[dict[str, Any]] = [
        {"row": WEIGHTS_ROW, "alias": alias, "percent": float(percent)}
        for alias, percent in sorted(policy.weights.items())
    ]
    if policy.shadow_alias:
        rows.append({"row": SHADOW_ROW, "alias": policy.shadow_alias, "percent": policy.shadow_sample_percent})
    return rows


def policy_chart(policy: RoutingUpdatedData) -> alt.Chart:
    """A stacked bar of the A/B weights, and under it the share of requests copied to the shadow alias."""
    frame = pd.DataFrame(policy_rows(policy))
    chart: alt.Chart = (
        alt.Chart(frame, title=f"{policy.model_name}: traffic policy")
        .mark_bar()
        .encode(
            x=alt.X("percent:Q", title="% of requests", scale=alt.Scale(domain=[0, 100])),
            y=alt.Y("row:N", title=None, sort=[WEIGHTS_ROW, SHADOW_ROW]),
            color=alt.Color("alias:N", title="alias"),
            tooltip=["alias:N", "percent:Q"],
        )
        .properties(height=90)
    )
    return chart


def timeline_rows(spans: list[ServedSpan], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "alias": span.alias,
            "version": f"v{span.version}",
            "start": span.start,
            "end": span.end or now,
            "state": "served now" if span.end is None else "replaced",
            "triton_model": span.triton_model,
        }
        for span in spans
    ]


def rejection_rows(rejections: list[Rejection]) -> list[dict[str, Any]]:
    return [
        {
            "alias": rejection.alias or "(no alias)",
            "at": rejection.at,
            "version": f"v{rejection.version}" if rejection.version is not None else "?",
            "reason_code": rejection.reason_code,
            "message": rejection.message,
        }
        for rejection in rejections
    ]


def timeline_chart(model: str, spans: list[ServedSpan], rejections: list[Rejection], now: datetime) -> alt.LayerChart:
    """One bar per (alias, version) from when it was served to when it was replaced (or now); red marks for
    rejections, with the reason in their tooltip."""
    bars = (
        alt.Chart(pd.DataFrame(timeline_rows(spans, now), columns=["alias", "version", "start", "end", "state"]))
        .mark_bar(cornerRadius=3)
        .encode(
            x=alt.X("start:T", title="time"),
            x2="end:T",
            y=alt.Y("alias:N", title="alias"),
            color=alt.Color("version:N", title="version"),
            opacity=alt.condition(alt.datum.state == "served now", alt.value(1.0), alt.value(0.6)),
            tooltip=["alias:N", "version:N", "start:T", "end:T", "state:N"],
        )
    )
    marks = (
        alt.Chart(
            pd.DataFrame(rejection_rows(rejections), columns=["alias", "at", "version", "reason_code", "message"])
        )
        .mark_point(shape="cross", size=160, color="red", filled=True)
        .encode(x="at:T", y="alias:N", tooltip=["at:T", "alias:N", "version:N", "reason_code:N", "message:N"])
    )
    layered = alt.LayerChart(layer=[bars, marks])
    return layered.properties(title=f"{model}: served versions and rejections", height=180)
