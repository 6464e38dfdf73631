"""Drive one console page with Streamlit's AppTest, in this process, with the environment it should read."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import parse_tree_from_messages

PAGE_TIMEOUT_S = 60.0


def _console_page(url_path: str) -> None:
    from console.app import show_page

    show_page(url_path)


def console_page(url_path: str) -> AppTest:
    """The page at ``url_path`` (``try``, ``serving``, ``history``, ``dead-letters``), not yet run."""
    return AppTest.from_function(_console_page, args=(url_path,), default_timeout=PAGE_TIMEOUT_S)


def texts(at: AppTest) -> str:
    """Every markdown, caption, info, warning, error and success text of the page, one per line."""
    elements = [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.success, *at.title, *at.subheader]
    return "\n".join(str(element.value) for element in elements)


def charts(at: AppTest) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each Altair chart drawn: its title and the rows of its data sets (in the order Vega-Lite got them)."""
    drawn = []
    for element in at.get("vega_lite_chart"):
        proto: Any = element.proto
        spec = json.loads(proto.spec)
        title = spec.get("title", {})
        rows = [
            row for dataset in proto.datasets for row in pa.ipc.open_stream(dataset.data.data).read_all().to_pylist()
        ]
        drawn.append((title.get("text", "") if isinstance(title, dict) else str(title), rows))
    return drawn


def auto_reruns(monkeypatch: pytest.MonkeyPatch) -> list[list[float]]:
    """Per page run from now on: the intervals of the automatic reruns the page asked the browser for
    (``st.fragment(run_every=...)`` sends one ``auto_rerun`` message per fragment; AppTest drops them)."""
    runs: list[list[float]] = []

    def recording(messages: list[ForwardMsg]) -> Any:
        runs.append([m.auto_rerun.interval for m in messages if m.HasField("auto_rerun")])
        return parse_tree_from_messages(messages)

    monkeypatch.setattr("streamlit.testing.v1.local_script_runner.parse_tree_from_messages", recording)
    return runs
