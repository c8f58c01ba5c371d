"""What every technique's report shares: PNG figures and images inline in markdown.

matplotlib is imported by the report modules that draw, inside the tasks that draw, so
a flow run starts without paying for it (~0.4 s).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Every job folder's collection-level numbers, as the completion event carries them.
SUMMARY_FILE = "summary.json"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; closes the figure."""
    plt = pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def markdown_image(path: str | Path) -> str:
    """A PNG file as a markdown image the Prefect UI shows inline (a data URI)."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{Path(path).name}](data:image/png;base64,{encoded})"


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Lines of a markdown table; None shows as an en dash."""

    def cell(value: Any) -> str:
        return "–" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines


def display_rows(
    rows: Iterable[Mapping[str, Any]], columns: Mapping[str, tuple[str, int]]
) -> list[dict[str, Any]]:
    """Rows for a table artifact: `columns` maps a field to (header with its unit,
    decimals); numbers are rounded to their precision, fields not named are left out."""

    def shown(value: Any, decimals: int) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value
        return round(value) if decimals == 0 else round(value, decimals)

    return [
        {header: shown(row.get(name), decimals) for name, (header, decimals) in columns.items()}
        for row in rows
    ]
