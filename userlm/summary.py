"""The closing summary every long-running command prints: one table, notes, then where it wrote.

Each stage says what its summary holds (`Summary`); this module is the one printer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MIN_NAME_WIDTH = 12  # below this a row's name says nothing: the table is let wrap instead


@dataclass
class Summary:
    title: str
    columns: Sequence[str]
    rows: list[Sequence[object]]
    notes: list[str] = field(default_factory=list)
    wrote: dict[str, Path | str] = field(default_factory=dict)


def print_summary(summary: Summary) -> None:
    """A rich table (`columns` x `rows`), then one line per note and per file or folder written."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=summary.title, title_justify="left")
    cells = [["" if cell is None else str(cell) for cell in row] for row in summary.rows]
    # The figures keep their width (a header may wrap at its spaces); each column takes two more of
    # padding and one of border. A long row name (an auto-named intent) gets what is left, cut with
    # an ellipsis rather than wrapped over many lines.
    figures = [
        max([len(word) for word in column.split()] + [len(row[index]) for row in cells if index < len(row)], default=1)
        for index, column in enumerate(summary.columns)
        if index
    ]
    room = console.width - 1 - sum(width + 3 for width in figures) - 3
    for index, column in enumerate(summary.columns):
        if index == 0:
            longest = max([len(column)] + [len(row[0]) for row in cells if row])
            table.add_column(column, no_wrap=True, overflow="ellipsis", width=min(longest, max(room, MIN_NAME_WIDTH)))
        else:
            table.add_column(column, justify="right", width=figures[index - 1])
    for row in cells:
        table.add_row(*row)
    console.print(table)
    for note in summary.notes:
        console.print(note, highlight=False, soft_wrap=True)
    if summary.wrote:
        console.print("Wrote:", highlight=False)
    for name, path in summary.wrote.items():
        console.print(f"  {name:<16} {path}", highlight=False, soft_wrap=True)
