"""How ``promoter`` commands print: a table or a line for people, or JSON for scripts (``--json``)."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (one object per line) for scripts.")]


def render_table(rows: list[dict[str, object]], columns: tuple[str, ...]) -> str:
    """A plain aligned table: fast for tens of thousands of rows, and greppable."""
    cells = [[str(row.get(column, "")) for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)
