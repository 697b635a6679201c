"""What every reader of a label file returns: the images it names, each with its labels as our Labels,
checked against the image (the file exists and opens, every box lies in it); and what the writers share,
which write as the samples stream by, so that an export of any size holds one sample at a time."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from PIL import Image, UnidentifiedImageError

from edgedistill.dataset import Dataset, Label, Sample
from edgedistill.errors import EdgedistillError

BOX_TOLERANCE = 2.0  # pixels a box may reach past the border (annotators' rounding)


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    width: int  # of the upright image (EXIF rotation applied), which the boxes are in
    height: int
    labels: list[Label] = field(default_factory=list)  # boxes (x, y, w, h) in pixels, clipped to the image
    ignore: list[Label] = field(default_factory=list)  # crowd or invalid regions: neither object nor background


@dataclass(frozen=True)
class LabelledSet:
    images: list[LabelledImage]
    classes: list[str]  # as the file declares them, in its order; sorted when it only uses them


def load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EdgedistillError(f"{path} is not readable JSON: {error}", "export the labels again") from None


def image_file(root: Path, name: str) -> Path:
    """A file named in a label file: relative to it, or to its `images/` folder, or absolute."""
    for candidate in (root / name, root / "images" / name):
        if candidate.is_file():
            return candidate
    return root / name


def labelled_image(path: Path, where: str) -> LabelledImage:
    """An image with no labels yet, its upright size read from the header without decoding the pixels."""
    if not path.is_file():
        raise EdgedistillError(f"{where} names the photo {path}, which does not exist",
                               "fix the path (relative to the label file or its images/ folder) or remove the entry")
    try:
        with Image.open(path) as image:
            quarter_turn = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
            width, height = (image.height, image.width) if quarter_turn else (image.width, image.height)
    except Image.DecompressionBombError as error:
        raise EdgedistillError(f"{path} is too large to read: {error}", "downscale it, or remove its entries from "
                                                                        "the labels") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:  # a damaged header raises ValueError too
        raise EdgedistillError(f"{path} is not an image that can be read ({error.__class__.__name__})",
                               "replace it, or remove its entries from the labels") from None
    return LabelledImage(path, width, height)


def checked_box(corners: tuple[float, float, float, float], image: LabelledImage,
                where: str) -> tuple[float, float, float, float]:
    """Corners x0, y0, x1, y1 -> a Label's (x, y, w, h), cut to the image; an error for a box with no area
    or one outside the image by more than BOX_TOLERANCE."""
    x0, y0, x1, y1 = corners
    if not (x1 > x0 and y1 > y0):
        raise EdgedistillError(f"{where}: the box {list(corners)} has no area", "write corners as x0 < x1 and y0 < y1")
    width, height = image.width, image.height
    if x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE or x1 > width + BOX_TOLERANCE or y1 > height + BOX_TOLERANCE:
        raise EdgedistillError(f"{where}: the box {list(corners)} lies outside the {width}x{height} "
                               f"photo {image.path.name}", "check that boxes are in pixels of the upright photo")
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)
    return x0, y0, x1 - x0, y1 - y0


def copy_images(dataset: Dataset, samples: Iterable[Sample], folder: Path) -> Iterator[Sample]:
    """The samples as they come, each once its image is copied into `folder` under its media file's name."""
    for sample, media in dataset.with_media(samples):
        shutil.copyfile(media, folder / media.name)
        yield sample


def write_json_array(handle: TextIO, items: Iterable[str]) -> None:
    """Items already encoded as JSON, written as one JSON array, an item a line, as they come."""
    handle.write("[")
    for number, item in enumerate(items):
        handle.write(f"{',' if number else ''}\n{item}")
    handle.write("\n]")
