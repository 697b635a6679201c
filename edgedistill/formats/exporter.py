"""A dataset version written out as COCO, YOLO or Label Studio files (`edgedistill export-labels`), to
train or review elsewhere: the mirror of `importer`.

The export is written next to OUT and moved into place when complete, so a crash or Ctrl-C leaves no
half-written folder; an OUT that already holds files is refused rather than mixed into. Images are
copies, so the export stands on its own. Samples people rejected in review are left out, as training
leaves them out.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from edgedistill.dataset import Dataset, Sample, VersionInfo
from edgedistill.errors import EdgedistillError
from edgedistill.formats.coco import write_coco
from edgedistill.formats.label_studio import write_label_studio
from edgedistill.formats.yolo import write_yolo_folder


@dataclass
class Exported:
    dataset: Dataset
    version: VersionInfo
    path: Path  # what to hand a tool: annotations.json (COCO), data.yaml (YOLO) or tasks.json (Label Studio)
    report: dict[str, Any]


def export_labels(label_format: str, location: str | Path, out: str | Path, version_id: str | None = None) -> Exported:
    """Write version `version_id` (default: the newest) of the image dataset at `location` into the new folder `out`."""
    dataset = Dataset.open(location)
    if dataset.info.task != "detection":
        raise EdgedistillError(f"{dataset.location} is a {dataset.info.task} dataset; COCO, YOLO and Label Studio "
                               "exports hold images with boxes", "export a detection dataset")
    version = dataset.version(version_id)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdgedistillError(f"{out} already exists and is not an empty folder",
                               "choose a new folder for the export, or delete this one to export again")
    classes = [c.name for c in dataset.info.ontology]
    counts: Counter[str] = Counter()  # images, empty, rejected
    objects: Counter[str] = Counter()

    def kept() -> Iterator[Sample]:  # one at a time, counted on the way: no list of them all
        for sample in dataset.iter_samples(version.id):
            if sample.review.status == "rejected":
                counts["rejected"] += 1
                continue
            counts["images"] += 1
            counts["empty"] += not sample.labels
            objects.update(label.class_name for label in sample.labels if label.box and label.class_name in classes)
            yield sample

    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an export that was killed
    try:
        written = _write(label_format, dataset, kept(), classes, partial)
        if out.exists():
            out.rmdir()
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    report = {"images": counts["images"], "empty_images": counts["empty"], "objects": dict(sorted(objects.items())),
              "rejected_left_out": counts["rejected"]}
    return Exported(dataset, version, out / written.relative_to(partial), report)


def _write(label_format: str, dataset: Dataset, samples: Iterable[Sample], classes: list[str], folder: Path) -> Path:
    if label_format == "coco":
        return write_coco(dataset, samples, classes, folder)
    if label_format == "yolo":
        return write_yolo_folder(dataset, samples, classes, folder)
    if label_format == "labelstudio":
        return write_label_studio(dataset, samples, folder)
    raise EdgedistillError(f"unknown label format {label_format!r}", "use coco, yolo or labelstudio")
