"""YOLO folders and our labels, both ways: `read_yolo` reads `images/` and `labels/` (one `class cx cy w h`
line per box, in shares of the image; names from data.yaml or classes.txt), `write_yolo_folder` writes a
dataset version as the folder ultralytics trains from."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

import yaml

from edgedistill.dataset import Dataset, Label, LabelSource, SPLITS, Sample, write_atomic
from edgedistill.errors import EdgedistillError
from edgedistill.formats.labelled import LabelledSet, checked_box, labelled_image
from edgedistill.images import IMAGE_SUFFIXES

SOURCE = LabelSource(labeler="import:yolo")


def read_yolo(root: Path) -> LabelledSet:
    """Every image under root/images/, with the boxes of its namesake under root/labels/ (none: no object)."""
    names = yolo_names(root)
    images = []
    for path in sorted(p for p in (root / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        label_file = root / "labels" / path.relative_to(root / "images").with_suffix(".txt")
        image = labelled_image(path, str(label_file))
        lines = _text(label_file).splitlines() if label_file.is_file() else []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{label_file} line {number}"
            parts = line.split()
            try:
                index, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
            except (ValueError, IndexError):
                raise EdgedistillError(f"{where} is not `class cx cy w h`: {line.strip()!r}",
                                       "write one box per line, its centre and size as shares of the image") from None
            if not 0 <= index < len(names):
                raise EdgedistillError(f"{where} has class {index}, but {len(names)} class name(s) are given",
                                       "list every class in data.yaml `names` or classes.txt")
            corners = ((cx - w / 2) * image.width, (cy - h / 2) * image.height,
                       (cx + w / 2) * image.width, (cy + h / 2) * image.height)
            image.labels.append(Label(class_name=names[index], box=checked_box(corners, image, where), source=SOURCE))
        images.append(image)
    return LabelledSet(images, names)


def yolo_names(root: Path) -> list[str]:
    for path in (root / "data.yaml", root / "dataset.yaml"):
        if path.is_file():
            try:
                data = yaml.safe_load(_text(path))
            # PyYAML's constructors raise plain Python errors for some bad scalars (`!!int x`)
            except (yaml.YAMLError, ValueError, KeyError, AttributeError, TypeError, RecursionError) as error:
                raise EdgedistillError(f"{path} is not readable YAML: {error}", "fix its syntax") from None
            names = data.get("names") if isinstance(data, dict) else None
            if isinstance(names, list):
                return [str(n) for n in names]
            if isinstance(names, dict) and all(isinstance(key, int) for key in names):
                return [str(names[key]) for key in sorted(names)]
            if names is not None:
                raise EdgedistillError(f"{path} has `names` that are neither a list nor class numbers with names",
                                       "write `names: [cat, dog]` or `names: {0: cat, 1: dog}`")
    for name in ("classes.txt", "obj.names"):
        if (root / name).is_file():
            return [line.strip() for line in _text(root / name).splitlines() if line.strip()]
    raise EdgedistillError(f"the YOLO folder {root} names no classes", "add data.yaml with `names: [...]` or classes.txt")


def write_yolo_folder(dataset: Dataset, samples: Iterable[Sample], labels: list[str], folder: Path,
                      link_images: bool = False) -> Path:
    """images/<split>/ and labels/<split>/ (class cx cy w h, 0-1), samples not yet split under train;
    returns data.yaml, whose folder is the dataset root. Images are copies, or links to the media
    (`link_images`, for training, which reads them once and throws the folder away)."""
    index = {label: i for i, label in enumerate(labels)}
    for split in SPLITS:
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
    for sample, path in dataset.with_media(samples):
        media, split = path.resolve(), sample.split or "train"
        image = folder / "images" / split / f"{sample.id}{media.suffix}"
        if link_images and not image.is_symlink():
            image.symlink_to(media)
        elif not link_images:
            shutil.copyfile(media, image)
        width, height = sample.shape.width, sample.shape.height
        lines = [f"{index[label.class_name]} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} "
                 f"{w / width:.6f} {h / height:.6f}"
                 for label in sample.labels if label.box and label.class_name in index
                 for x, y, w, h in [label.box]]
        (folder / "labels" / split / f"{sample.id}.txt").write_text("\n".join(lines))
    data = folder / "data.yaml"
    write_atomic(data, yaml.safe_dump({**{s: f"images/{s}" for s in SPLITS}, "names": dict(enumerate(labels))}).encode())
    return data


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise EdgedistillError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})",
                               "save it as UTF-8") from None
