"""The closing summary every long-running command prints: one table, notes, then where it wrote.

Each stage says what its summary holds (`Summary`); this module is the one printer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


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

    table = Table(title=summary.title, title_justify="left")
    for index, column in enumerate(summary.columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in summary.rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console = Console()
    console.print(table)
    for note in summary.notes:
        console.print(note, highlight=False, soft_wrap=True)
    if summary.wrote:
        console.print("Wrote:", highlight=False)
    for name, path in summary.wrote.items():
        console.print(f"  {name:<16} {path}", highlight=False, soft_wrap=True)
