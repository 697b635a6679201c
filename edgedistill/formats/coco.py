"""COCO detection files and our labels, both ways: `read_coco` reads a COCO JSON's images, boxes and
masks (RLE or polygons; crowd boxes are ignore regions), `coco_dict` and `write_coco` write samples as one."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgedistill.dataset import Dataset, Label, LabelSource, Sample
from edgedistill.errors import EdgedistillError, describe_validation_error
from edgedistill.formats.labelled import (LabelledImage, LabelledSet, checked_box, copy_images, image_file,
                                         labelled_image, load_json, write_json_array)
from edgedistill.masks import decode_rle, encode_rle

SOURCE = LabelSource(labeler="import:coco")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow")  # COCO files carry more than is read here


class _Image(_Entry):
    id: int | str
    file_name: str


class _Category(_Entry):
    id: int | str
    name: str


class _Rle(_Entry):
    size: tuple[int, int]
    counts: str | list[int]


class _Annotation(_Entry):
    image_id: int | str | None = None
    category_id: int | str | None = None
    segmentation: list[list[float]] | _Rle | None = None  # polygons, or RLE


class _Coco(_Entry):
    """The parts of a COCO file that are read, typed; a bbox is checked where it is read."""

    images: list[_Image]
    annotations: list[_Annotation]
    categories: list[_Category] = Field(default_factory=list)


def is_coco(data: object) -> bool:
    return isinstance(data, dict) and {"images", "annotations"} <= set(data)


def read_coco(path: Path) -> LabelledSet:
    data = load_json(path)
    if not is_coco(data):
        raise EdgedistillError(f"{path} is not a COCO file: it has no `images` and `annotations`",
                               "export the labels as COCO JSON, or import them with the importer of their format")
    return coco_set(path, data)


def coco_set(path: Path, data: dict) -> LabelledSet:
    """The images and labels of a parsed COCO file; file names are relative to it or its images/ folder."""
    try:
        data = _Coco.model_validate(data).model_dump()
    except ValidationError as error:
        raise EdgedistillError(f"{path} is not a COCO file that can be read:\n{describe_validation_error(error)}",
                               "export the labels again as COCO JSON") from None
    names = {c["id"]: c["name"] for c in data["categories"]}
    images: dict[Any, LabelledImage] = {}
    for image in data["images"]:
        images[image["id"]] = labelled_image(image_file(path.parent, image["file_name"]), f"{path} image {image['id']}")
    for annotation in data["annotations"]:
        where = f"{path} annotation {annotation.get('id')}"
        if annotation.get("image_id") not in images or annotation.get("category_id") not in names:
            raise EdgedistillError(f"{where} points to an image or category the file does not list",
                                   "export the labels again with their images and categories")
        image = images[annotation["image_id"]]
        try:
            x, y, w, h = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError):
            raise EdgedistillError(f"{where} has no bbox of four numbers [x, y, width, height]: "
                                   f"{annotation.get('bbox')}", "export the labels as COCO boxes (bbox)") from None
        label = Label(class_name=names[annotation["category_id"]], box=checked_box((x, y, x + w, y + h), image, where),
                      mask=_mask(annotation.get("segmentation"), image, where), source=SOURCE)
        (image.ignore if annotation.get("iscrowd") else image.labels).append(label)
    return LabelledSet(list(images.values()), [names[key] for key in sorted(names)])


def _mask(segmentation: Any, image: LabelledImage, where: str) -> dict[str, Any] | None:
    """A COCO segmentation (polygons, or RLE compressed or not) as our compressed RLE."""
    if not segmentation:
        return None
    from pycocotools import mask as coco_mask

    try:
        if isinstance(segmentation, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
            # one of fewer than 3 points outlines nothing (and pycocotools reads 2 points as a box)
            polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
            if not polygons:
                return None
            # pycocotools rasterises any numbers it is given, however far out (and crashes on some)
            limit = 2 * max(image.width, image.height)
            if not all(math.isfinite(value) and abs(value) <= limit for polygon in polygons for value in polygon):
                raise ValueError("a polygon has points far outside the image, or that are not numbers")
            rle = coco_mask.merge(coco_mask.frPyObjects(polygons, image.height, image.width))
        elif list(segmentation["size"]) == [image.height, image.width]:
            rle = segmentation
        else:
            raise ValueError(f"its size {segmentation['size']} is not the image's [{image.height}, {image.width}]")
        return encode_rle(decode_rle(rle))
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise EdgedistillError(f"{where} has a segmentation that is neither polygons nor RLE of its image ({error})",
                               "export the labels again, or remove the segmentation to keep the box only") from None


def coco_entries(samples: Iterable[Sample], classes: list[str]) -> Iterator[tuple[dict, list[dict]]]:
    """Each sample's COCO image and annotations: image ids 1.. in order, annotation ids 1.. across them all,
    category ids 1.. in the order of `classes`, and the boxes (and masks) of the labels of those classes; an
    image's file_name is its media file's name."""
    category = {name: i for i, name in enumerate(classes, start=1)}
    annotation_id = 0
    for image_id, sample in enumerate(samples, start=1):
        annotations = []
        for label in sample.labels:
            if label.box and label.class_name in category:
                annotation_id += 1
                annotations.append({"id": annotation_id, "image_id": image_id,
                                    "category_id": category[label.class_name], "bbox": list(label.box),
                                    "area": label.box[2] * label.box[3], "iscrowd": 0,
                                    **({"segmentation": label.mask} if label.mask else {})})
        yield ({"id": image_id, "file_name": Path(sample.media).name, "width": sample.shape.width,
                "height": sample.shape.height}, annotations)


def coco_categories(classes: list[str]) -> list[dict[str, Any]]:
    return [{"id": i, "name": name} for i, name in enumerate(classes, start=1)]


def coco_dict(samples: list[Sample], classes: list[str]) -> dict[str, Any]:
    """Samples as one COCO dict (see `coco_entries`)."""
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": coco_categories(classes)}
    for image, annotations in coco_entries(samples, classes):
        coco["images"].append(image)
        coco["annotations"] += annotations
    return coco


def write_coco(dataset: Dataset, samples: Iterable[Sample], classes: list[str], folder: Path) -> Path:
    """`annotations.json` (as `coco_dict`) and a copy of each image in `images/`, written as the samples come;
    returns the JSON's path."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / "annotations.json"
    with open(path, "w") as coco, tempfile.TemporaryFile("w+", dir=folder) as boxes:
        def images() -> Iterator[str]:  # the annotations wait in `boxes`, a line each, until the images are out
            for image, annotations in coco_entries(copy_images(dataset, samples, folder / "images"), classes):
                boxes.writelines(json.dumps(annotation) + "\n" for annotation in annotations)
                yield json.dumps(image)

        coco.write(f'{{"categories": {json.dumps(coco_categories(classes))},\n"images": ')
        write_json_array(coco, images())
        boxes.seek(0)
        coco.write(',\n"annotations": ')
        write_json_array(coco, (line.rstrip("\n") for line in boxes))
        coco.write("}\n")
    return path
