"""How the dataset model scales: time and peak memory of each dataset operation at N and 10N samples.

    .venv/bin/python benchmarks/scale.py                          # 10,000 and 100,000 samples
    .venv/bin/python benchmarks/scale.py --sizes 2000 20000 --keep

A detection dataset of N tiny distinct PNGs (64x48, about 100 bytes each) with 0-4 scored boxes per
sample, provenance as the compositor writes it and a mix of review states, is written to a temporary
folder; its sample lines are about as long as real auto-labelled ones. Then each operation runs in a
fresh Python process, so its peak RSS (VmHWM) is its own:

- commit:        N samples (built before the clock starts) written as a version
- open + list:   `Dataset.open` and every version's counts, as the CLI lists them
- read samples:  `Dataset.samples` of the newest version
- filter:        read, then keep the samples of one class that review did not reject
- split:         the "split" stage (`split_version`): read, split by group, commit
- export COCO / export Label Studio: `edgedistill export-labels coco|labelstudio` (copies every image)
- push tasks:    the Label Studio task dicts `review push` sends, batch by batch, without a server

Each size shows seconds of wall clock / CPU / of those, Python's cycle collector (which walks every
live object now and then, a sample list's too), and the peak RSS with, in brackets, the RSS at the start
of the operation (interpreter, imports, and for commit the samples it is handed). The last columns say
how each grew from the first size to the last (against how the sample count grew) and the memory above
start per sample at the last size. Wall clock counts disk waits and other work on the machine: compare
CPU seconds.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from PIL import Image
from rich.console import Console
from rich.table import Table

from edgedistill.dataset import (Dataset, ImageShape, Label, LabelSource, OntologyClass, Provenance, Review, Sample,
                                 sha256_bytes)

CLASSES = ("cat", "dog", "bicycle", "person")
OWL = LabelSource(labeler="owlv2", model="google/owlv2-base-patch16-ensemble", version="1")
OPERATIONS = {  # name in the table -> what the child process runs
    "commit": "commit", "open + list": "list", "read samples": "read", "filter": "filter", "split": "split",
    "export COCO": "coco", "export Label Studio": "labelstudio", "push tasks": "push",
}


# -- the synthetic dataset ----------------------------------------------------------------------
def tiny_png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (index % 256, index // 256 % 256, index // 65536 % 256)).save(buffer, "PNG")
    return buffer.getvalue()


def make_media(folder: Path, count: int) -> None:
    """The images, written straight into the media layout (no fsync per file: this is setup, not a
    measured operation), and their digests in order, one a line, for the commit to build samples from."""
    Dataset.create(folder / "dataset", "scale", "detection", [OntologyClass(name=name) for name in CLASSES])
    digests = []
    for index in range(count):
        data = tiny_png(index)
        digest = sha256_bytes(data)
        path = folder / "dataset" / "media" / digest[:2] / f"{digest}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digests.append(digest)
    (folder / "digests.txt").write_text("\n".join(digests))


def make_sample(index: int, digest: str) -> Sample:
    labels = [Label(class_name=CLASSES[(index + k) % len(CLASSES)],
                    box=(1.0 + 3 * k, 2.0 + 2 * k, 20.5 - k, 15.25 + k), score=0.2 + 0.15 * k, source=OWL)
              for k in range(index % 5)]
    review = Review(status="rejected", reviewer="ann@example.com") if index % 10 == 9 else Review()
    params = {"cutouts": [f"cutout-{index % 97}", f"cutout-{index % 89}"], "background": f"bg-{index % 500}.jpg",
              "blending": "gaussian", "hidden": [], "index": index}
    return Sample(id=digest[:16], media=f"media/{digest[:2]}/{digest}.png", kind="image",
                  shape=ImageShape(width=64, height=48), labels=labels, review=review,
                  provenance=Provenance(source="compositing", params=params, seed=index,
                                        group=f"bg:bg-{index % 500}.jpg"))


# -- one operation, in its own process ----------------------------------------------------------
def memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def operate(operation: str, folder: Path) -> dict[str, float]:
    from edgedistill.formats.exporter import export_labels
    from edgedistill.splits import split_version

    location = folder / "dataset"
    digests = (folder / "digests.txt").read_text().split("\n") if operation == "commit" else []
    handed = [make_sample(index, digest) for index, digest in enumerate(digests)]
    collecting = collector_clock()
    start = memory_mb("VmRSS")
    began, cpu, collected = time.perf_counter(), time.process_time(), collecting()
    if operation == "commit":
        Dataset.open(location).commit(handed, None, "scale", {"samples": len(handed)})
    elif operation == "list":
        dataset = Dataset.open(location)
        listed = [(version.id, version.stage, sorted(version.counts.items())) for version in dataset.info.versions]
        assert listed
    elif operation == "read":
        assert Dataset.open(location).samples()
    elif operation == "filter":
        kept = [sample for sample in Dataset.open(location).samples() if sample.review.status != "rejected"
                and any(label.class_name == "cat" for label in sample.labels)]
        assert kept
    elif operation == "split":
        dataset = Dataset.open(location)
        split_version(dataset, dataset.version(), val_share=0.1, test_share=0.1, seed=0)
    elif operation in ("coco", "labelstudio"):
        export_labels(operation, location, folder / f"export-{operation}")
    elif operation == "push":
        push_tasks(location)
    return {"seconds": time.perf_counter() - began, "cpu_seconds": time.process_time() - cpu,
            "gc_seconds": collecting() - collected, "start_mb": start, "peak_mb": memory_mb("VmHWM")}


def collector_clock() -> Callable[[], float]:
    """A clock of the CPU seconds Python's cycle collector has spent since it was made."""
    spent, began = [0.0], [0.0]

    def note(phase: str, _info: dict) -> None:
        if phase == "start":
            began[0] = time.process_time()
        else:
            spent[0] += time.process_time() - began[0]

    gc.callbacks.append(note)
    return lambda: spent[0]


def push_tasks(location: Path) -> None:
    from edgedistill.recipe import ReviewSettings
    from labelers.label_studio import LocalFiles, route, task_batches

    dataset = Dataset.open(location)
    version = dataset.version()
    settings = ReviewSettings(threshold=0.5, document_root=str(location.parent))
    samples = dataset.samples(version.id)
    routes = {sample.id: route(sample, settings) for sample in samples}
    pending = [sample for sample in samples if routes[sample.id] != "auto"]
    batches = task_batches(dataset, version, pending, routes, LocalFiles(settings))
    assert sum(len(json.dumps(batch)) for batch in batches)  # what the SDK sends, one batch at a time


# -- the table ----------------------------------------------------------------------------------
def measure(count: int, keep: bool) -> dict[str, dict[str, float]]:
    folder = Path(tempfile.mkdtemp(prefix=f"edgedistill-scale-{count}-"))
    began = time.perf_counter()
    make_media(folder, count)
    print(f"{count} images made in {time.perf_counter() - began:.1f} s under {folder}", flush=True)
    figures = {}
    for name, operation in OPERATIONS.items():
        done = subprocess.run([sys.executable, __file__, "--operation", operation, "--folder", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} at {count} samples failed:\n{done.stderr}")
        figures[name] = json.loads(done.stdout.splitlines()[-1])
        print(f"  {name}: {times(figures[name])} s, peak {figures[name]['peak_mb']:.0f} MB", flush=True)
    line_bytes = sum(p.stat().st_size for p in (folder / "dataset" / "versions").glob("*.jsonl"))
    print(f"  sample lines: {line_bytes / (2 * count):.0f} bytes on average", flush=True)
    if not keep:
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    return figures


def times(figures: dict[str, float]) -> str:
    return f"{figures['seconds']:.2f} / {figures['cpu_seconds']:.2f} / {figures['gc_seconds']:.2f}"


def print_table(results: dict[int, dict[str, dict[str, float]]]) -> None:
    sizes = sorted(results)
    first, last = sizes[0], sizes[-1]
    table = Table(title=f"dataset operations at {', '.join(f'{n:,}' for n in sizes)} samples: seconds of wall clock / "
                        f"CPU / of which cycle collector; peak RSS (RSS at start); growth from {first:,} to {last:,}")
    table.add_column("operation")
    for n in sizes:
        table.add_column(f"{n:,}: s", justify="right")
        table.add_column(f"{n:,}: MB", justify="right")
    for growth in ("wall", "CPU", "CPU less GC", "MB above start"):
        table.add_column(f"{growth} x", justify="right")
    table.add_column(f"KB a sample at {last:,}", justify="right")
    for name in OPERATIONS:
        row = [name]
        for n in sizes:
            f = results[n][name]
            row += [times(f), f"{f['peak_mb']:.0f} ({f['start_mb']:.0f})"]
        a, b = results[first][name], results[last][name]
        for key in ("seconds", "cpu_seconds"):
            row.append(f"{b[key] / max(a[key], 1e-3):.1f}")
        row.append(f"{(b['cpu_seconds'] - b['gc_seconds']) / max(a['cpu_seconds'] - a['gc_seconds'], 1e-3):.1f}")
        row.append(f"{(b['peak_mb'] - b['start_mb']) / max(a['peak_mb'] - a['start_mb'], 1.0):.1f}")
        row.append(f"{(b['peak_mb'] - b['start_mb']) * 1024 / last:.1f}")
        table.add_row(*row)
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="sample counts")
    parser.add_argument("--keep", action="store_true", help="keep the datasets and exports (their folders are printed)")
    parser.add_argument("--operation", choices=sorted(OPERATIONS.values()), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.operation:  # a child: one operation, its figures as the last line
        print(json.dumps(operate(args.operation, args.folder)))
        return
    print_table({count: measure(count, args.keep) for count in args.sizes})


if __name__ == "__main__":
    main()
