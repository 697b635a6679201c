"""What the CLI shows people (rich): progress bars for long steps, as plain callbacks the stage functions
accept, and the two-column tables that close a command."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yields `update(done, total)`; the bar shows on a terminal and stays quiet elsewhere."""
    with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_table(title: str, rows: Iterable[tuple[str, Any]], name: str = "figure") -> None:
    """A closing table of (name, value) rows."""
    table = Table(title=title)
    table.add_column(name)
    table.add_column("value", justify="right")
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)
