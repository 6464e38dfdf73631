"""Where benchmarks put their figures: ``.bench/<name>.json`` (git-ignored), one file per benchmark.

Several benchmarks may contribute to one file (``scale.json`` gathers the scale figures): ``merge_figures``
replaces only the keys it is given, so each benchmark can run alone and the file keeps the others' figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCH_DIR = Path(".bench")


def bench_path(name: str) -> Path:
    return BENCH_DIR / f"{name}.json"


def merge_figures(name: str, figures: dict[str, Any]) -> Path:
    """Write ``figures`` into ``.bench/<name>.json``, keeping the keys other benchmarks wrote there."""
    path = bench_path(name)
    current: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    current.update(figures)
    BENCH_DIR.mkdir(exist_ok=True)
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return path
