"""The table the stage benchmarks print: figure, value, target; time first, the bundle's size last."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgedistill.images import IMAGE_SUFFIXES
from edgedistill.real_photos import read_labelled_photos
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


def with_face_free(real: str, folders: list[str], classes: list[str], min_share: float, out: Path) -> str:
    """`real` as it is, or with every photo in `folders` added as a photo with no object (one CSV in OUT)."""
    if not folders:
        return real
    rows = ["file,x0,y0,x1,y1,class,invalid"]
    for photo in read_labelled_photos(real, classes, min_share):
        rows += [f"{photo.path.resolve()},{x0},{y0},{x1},{y1},{classes[c]},0"
                 for (x0, y0, x1, y1), c in zip(photo.boxes, photo.classes)]
        rows += [f"{photo.path.resolve()},{x0},{y0},{x1},{y1},,1" for x0, y0, x1, y1 in photo.ignore]
        rows += [f"{photo.path.resolve()},,,,,,"] if not len(photo.boxes) + len(photo.ignore) else []
    for folder in folders:
        rows += [f"{path.resolve()},,,,,," for path in sorted(Path(folder).iterdir())
                 if path.suffix.lower() in IMAGE_SUFFIXES]
    combined = out.parent / f"{out.name}-real-photos.csv"  # beside OUT: a fresh run empties OUT
    combined.parent.mkdir(parents=True, exist_ok=True)
    combined.write_text("\n".join(rows) + "\n")
    return str(combined)
