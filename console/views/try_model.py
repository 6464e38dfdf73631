"""Try a model: a form generated from the served signature, sent to a gateway's ``/predict``; the answer with
the version and alias that made it, and the same call as ``curl`` and as ``tritonclient`` code."""

from __future__ import annotations

from typing import Any

import streamlit as st

from console.call_examples import curl_command, tritonclient_code
from console.gateway_calls import predict
from console.page_support import ConsoleConfig, read_topics
from console.topic_views import read_serving
from schemas.model_ready import ColumnSpec, ModelReadyData

TITLE = "Try a model"
INTEGER_TYPES = ("integer", "long")
NUMBER_TYPES = ("float", "double")


def _field(column: ColumnSpec) -> Any:
    """One form input for one feature, typed as the signature says."""
    if column.type == "boolean":
        return st.checkbox(column.name)
    if column.type in INTEGER_TYPES:
        return int(st.number_input(column.name, value=0, step=1))
    return float(st.number_input(column.name, value=0.0, format="%.4f"))


def _form(ready: ModelReadyData) -> tuple[dict[str, Any], bool]:
    unsupported = [c.name for c in ready.signature.columns if c.type not in (*INTEGER_TYPES, *NUMBER_TYPES, "boolean")]
    if unsupported:
        st.warning(
            f"/predict takes numeric and boolean features only; this signature also has: {', '.join(unsupported)}"
        )
    with st.form("features"):
        record = {c.name: _field(c) for c in ready.signature.columns if c.name not in unsupported}
        submitted = st.form_submit_button("Predict")
    return record, submitted


def _answer(gateway: str, ready: ModelReadyData, alias: str, record: dict[str, Any]) -> None:
    answer = predict(gateway, ready.model_name, alias, record)
    if not answer.ok:
        st.error(f"{answer.status or 'no answer'}: {answer.error}")
        return
    version, served_alias = answer.body.get("model_version"), answer.body.get("alias")
    left, right = st.columns(2)
    left.metric("version", f"v{version}")
    right.metric("alias", str(served_alias))
    st.markdown(f"**predictions** from {ready.model_name} v{version} @{served_alias}")
    st.json(answer.body.get("predictions"))


def render(config: ConsoleConfig) -> None:
    st.title(TITLE)
    snapshot = read_topics(
        "the served models", read_serving(config.kafka, config.topics, config.console.read_timeout_s), config.kafka
    )
    if snapshot is None:
        return
    routes = snapshot.status.desired.routes
    if not routes:
        st.info("Nothing is served yet: promote a model (`promoter promote NAME --alias champion`).")
        return
    model = st.selectbox("Model", sorted({name for name, _ in routes}))
    alias = st.selectbox("Alias", sorted(a for name, a in routes if name == model))
    gateway = st.selectbox("Gateway", config.console.gateway_urls)
    if model is None or alias is None or gateway is None:
        return
    ready = routes[(model, alias)]
    st.caption(f"should serve v{ready.version} as Triton model {ready.triton_model_name} ({ready.flavor})")
    if not ready.signature.columns:
        st.info("This model has a tensor signature: call POST /v2/models/{name}/infer (see the tritonclient docs).")
        return
    record, submitted = _form(ready)
    if submitted:
        _answer(gateway, ready, alias, record)
    st.markdown("**The same call with curl**")
    st.code(curl_command(gateway, model, alias, record), language="bash")
    code = tritonclient_code(gateway, ready, alias, record)
    if code is not None:
        st.markdown("**The same call with tritonclient** (`pip install 'tritonclient[http]'`)")
        st.code(code, language="python")
