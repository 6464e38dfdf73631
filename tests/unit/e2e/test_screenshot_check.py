"""The screenshot check of ``make e2e`` tells Streamlit's loading skeleton and blank pages from a rendered page.

``streamlit_skeleton.png`` is what headless Chromium's ``--screenshot --virtual-time-budget`` saved of a
Streamlit app (its websocket never connected); ``docs/console.png`` is the Serving page ``make e2e`` shot.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from tests.e2e.screenshot_check import placeholder_reason
from tests.paths import REPO

SKELETON = Path(__file__).with_name("streamlit_skeleton.png")
RENDERED = REPO / "docs" / "console.png"


def test_the_rendered_serving_page_passes() -> None:
    assert placeholder_reason(RENDERED) is None


def test_streamlits_loading_skeleton_is_refused_for_its_few_colours() -> None:
    reason = placeholder_reason(SKELETON)

    assert reason is not None
    assert "distinct colours" in reason


def test_a_blank_page_with_a_speck_of_noise_is_refused_for_its_one_background(tmp_path: Path) -> None:
    image = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(image)
    for i in range(256):  # 256 colours, one pixel each: enough colours, but the page is empty
        draw.point((i % 40, i // 40), fill=(i, 255 - i, i // 2))
    path = tmp_path / "blank.png"
    image.save(path)

    reason = placeholder_reason(path)

    assert reason is not None
    assert "one colour" in reason
