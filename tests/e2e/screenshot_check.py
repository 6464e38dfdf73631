"""Is a screenshot a rendered page, or a blank or placeholder one (Streamlit's grey loading skeleton)?

A page with text has hundreds of colours (anti-aliased glyphs in several colours, icons, badges) and no single
colour covers nearly all of it; a blank page has one colour, Streamlit's skeleton a white page with a few flat
grey bars (a handful of colours, from the bars' rounded edges).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

#: Fewer distinct colours than this: flat blocks, not text (the skeleton: 10; the Serving page: ~800).
MIN_COLOURS = 200
#: One colour covering more than this share of the pixels: an empty page (the skeleton: 91 % white; the Serving
#: page: 75 % background).
MAX_BACKGROUND_SHARE = 0.95


def placeholder_reason(png: Path) -> str | None:
    """Why the screenshot at ``png`` is not a rendered page, or ``None`` when it looks like one."""
    with Image.open(png) as image:
        pixels = image.convert("RGB")
    total = pixels.width * pixels.height
    colours = pixels.getcolors(maxcolors=total) or []
    if len(colours) < MIN_COLOURS:
        return f"{png} has {len(colours)} distinct colours (a rendered page has at least {MIN_COLOURS})"
    background = max(count for count, _ in colours) / total
    if background > MAX_BACKGROUND_SHARE:
        return f"{png} is {background:.0%} one colour (a rendered page has at most {MAX_BACKGROUND_SHARE:.0%})"
    return None
