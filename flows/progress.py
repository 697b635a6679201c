"""What the CLI shows people (rich): progress bars for long steps, as plain callbacks the stage functions
accept, the two-column tables that close a command, and the project's own warnings. Everything else that
writes to stderr (framework warnings, C++ logs, Prefect, worker processes) goes to a log file instead.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yields `update(done, total)`; the bar shows on a terminal and stays quiet elsewhere.

    stderr is left alone: rich would put its own stream in place of sys.stderr while the bar shows, and a
    library that sets up its logging then (torch does, on first use) would keep writing to the terminal."""
    with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False, disable=not console.is_terminal, redirect_stderr=False) as bar:
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


# the packages whose warnings people see; each module logs to logging.getLogger(__name__)
OWN_PACKAGES = ("edgedistill", "flows", "generators", "labelers", "trainers", "exporters")


class _ShownWarnings(logging.Handler):
    """The project's warnings on the terminal, and every record of its loggers in the log (stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            console.print(f"[yellow]warning:[/yellow] {record.getMessage()}", highlight=False)
        print(f"{datetime.now():%H:%M:%S} {record.levelname} {record.name}: {record.getMessage()}", file=sys.stderr)


log_file_path: Path | None = None  # where stderr goes, once log_to has sent it to a file


def log_to(log_file: Path) -> None:
    """From now on, this process's stderr (and that of every process it starts) goes to the end of `log_file`,
    at the file-descriptor level so that C++ libraries' logs go there too. The console keeps the terminal,
    and shows the project's warnings."""
    global log_file_path
    if log_file_path is None:
        console.file = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        handler = _ShownWarnings(level=logging.INFO)
        for package in OWN_PACKAGES:
            logger = logging.getLogger(package)
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    with open(log_file, "a") as log:
        log.write(f"\n==== {datetime.now():%Y-%m-%d %H:%M:%S} edgedistill {' '.join(sys.argv[1:])[:300]} "
                  f"(pid {os.getpid()})\n")
        log.flush()
        os.dup2(log.fileno(), sys.stderr.fileno())
    log_file_path = log_file


def keep_log_in(log_file: Path) -> None:
    """A command that knows its run folder keeps its log there, when its library output goes to a log."""
    if log_file_path is not None and log_file_path != log_file:
        log_to(log_file)
