"""Real photos a team labelled: read them, and measure a detector on them the way a device uses it.

Held-out composites flatter a detector trained on composites; these are the figures that say how it
does on the camera's photos. A set is read from any of:
- a CSV of `file,x0,y0,x1,y1[,class][,invalid]` in image pixels (a row with no box lists a photo with
  no object), or a folder holding such a `labels.csv`; files are relative to the CSV or its `images/`;
- a COCO JSON file (`images`, `annotations`, `categories`), or a folder holding one;
- a YOLO folder: `images/` and `labels/` with one `class cx cy w h` (shares of the image) line per
  box, class names from `data.yaml` or `classes.txt`;
- a Label Studio JSON export (rectangle labels, in percent of the image).

Boxes below `min_share` of the image's shorter side (what a small input cannot resolve), crowd boxes
and boxes marked invalid are kept as *ignore* regions: a detection inside one counts neither for nor
against the model. Photos with no box at all measure false alarms.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from edgedistill.errors import EdgedistillError
from edgedistill.image_frontend import Centroid
from edgedistill.images import IMAGE_SUFFIXES, load_image

BOX_TOLERANCE = 2.0  # pixels a box may reach past the border (annotators' rounding)


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    width: int  # of the upright image (EXIF rotation applied), which the boxes are in
    height: int
    boxes: np.ndarray  # (n, 4) float x0, y0, x1, y1 in pixels: the objects to find
    classes: np.ndarray  # (n,) int: index into the recipe's classes
    ignore: np.ndarray  # (m, 4) regions where a detection counts neither way (too small, crowd, invalid)


@dataclass(frozen=True)
class _Box:
    file: Path
    box: tuple[float, float, float, float] | None  # x0, y0, x1, y1; None: the photo has no object
    class_name: str | None  # None: the recipe's only class
    ignored: bool = False
    where: str = ""  # for errors: which file and line


def read_labelled_photos(location: str | Path, classes: list[str], min_share: float = 0.0) -> list[LabelledPhoto]:
    """Every photo of a labelled set, checked against the images; an error that says what is wrong for
    a missing, empty or malformed set, for boxes outside their image and for classes the recipe lacks."""
    path = Path(location).expanduser()
    if not path.exists():
        raise EdgedistillError(f"real photos at {path} do not exist",
                               "point evaluate.real at a labelled set: a CSV of boxes, a COCO JSON, a YOLO folder "
                               "or a Label Studio export")
    boxes = _read_any(path)
    if not boxes:
        raise EdgedistillError(f"{path} lists no labelled photo", "add photos and their boxes (see `evaluate.real`)")
    return _photos(boxes, classes, min_share, path)


def _read_any(path: Path) -> list[_Box]:
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return _read_csv(path)
        if path.suffix.lower() == ".json":
            return _read_json(path)
        raise EdgedistillError(f"{path} is neither a CSV nor a JSON file", "give a .csv of boxes or a .json export")
    if (path / "labels.csv").is_file():
        return _read_csv(path / "labels.csv")
    if (path / "labels").is_dir() and (path / "images").is_dir():
        return _read_yolo(path)
    exports = sorted(path.glob("*.json"))
    if len(exports) == 1:
        return _read_json(exports[0])
    raise EdgedistillError(f"{path} holds no labels this tool reads" + (" (several JSON files)" if exports else ""),
                           "add labels.csv, one COCO or Label Studio JSON file, or YOLO images/ and labels/ folders")


def _photo_path(root: Path, name: str) -> Path:
    """A file named in a label file: relative to it, or to its `images/` folder, or absolute."""
    for candidate in (root / name, root / "images" / name):
        if candidate.is_file():
            return candidate
    return root / name


def _read_csv(path: Path) -> list[_Box]:
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
    boxes = []
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
        boxes.append(_Box(_photo_path(path.parent, row["file"]), box, row.get("class") or None,
                          row.get("invalid", "0") not in ("", "0", "false", "False"), where))
    return boxes


def _read_json(path: Path) -> list[_Box]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EdgedistillError(f"{path} is not readable JSON: {error}", "export the labels again") from None
    if isinstance(data, dict) and {"images", "annotations"} <= set(data):
        return _read_coco(path, data)
    if isinstance(data, list) and all(isinstance(task, dict) and "data" in task for task in data):
        return _read_label_studio(path, data)
    raise EdgedistillError(f"{path} is neither a COCO file (images, annotations) nor a Label Studio export "
                           "(a list of tasks)", "export the labels as COCO or as Label Studio JSON")


def _read_coco(path: Path, data: dict) -> list[_Box]:
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    images = {image["id"]: image for image in data["images"]}
    boxes = [_Box(_photo_path(path.parent, image["file_name"]), None, None, where=f"{path} image {image['id']}")
             for image in data["images"]]
    for annotation in data["annotations"]:
        where = f"{path} annotation {annotation.get('id')}"
        if annotation.get("image_id") not in images or annotation.get("category_id") not in names:
            raise EdgedistillError(f"{where} points to an image or category the file does not list",
                                   "export the labels again with their images and categories")
        x, y, w, h = (float(v) for v in annotation["bbox"])
        image = images[annotation["image_id"]]
        boxes.append(_Box(_photo_path(path.parent, image["file_name"]), (x, y, x + w, y + h),
                          names[annotation["category_id"]], bool(annotation.get("iscrowd")), where))
    return boxes


def _read_label_studio(path: Path, tasks: list[dict]) -> list[_Box]:
    boxes = []
    for task in tasks:
        reference = next((v for v in task["data"].values() if isinstance(v, str)), "")
        file = _photo_path(path.parent, _local_name(reference))
        where = f"{path} task {task.get('id')}"
        boxes.append(_Box(file, None, None, where=where))
        annotations = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
        for region in (annotations[-1]["result"] if annotations else []):
            value = region.get("value", {})
            if region.get("type") != "rectanglelabels":
                continue
            width, height = region["original_width"], region["original_height"]
            x0, y0 = value["x"] * width / 100, value["y"] * height / 100
            boxes.append(_Box(file, (x0, y0, x0 + value["width"] * width / 100, y0 + value["height"] * height / 100),
                              value["rectanglelabels"][0], where=where))
    return boxes


def _local_name(reference: str) -> str:
    """A Label Studio image reference (`/data/local-files/?d=photos/a.jpg`, `/data/upload/3/ab-a.jpg`, a URL
    or a path) -> a path to look for beside the export."""
    parsed = urlparse(reference)
    if "d" in parse_qs(parsed.query):
        return Path(unquote(parse_qs(parsed.query)["d"][0])).name
    return Path(unquote(parsed.path)).name


def _read_yolo(root: Path) -> list[_Box]:
    names = _yolo_names(root)
    boxes = []
    for image in sorted(p for p in (root / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        label_file = root / "labels" / image.relative_to(root / "images").with_suffix(".txt")
        boxes.append(_Box(image, None, None, where=str(label_file)))
        lines = label_file.read_text().splitlines() if label_file.is_file() else []
        width, height = _upright_size(image, str(label_file))
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
            boxes.append(_Box(image, ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                      (cy + h / 2) * height), names[index], where=where))
    return boxes


def _yolo_names(root: Path) -> list[str]:
    for name in ("data.yaml", "dataset.yaml"):
        if (root / name).is_file():
            names = (yaml.safe_load((root / name).read_text()) or {}).get("names")
            if isinstance(names, dict):
                return [str(names[key]) for key in sorted(names)]
            if isinstance(names, list):
                return [str(n) for n in names]
    for name in ("classes.txt", "obj.names"):
        if (root / name).is_file():
            return [line.strip() for line in (root / name).read_text().splitlines() if line.strip()]
    raise EdgedistillError(f"the YOLO folder {root} names no classes", "add data.yaml with `names: [...]` or classes.txt")


def _upright_size(path: Path, where: str) -> tuple[int, int]:
    """Width and height after EXIF rotation, read from the header without decoding the pixels."""
    if not path.is_file():
        raise EdgedistillError(f"{where} names the photo {path}, which does not exist",
                               "fix the path (relative to the label file or its images/ folder) or remove the entry")
    try:
        with Image.open(path) as image:
            quarter_turn = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
            return (image.height, image.width) if quarter_turn else (image.width, image.height)
    except (UnidentifiedImageError, OSError) as error:
        raise EdgedistillError(f"{path} is not an image that can be read ({error.__class__.__name__})",
                               "replace it, or remove its entries from the labels") from None


def _photos(boxes: list[_Box], classes: list[str], min_share: float, origin: Path) -> list[LabelledPhoto]:
    index = {name.casefold(): i for i, name in enumerate(classes)}
    by_file: dict[Path, list[_Box]] = {}
    for box in boxes:
        by_file.setdefault(box.file, []).append(box)
    unknown = sorted({b.class_name for b in boxes if b.class_name and b.class_name.casefold() not in index})
    if unknown:
        raise EdgedistillError(f"{origin} labels classes the recipe does not have: {', '.join(unknown)}",
                               f"the recipe's classes are {', '.join(classes)}; remove or rename those labels")
    if any(b.box is not None and b.class_name is None and not b.ignored for b in boxes) and len(classes) > 1:
        raise EdgedistillError(f"{origin} has boxes without a class, and the recipe has {len(classes)} classes",
                               "add a `class` column naming each box's class")
    photos = []
    for file, entries in by_file.items():
        width, height = _upright_size(file, entries[0].where)
        kept, kept_classes, ignored = [], [], []
        for entry in (e for e in entries if e.box is not None):
            x0, y0, x1, y1 = entry.box
            if not (x1 > x0 and y1 > y0):
                raise EdgedistillError(f"{entry.where}: the box {list(entry.box)} has no area",
                                       "write corners as x0 < x1 and y0 < y1")
            if x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE or x1 > width + BOX_TOLERANCE or y1 > height + BOX_TOLERANCE:
                raise EdgedistillError(f"{entry.where}: the box {list(entry.box)} lies outside the {width}x{height} "
                                       f"photo {file.name}", "check that boxes are in pixels of the upright photo")
            box = (max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height))
            if entry.ignored or max(x1 - x0, y1 - y0) < min_share * min(width, height):
                ignored.append(box)
            else:
                kept.append(box)
                kept_classes.append(index[entry.class_name.casefold()] if entry.class_name else 0)
        photos.append(LabelledPhoto(file, width, height, np.array(kept, np.float64).reshape(-1, 4),
                                    np.array(kept_classes, np.int64), np.array(ignored, np.float64).reshape(-1, 4)))
    return photos


# -- measuring ------------------------------------------------------------------------------------
Point = tuple[int, float, float]  # class index, x, y in the photo's pixels


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


def score_on_photos(photos: list[LabelledPhoto], found: list[list[Point]], labels: list[str]) -> dict:
    """Precision, recall and F1 (overall and per class) of found centres, and false alarms on the photos
    with no object (nor ignore region) at all."""
    counts = np.zeros((len(labels), 3), np.int64)
    empty_alarms = 0
    for photo, points in zip(photos, found, strict=True):
        for index in range(len(labels)):
            mine = np.array([(x, y) for c, x, y in points if c == index], np.float64).reshape(-1, 2)
            counts[index] += match_in_boxes(photo.boxes[photo.classes == index], photo.ignore, mine)
        if len(photo.boxes) == 0 and len(photo.ignore) == 0:
            empty_alarms += len(points)
    empty = sum(1 for p in photos if len(p.boxes) == 0 and len(p.ignore) == 0)
    return {**_scores(*(int(v) for v in counts.sum(axis=0))),
            "per_class": {label: _scores(*(int(v) for v in row)) for label, row in zip(labels, counts)},
            "photos": len(photos), "objects": int(sum(len(p.boxes) for p in photos)),
            "ignored_regions": int(sum(len(p.ignore) for p in photos)), "empty_photos": empty,
            "false_alarms_per_empty_photo": empty_alarms / empty if empty else None}


def compare_with_teacher(photos: list[LabelledPhoto], student: list[list[Point]], teacher: list[list[Point]] | None,
                         labels: list[str], min_share: float) -> dict:
    """The student's figures on real photos beside its teacher's, and the share of the teacher's F1 it keeps."""
    result = {"student": score_on_photos(photos, student, labels), "min_share": min_share}
    if teacher is not None:
        result["teacher"] = score_on_photos(photos, teacher, labels)
        student_f1, teacher_f1 = result["student"]["f1"], result["teacher"]["f1"]
        result["student_to_teacher_f1"] = student_f1 / teacher_f1 if student_f1 is not None and teacher_f1 else None
    return result


def box_centres(boxes_of: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Point]]:
    """Per photo, (xyxy boxes, class indices) -> the boxes' centres as found points."""
    return [[(int(c), float((b[0] + b[2]) / 2), float((b[1] + b[3]) / 2)) for b, c in zip(boxes, classes)]
            for boxes, classes in boxes_of]


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
    teacher: list[tuple[np.ndarray, np.ndarray]] | None = None  # per photo: its boxes (xyxy) and class indices


def measure_student(check: RealPhotoCheck, labels: list[str],
                    detect: Callable[[np.ndarray], list[Centroid]]) -> tuple[dict, list[list[Centroid]]]:
    """The student's figures on the check's photos beside its teacher's, and what it found in each photo.
    `detect`: an RGB photo -> the student's centroids in its pixels, as `edgedistill predict` reports them."""
    found = [detect(image) for image in check.images]
    points = [[(c.class_index, c.x, c.y) for c in image] for image in found]
    teacher = box_centres(check.teacher) if check.teacher is not None else None
    return compare_with_teacher(check.photos, points, teacher, labels, check.min_share), found
