"""Label Studio's JSON and our labels, both ways: the result regions of a task (boxes in percent of the
image, brush masks in its own RLE, keyword choices and transcripts) from and to Labels, and whole JSON
exports read (`read_label_studio`) and written (`write_label_studio`). The server round trip that uses
these lives in labelers/label_studio.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Union
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, model_validator

from edgedistill.boxes import label_iou
from edgedistill.dataset import Dataset, ImageShape, Label, LabelSource, Sample
from edgedistill.errors import EdgedistillError, describe_validation_error
from edgedistill.formats.labelled import (LabelledSet, checked_box, copy_images, image_file, labelled_image, load_json,
                                         write_json_array)
from edgedistill.masks import decode_rle, encode_rle, mask_box

SOURCE = LabelSource(labeler="import:labelstudio")

# control and object tag names of the labelling configs edgedistill generates (labelers/label_studio.py)
IMAGE, AUDIO = "image", "audio"
BOX, MASK = "box", "mask"
KEYWORD, TRANSCRIPT = "keyword", "transcript"
VERDICT, REJECT = "verdict", "reject sample"


# -- our labels -> result regions ---------------------------------------------------------------
def label_results(sample: Sample, task: str) -> list[dict[str, Any]]:
    """One sample's labels as Label Studio result regions."""
    if task == "keyword_spotting":
        label = sample.labels[0] if sample.labels else None
        if label is None:
            return []
        regions = [{"from_name": KEYWORD, "to_name": AUDIO, "type": "choices", "value": {"choices": [label.class_name]},
                    **({"score": label.score} if label.score is not None else {})}]
        if label.transcript:
            regions.append({"from_name": TRANSCRIPT, "to_name": AUDIO, "type": "textarea",
                            "value": {"text": [label.transcript]}})
        return regions
    assert isinstance(sample.shape, ImageShape)
    width, height = sample.shape.width, sample.shape.height
    regions = []
    for index, label in enumerate(sample.labels):
        common = {"to_name": IMAGE, "original_width": width, "original_height": height, "image_rotation": 0,
                  **({"score": label.score} if label.score is not None else {})}
        if label.box is not None:
            x, y, w, h = label.box
            regions.append({"id": f"b{index}", "from_name": BOX, "type": "rectanglelabels", **common,
                            "value": {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width,
                                      "height": 100 * h / height, "rotation": 0, "rectanglelabels": [label.class_name]}})
        if label.mask is not None:
            regions.append({"id": f"m{index}", "from_name": MASK, "type": "brushlabels", **common,
                            "value": {"format": "rle", "rle": coco_to_brush(label.mask),
                                      "brushlabels": [label.class_name]}})
    return regions


def coco_to_brush(rle: dict[str, Any]) -> list[int]:
    """COCO RLE (compressed or not) -> Label Studio's brush RLE."""
    from label_studio_sdk.converter.brush import mask2rle

    return [int(v) for v in mask2rle(decode_rle(rle).astype(np.uint8) * 255)]


def brush_to_mask(rle: list[int], width: int, height: int) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle as decode_brush

    try:
        return decode_brush(rle).reshape(height, width, 4)[:, :, 3] > 127
    except (ValueError, IndexError, OverflowError) as error:  # a damaged stroke, or one of an image of another size
        raise EdgedistillError(f"a brush mask is not a mask of the {width}x{height} image it is on ({error})",
                               "draw the mask again in Label Studio, or delete it") from None


# -- result regions -> our labels ---------------------------------------------------------------
def latest_annotation(annotations: list[dict]) -> dict | None:
    """The newest finished annotation of a task; skipped (cancelled) ones do not count. Among annotations
    that carry no time or id, the last one listed."""
    done = [a for a in annotations if not a.get("was_cancelled")]
    return max(reversed(done), key=lambda a: (a.get("updated_at") or "", a.get("id") or 0)) if done else None


def results_to_labels(results: list[dict], sample: Sample, task: str,
                      source: LabelSource) -> tuple[list[Label], bool]:
    """A reviewer's regions as Labels, and whether the sample was rejected as a whole."""
    rejected = any(r.get("from_name") == VERDICT and REJECT in r.get("value", {}).get("choices", []) for r in results)
    if task == "keyword_spotting":
        chosen = next((r["value"]["choices"][0] for r in results if r.get("from_name") == KEYWORD), None)
        text = next((" ".join(r["value"].get("text", [])) for r in results if r.get("from_name") == TRANSCRIPT), None)
        if chosen is None:
            return [], rejected
        auto = sample.labels[0] if sample.labels else None
        span = auto.span if auto and auto.class_name == chosen else None
        return [Label(class_name=chosen, span=span, transcript=text or None, source=source)], rejected
    assert isinstance(sample.shape, ImageShape)
    return image_labels(results, sample.shape.width, sample.shape.height, source), rejected


def image_labels(results: list[dict], width: int, height: int, source: LabelSource) -> list[Label]:
    """Rectangle and brush regions (of any control name) as Labels; a brush region inside a box of its class
    becomes that box's mask."""
    labels = []
    for region in results:
        value = region.get("value", {})
        if region.get("type") == "rectanglelabels":
            box = (value["x"] * width / 100, value["y"] * height / 100,
                   value["width"] * width / 100, value["height"] * height / 100)
            labels.append(Label(class_name=value["rectanglelabels"][0], box=box, source=source))
        elif region.get("type") == "brushlabels" and value.get("format") == "rle":
            mask = brush_to_mask(value["rle"], width, height)
            labels.append(Label(class_name=value["brushlabels"][0], box=mask_box(mask),
                                mask=encode_rle(mask), source=source))
    return _merge_masks_into_boxes(labels)


def _merge_masks_into_boxes(labels: list[Label]) -> list[Label]:
    """A brush region and the box of the same class that holds it are one object, not two."""
    boxes = [label for label in labels if label.mask is None]
    merged = list(boxes)
    for masked in (label for label in labels if label.mask is not None):
        host = next((b for b in boxes if b.class_name == masked.class_name and b.mask is None
                     and masked.box and label_iou(b.box, masked.box) > 0.5), None)
        if host is None:
            merged.append(masked)
        else:
            merged[merged.index(host)] = host.model_copy(update={"mask": masked.mask})
            boxes.remove(host)
    return merged


# -- JSON exports -------------------------------------------------------------------------------
class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow")  # exports carry more than is read here


class _Box(_Entry):
    x: float
    y: float
    width: float
    height: float
    rectanglelabels: list[str] = Field(min_length=1)


class _Brush(_Entry):
    format: str | None = None
    rle: list[int] | None = None
    brushlabels: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _rle_when_rle(self) -> "_Brush":
        if self.format == "rle" and self.rle is None:
            raise ValueError("a brush region in the rle format has no rle")
        return self


class _BoxRegion(_Entry):
    type: Literal["rectanglelabels"]
    value: _Box


class _BrushRegion(_Entry):
    type: Literal["brushlabels"]
    value: _Brush


class _OtherRegion(_Entry):  # choices, text...: not read for images
    type: str | None = None
    value: dict[str, Any] = Field(default_factory=dict)


def _region_type(region: Any) -> str:
    kind = region.get("type") if isinstance(region, dict) else None
    return kind if kind in ("rectanglelabels", "brushlabels") else "other"


class _Annotation(_Entry):
    id: int | None = None
    updated_at: str | None = None
    was_cancelled: bool = False
    result: list[Annotated[Union[Annotated[_BoxRegion, Tag("rectanglelabels")],
                                 Annotated[_BrushRegion, Tag("brushlabels")], Annotated[_OtherRegion, Tag("other")]],
                           Discriminator(_region_type)]] | None = None


class _Task(_Entry):
    data: dict[str, Any]
    annotations: list[_Annotation] | None = None


_EXPORT = TypeAdapter(list[_Task])


def is_label_studio(data: object) -> bool:
    return isinstance(data, list) and all(isinstance(task, dict) and "data" in task for task in data)


def read_label_studio(path: Path) -> LabelledSet:
    data = load_json(path)
    if not is_label_studio(data):
        raise EdgedistillError(f"{path} is not a Label Studio export: it is not a list of tasks with `data`",
                               "export the project from Label Studio as JSON, or import the labels with the "
                               "importer of their format")
    return label_studio_set(path, data)


def label_studio_set(path: Path, tasks: list[dict]) -> LabelledSet:
    """The images of an export's annotated tasks, with the boxes and masks of each task's newest annotation.
    A task nobody annotated is no labelled image and is left out; its image is looked for beside the export."""
    try:  # the parts read below, typed
        tasks = [task.model_dump() for task in _EXPORT.validate_python(tasks)]
    except ValidationError as error:
        raise EdgedistillError(f"{path} is not a Label Studio export that can be read:\n"
                               f"{describe_validation_error(error)}", "export the project from Label Studio as JSON "
                                                                      "again") from None
    images = []
    for task in tasks:
        annotation = latest_annotation(task.get("annotations") or [])
        if annotation is None:
            continue
        reference = next((v for v in task["data"].values() if isinstance(v, str)), "")
        where = f"{path} task {task.get('id')}"
        image = labelled_image(image_file(path.parent, _local_name(reference)), where)
        for label in image_labels(annotation.get("result") or [], image.width, image.height, SOURCE):
            if label.box is not None:  # an empty brush stroke marks nothing
                x, y, w, h = label.box
                image.labels.append(label.model_copy(update={"box": checked_box((x, y, x + w, y + h), image, where)}))
        images.append(image)
    return LabelledSet(images, sorted({label.class_name for image in images for label in image.labels}))


def _local_name(reference: str) -> str:
    """A Label Studio image reference (`/data/local-files/?d=photos/a.jpg`, `/data/upload/3/ab-a.jpg`, a URL
    or a path) -> a path to look for beside the export."""
    try:
        parsed = urlparse(reference)
    except ValueError:  # "http://[...": no URL, so a path
        return Path(reference).name
    if "d" in parse_qs(parsed.query):
        return Path(unquote(parse_qs(parsed.query)["d"][0])).name
    return Path(unquote(parsed.path)).name


def write_label_studio(dataset: Dataset, samples: Iterable[Sample], folder: Path) -> Path:
    """A detection version as a Label Studio JSON export (`tasks.json`, each sample's labels as its annotation)
    with a copy of each image in `images/`, written as the samples come; returns the JSON's path."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    tasks = ({"id": number, "data": {IMAGE: f"images/{Path(sample.media).name}", "sample_id": sample.id},
              "annotations": [{"id": number, "result": label_results(sample, "detection"), "was_cancelled": False}]}
             for number, sample in enumerate(copy_images(dataset, samples, folder / "images"), start=1))
    path = folder / "tasks.json"
    with open(path, "w") as export:
        write_json_array(export, map(json.dumps, tasks))
    return path
