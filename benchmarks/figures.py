"""The table the stage benchmarks print: figure, value, target; time first, the bundle's size last."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from flows.run import vela_summary


def bundle_rows(manifest, flash_target: str, arena_target: str) -> list[tuple[str, str, str]]:
    """What the bundle's int8 model needs on the device."""
    arena = manifest.targets.get("tflite_micro", {}).get("arena_bytes", 0)
    return [("int8 model (flash)", f"{manifest.file('model_int8').bytes / 1024:.1f} KiB", flash_target),
            ("TFLite Micro arena", f"{arena / 1024:.1f} KiB", arena_target),
            ("Ethos-U55-128 (Vela)", vela_summary(manifest), "")]


def print_figures(title: str, end_to_end: tuple[str, float, str], stage_seconds: dict[str, float],
                  rows: list[tuple[str, str, str]]) -> None:
    """`end_to_end`: (label, seconds, target); each stage's seconds below it, then `rows`."""
    label, seconds, target = end_to_end
    table = Table(title=title)
    for column in ("figure", "value", "target"):
        table.add_column(column)
    for row in [(label, f"{seconds / 60:.1f} min", target),
                *[(f"  {name}", f"{stage:.0f} s", "") for name, stage in stage_seconds.items()], *rows]:
        table.add_row(*row)
    Console().print(table)
