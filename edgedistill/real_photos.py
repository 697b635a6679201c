"""Real photos a team labelled: read them, and measure a detector on them the way a device uses it.

Held-out composites flatter a detector trained on composites; these are the figures that say how it
does on the camera's photos. A set is read from any of:
- a CSV of `file,x0,y0,x1,y1[,class][,invalid]` in image pixels (a row with no box lists a photo with
  no object), or a folder holding such a `labels.csv`; files are relative to the CSV or its `images/`;
- a COCO JSON file (`images`, `annotations`, `categories`), or a folder holding one;
- a YOLO folder: `images/` and `labels/` with one `class cx cy w h` (shares of the image) line per
  box, class names from `data.yaml` or `classes.txt`;
- a Label Studio JSON export (rectangle labels, in percent of the image).
COCO, YOLO and Label Studio are read by edgedistill/formats/; the CSV is this module's own.

Boxes below `min_share` of the image's shorter side (what a small input cannot resolve), crowd boxes
and boxes marked invalid are kept as *ignore* regions: a detection inside one counts neither for nor
against the model. Photos with no box at all measure false alarms.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.dataset import Label, LabelSource
from edgedistill.errors import EdgedistillError
from edgedistill.formats.coco import coco_set, is_coco
from edgedistill.formats.label_studio import is_label_studio, label_studio_set
from edgedistill.formats.labelled import LabelledImage, checked_box, image_file, labelled_image, load_json
from edgedistill.formats.yolo import read_yolo
from edgedistill.boxes import Detections
from edgedistill.images import load_image

CSV_SOURCE = LabelSource(labeler="evaluate.real")


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    width: int  # of the upright image (EXIF rotation applied), which the boxes are in
    height: int
    boxes: np.ndarray  # (n, 4) float x0, y0, x1, y1 in pixels: the objects to find
    classes: np.ndarray  # (n,) int: index into the recipe's classes
    ignore: np.ndarray  # (m, 4) regions where a detection counts neither way (too small, crowd, invalid)


def read_labelled_photos(location: str | Path, classes: list[str], min_share: float = 0.0) -> list[LabelledPhoto]:
    """Every photo of a labelled set, checked against the images; an error that says what is wrong for
    a missing, empty or malformed set, for boxes outside their image and for classes the recipe lacks."""
    path = Path(location).expanduser()
    if not path.exists():
        raise EdgedistillError(f"real photos at {path} do not exist",
                               "point evaluate.real at a labelled set: a CSV of boxes, a COCO JSON, a YOLO folder "
                               "or a Label Studio export")
    images = _read_any(path, classes)
    if not images:
        raise EdgedistillError(f"{path} lists no labelled photo", "add photos and their boxes (see `evaluate.real`)")
    return _photos(images, classes, min_share, path)


def _read_any(path: Path, classes: list[str]) -> list[LabelledImage]:
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return _read_csv(path, classes)
        if path.suffix.lower() == ".json":
            return _read_json(path)
        raise EdgedistillError(f"{path} is neither a CSV nor a JSON file", "give a .csv of boxes or a .json export")
    if (path / "labels.csv").is_file():
        return _read_csv(path / "labels.csv", classes)
    if (path / "labels").is_dir() and (path / "images").is_dir():
        return read_yolo(path).images
    exports = sorted(path.glob("*.json"))
    if len(exports) == 1:
        return _read_json(exports[0])
    raise EdgedistillError(f"{path} holds no labels this tool reads" + (" (several JSON files)" if exports else ""),
                           "add labels.csv, one COCO or Label Studio JSON file, or YOLO images/ and labels/ folders")


def _read_csv(path: Path, classes: list[str]) -> list[LabelledImage]:
    """One image per file named; a box without a class is of the recipe's only class."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as error:
        raise EdgedistillError(f"{path} is not a readable CSV: {error}", "save it as UTF-8 CSV") from None
    columns = {(c or "").strip().lower() for c in reader.fieldnames or []}
    needed = {"file", "x0", "y0", "x1", "y1"}
    if not needed <= columns:
        raise EdgedistillError(f"{path} needs the columns file,x0,y0,x1,y1; it has {sorted(columns) or 'none'}",
                               "add the header line: file,x0,y0,x1,y1,class (boxes in image pixels)")
    images: dict[Path, LabelledImage] = {}
    for number, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        where = f"{path} line {number}"
        if not row["file"]:
            raise EdgedistillError(f"{where} names no file", "fill it in or remove the line")
        corners = [row[c] for c in ("x0", "y0", "x1", "y1")]
        try:
            box = tuple(float(v) for v in corners) if any(corners) else None
        except ValueError:
            raise EdgedistillError(f"{where} has a box that is not four numbers: {corners}",
                                   "write pixel corners x0,y0,x1,y1, or leave all four empty for a photo with no "
                                   "object") from None
        file = image_file(path.parent, row["file"])
        if file not in images:
            images[file] = labelled_image(file, where)
        image = images[file]
        if box is None:
            continue
        ignored = row.get("invalid", "0") not in ("", "0", "false", "False")
        if not row.get("class") and not ignored and len(classes) > 1:
            raise EdgedistillError(f"{path} has boxes without a class (line {number}), and the recipe has "
                                   f"{len(classes)} classes", "add a `class` column naming each box's class")
        label = Label(class_name=row.get("class") or classes[0], box=checked_box(box, image, where), source=CSV_SOURCE)
        (image.ignore if ignored else image.labels).append(label)
    return list(images.values())


def _read_json(path: Path) -> list[LabelledImage]:
    data = load_json(path)
    if is_coco(data):
        return coco_set(path, data).images
    if is_label_studio(data):
        return label_studio_set(path, data).images
    raise EdgedistillError(f"{path} is neither a COCO file (images, annotations) nor a Label Studio export "
                           "(a list of tasks)", "export the labels as COCO or as Label Studio JSON")


def _photos(images: list[LabelledImage], classes: list[str], min_share: float, origin: Path) -> list[LabelledPhoto]:
    """Labelled images as the arrays the scores use: boxes smaller than `min_share` of the photo's shorter
    side join the ignore regions; the same file listed twice is one photo."""
    index = {name.casefold(): i for i, name in enumerate(classes)}
    unknown = sorted({label.class_name for image in images for label in image.labels + image.ignore
                      if label.class_name.casefold() not in index})
    if unknown:
        raise EdgedistillError(f"{origin} labels classes the recipe does not have: {', '.join(unknown)}",
                               f"the recipe's classes are {', '.join(classes)}; remove or rename those labels")
    by_file: dict[Path, list[LabelledImage]] = {}
    for image in images:
        by_file.setdefault(image.path, []).append(image)
    photos = []
    for file, entries in by_file.items():
        width, height = entries[0].width, entries[0].height
        kept, kept_classes, ignored = [], [], [_corners(label) for image in entries for label in image.ignore]
        for label in (label for image in entries for label in image.labels):
            _, _, w, h = label.box
            if max(w, h) < min_share * min(width, height):
                ignored.append(_corners(label))
            else:
                kept.append(_corners(label))
                kept_classes.append(index[label.class_name.casefold()])
        photos.append(LabelledPhoto(file, width, height, np.array(kept, np.float64).reshape(-1, 4),
                                    np.array(kept_classes, np.int64), np.array(ignored, np.float64).reshape(-1, 4)))
    return photos


def _corners(label: Label) -> tuple[float, float, float, float]:
    x, y, w, h = label.box
    return x, y, x + w, y + h


# -- measuring ------------------------------------------------------------------------------------
def match_in_boxes(boxes: np.ndarray, ignore: np.ndarray, points: np.ndarray) -> tuple[int, int, int]:
    """(true positives, false positives, misses) of found centres against true boxes of one class.

    A centre finds a box when it lies inside it; each box is found once and each centre finds one box
    (the closest-centred of those it lies in, by a one-to-one assignment). A centre that finds no box
    but lies in an ignore region is not counted.
    """
    boxes, points = boxes.reshape(-1, 4), points.reshape(-1, 2)
    tp = 0
    unmatched = np.ones(len(points), bool)
    if len(boxes) and len(points):
        from scipy.optimize import linear_sum_assignment

        inside = _inside(points, boxes)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        sizes = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-9)
        distance = np.linalg.norm((points[None] - centres[:, None]) / sizes[:, None], axis=-1)
        rows, columns = linear_sum_assignment(np.where(inside, distance, 1e9))
        hits = inside[rows, columns]
        tp = int(hits.sum())
        unmatched[columns[hits]] = False
    in_ignored = _inside(points[unmatched], ignore.reshape(-1, 4)).any(axis=0)
    return tp, int((~in_ignored).sum()), len(boxes) - tp


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(boxes, points) bool: whether each point lies in each x0, y0, x1, y1 box, edges included."""
    x, y = points[None, :, 0], points[None, :, 1]
    return (x >= boxes[:, None, 0]) & (x <= boxes[:, None, 2]) & (y >= boxes[:, None, 1]) & (y <= boxes[:, None, 3])


def _scores(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"f1": f1, "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}


def score_on_photos(photos: list[LabelledPhoto], found: list[Detections], labels: list[str]) -> dict:
    """Precision, recall and F1 (overall and per class) of the centres of what was found in each photo,
    and false alarms on the photos with no object (nor ignore region) at all."""
    counts = np.zeros((len(labels), 3), np.int64)
    empty_alarms = 0
    for photo, detections in zip(photos, found, strict=True):
        for index in range(len(labels)):
            counts[index] += match_in_boxes(photo.boxes[photo.classes == index], photo.ignore,
                                            detections.of_class(index).centres)
        if len(photo.boxes) == 0 and len(photo.ignore) == 0:
            empty_alarms += len(detections)
    empty = sum(1 for p in photos if len(p.boxes) == 0 and len(p.ignore) == 0)
    return {**_scores(*(int(v) for v in counts.sum(axis=0))),
            "per_class": {label: _scores(*(int(v) for v in row)) for label, row in zip(labels, counts)},
            "photos": len(photos), "objects": int(sum(len(p.boxes) for p in photos)),
            "ignored_regions": int(sum(len(p.ignore) for p in photos)), "empty_photos": empty,
            "false_alarms_per_empty_photo": empty_alarms / empty if empty else None}


def compare_with_teacher(photos: list[LabelledPhoto], student: list[Detections], teacher: list[Detections] | None,
                         labels: list[str], min_share: float) -> dict:
    """The student's figures on real photos beside its teacher's, and the share of the teacher's F1 it keeps."""
    result = {"student": score_on_photos(photos, student, labels), "min_share": min_share}
    if teacher is not None:
        result["teacher"] = score_on_photos(photos, teacher, labels)
        student_f1, teacher_f1 = result["student"]["f1"], result["teacher"]["f1"]
        result["student_to_teacher_f1"] = student_f1 / teacher_f1 if student_f1 is not None and teacher_f1 else None
    return result


def load_photos(photos: list[LabelledPhoto]) -> list[np.ndarray]:
    """Decode every photo (upright RGB), checking it is the size its labels were checked against."""
    images = []
    for photo in photos:
        image = load_image(photo.path)
        if image.shape[:2] != (photo.height, photo.width):
            raise EdgedistillError(f"{photo.path} decodes to {image.shape[1]}x{image.shape[0]}, not the "
                                   f"{photo.width}x{photo.height} its header says", "save the photo again")
        images.append(image)
    return images


@dataclass(frozen=True)
class RealPhotoCheck:
    """What export measures the int8 student on: labelled real photos, decoded, and what the teacher found."""

    photos: list[LabelledPhoto]
    images: list[np.ndarray]  # upright RGB, one per photo
    min_share: float
    teacher: list[Detections] | None = None  # per photo, what the teacher found (class ids index the labels)


def measure_student(check: RealPhotoCheck, labels: list[str],
                    detect: Callable[[np.ndarray], Detections]) -> tuple[dict, list[Detections]]:
    """The student's figures on the check's photos beside its teacher's, and what it found in each photo.
    `detect`: an RGB photo -> the student's detections in its pixels, as `edgedistill predict` reports them."""
    found = [detect(image) for image in check.images]
    return compare_with_teacher(check.photos, found, check.teacher, labels, check.min_share), found
