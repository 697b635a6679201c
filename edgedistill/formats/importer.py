"""Labels made elsewhere brought in as a dataset version (`edgedistill import coco|yolo|labelstudio`).

Images are stored content-addressed as they are; their labels count as people's (review status
accepted, labeler `import:<format>`); the version's stage is "import" and its params name the source
and a fingerprint of what was read, so importing the same files again finds that version. A missing
dataset is made (detection, ontology from the file's classes); an existing one must know every class
the file uses. The detection pipeline's label step adds the newest import of each source to the
auto-labelled samples before it splits them (`with_imports`), so training uses both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgedistill.dataset import (Dataset, ImageShape, OntologyClass, Provenance, Review, Sample, Store, VersionInfo,
                                 sha256_bytes)
from edgedistill.errors import EdgedistillError
from edgedistill.formats.coco import read_coco
from edgedistill.formats.label_studio import read_label_studio
from edgedistill.formats.labelled import LabelledSet
from edgedistill.formats.yolo import read_yolo

STAGE = "import"
READERS: dict[str, Callable[[Path], LabelledSet]] = {"coco": read_coco, "yolo": read_yolo,
                                                      "labelstudio": read_label_studio}


@dataclass
class Imported:
    dataset: Dataset
    version: VersionInfo
    found: bool  # the same images and labels were imported before: their version was found, nothing was written
    report: dict[str, Any]  # what this import read (the version keeps the report of the first one)


def import_labels(label_format: str, path: str | Path, location: str | Path) -> Imported:
    """Read a COCO JSON, a YOLO folder or a Label Studio export into a version of the dataset at `location`."""
    source = _label_file(Path(path).expanduser().resolve(), label_format)
    labelled = READERS[label_format](source)
    if not labelled.images:
        raise EdgedistillError(f"{source} lists no labelled image", "export the labels again, with their images")
    dataset = _dataset_for(location, labelled, source)
    samples, duplicates = _samples(dataset, labelled, label_format, source if source.is_dir() else source.parent)
    params = {"format": label_format, "source": str(source),
              "fingerprint": sha256_bytes("".join(s.model_dump_json() for s in samples).encode())[:16]}
    found = dataset.find_version(None, STAGE, params) is not None
    objects = Counter(label.class_name for sample in samples for label in sample.labels)
    report = {"format": label_format, "source": str(source), "images": len(samples),
              "empty_images": sum(1 for s in samples if not s.labels), "objects": dict(sorted(objects.items())),
              "crowd_regions_left_out": sum(len(image.ignore) for image in labelled.images),
              "duplicate_images_left_out": duplicates}
    version = dataset.derive(None, STAGE, params, lambda *_: (samples, report))
    return Imported(dataset, version, found, report)


def _label_file(source: Path, label_format: str) -> Path:
    """The JSON file a COCO or Label Studio path means (a folder may hold exactly one), or the YOLO folder:
    the source the version names, so that the file and its folder are the same import."""
    if not source.exists():
        raise EdgedistillError(f"{source} does not exist", "give the label file (COCO or Label Studio JSON) or the "
                                                           "YOLO folder")
    if label_format == "yolo":
        if not ((source / "images").is_dir() and (source / "labels").is_dir()):
            raise EdgedistillError(f"{source} is not a YOLO folder: it needs images/ and labels/ folders",
                                   "give the folder that holds images/, labels/ and data.yaml (or classes.txt)")
        return source
    if source.is_file():
        return source
    exports = sorted(source.glob("*.json"))
    if len(exports) != 1:
        raise EdgedistillError(f"{source} holds {len(exports)} JSON files, not one",
                               "give the JSON file itself")
    return exports[0]


def _dataset_for(location: str | Path, labelled: LabelledSet, source: Path) -> Dataset:
    """The dataset at `location`, made from the file's classes when there is none."""
    store = Store(location)
    if not store.exists("dataset.json"):
        ontology = [OntologyClass(name=name) for name in labelled.classes]
        return Dataset.create(location, Path(store.base).name, "detection", ontology)
    dataset = Dataset.open(location)
    if dataset.info.task != "detection":
        raise EdgedistillError(f"{dataset.location} is a {dataset.info.task} dataset; imports bring in boxes",
                               "import into a detection dataset, or into a new folder")
    known = {c.name for c in dataset.info.ontology}
    unknown = sorted({label.class_name for image in labelled.images for label in image.labels} - known)
    if unknown:
        raise EdgedistillError(f"{source} labels classes the dataset {dataset.info.name} does not have: "
                               f"{', '.join(unknown)}", f"its classes are {', '.join(sorted(known))}; rename those "
                                                        "labels in the file, or import into a new dataset folder")
    return dataset


def _samples(dataset: Dataset, labelled: LabelledSet, label_format: str, root: Path) -> tuple[list[Sample], list[str]]:
    """One accepted sample per distinct image (by content), and the files left out as copies of another."""
    samples: dict[str, Sample] = {}
    duplicates = []
    with dataset.parallel_media_writes():
        for image in labelled.images:
            digest, media = dataset.add_media(image.path.read_bytes(), image.path.suffix.lower())
            file = image.path.relative_to(root).as_posix() if image.path.is_relative_to(root) else str(image.path)
            if digest[:16] in samples:
                duplicates.append(file)
                continue
            samples[digest[:16]] = Sample(
                id=digest[:16], media=media, kind="image", shape=ImageShape(width=image.width, height=image.height),
                provenance=Provenance(source=f"{STAGE}:{label_format}", params={"file": file}, group=file),
                labels=image.labels, review=Review(status="accepted"))
    return list(samples.values()), duplicates


def newest_imports(dataset: Dataset) -> list[VersionInfo]:
    """The newest import of each source: the labels people brought in, as last imported."""
    newest = {v.params["source"]: v for v in dataset.info.versions if v.stage == STAGE}
    return list(newest.values())


def with_imports(dataset: Dataset, samples: list[Sample], imports: list[VersionInfo]) -> list[Sample]:
    """`samples` and the imported ones; an imported image that is already a sample replaces it (people's
    labels win over auto-labels)."""
    imported = {s.id: s for version in imports for s in dataset.samples(version.id)}
    return [imported.pop(s.id, s) for s in samples] + list(imported.values())
