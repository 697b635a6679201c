"""Copy-paste compositing: object cut-outs pasted onto backgrounds, with exact boxes and masks.

No model is involved, so this runs offline on its own. Each composite is planned up front from the
recipe's seed (background, cut-outs, blending, its own seed), so the same recipe gives the same
images however the work is sharded; shards run across processes and a rerun resumes
(edgedistill/shards.py). Labels come from the pasted alpha: an object's mask is the part of its
alpha that no later object covers, its box is that mask's bounding box, and an object hidden by
more than MAX_HIDDEN of its area is left out of the labels.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import cv2
import numpy as np

from edgedistill.boxes import iou_matrix
from edgedistill.dataset import Dataset, ImageShape, Label, LabelSource, Provenance, SPLITS, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.images import IMAGE_SUFFIXES, decode_image, decode_rgba, image_bytes, load_image
from edgedistill.recipe import CompositingSettings, DetectionRecipe
from edgedistill.masks import decode_rle, encode_rle, mask_box
from edgedistill.shards import ShardOutput, run_shards

logger = logging.getLogger(__name__)

Blending = Literal["none", "gaussian", "poisson"]
SHARD_SIZE = 32  # composites per shard
MAX_HIDDEN = 0.7  # an object with more of its area covered than this is dropped from the labels
MIN_VISIBLE_PIXELS = 16  # smaller visible remnants are not objects a detector can learn
MIN_CUTOUT_SIDE = 8  # cut-outs (e.g. from tiny SAM masks) smaller than this are skipped
MAX_BACKGROUND_SIDE = 1024  # backgrounds are cropped to a few hundred pixels; keep memory modest
MIN_BACKGROUND_SIDE = 64  # icons and thumbnails make poor scenes
ALPHA_OBJECT = 128  # alpha at or above this counts as the object (the label mask)
MASK_SUFFIX = ".mask"  # `cat.jpg` with `cat.mask.png` beside it: the mask gives the alpha
PLACEMENT_TRIES = 12


@dataclass(frozen=True)
class Cutout:
    """An object to paste: RGBA cropped to its alpha, the class it shows, a content id."""

    id: str
    class_name: str
    rgba: np.ndarray  # (h, w, 4) uint8
    name: str  # where it came from, for messages (a file, or sample id and label index)


@dataclass(frozen=True)
class Background:
    id: str
    rgb: np.ndarray  # (h, w, 3) uint8
    name: str


@dataclass(frozen=True)
class CompositeJob:
    """One composite. Everything else random is drawn from `seed` when it is made."""

    index: int
    seed: int
    background: str
    cutouts: tuple[str, ...]  # paste order: later ones cover earlier ones
    blending: Blending
    settings_key: str  # a change of settings must not reuse shards of the old ones


@dataclass(frozen=True)
class _ShardSettings:
    """What every shard shares. Cut-outs and backgrounds are stored as dataset media, so a worker
    anywhere reads them where it reads the dataset (jobs carry only their ids)."""

    dataset: str  # its location
    cutouts: dict[str, tuple[str, str]]  # id -> (class, media)
    backgrounds: dict[str, str]  # id -> media
    compositing: CompositingSettings


def content_id(array: np.ndarray) -> str:
    """A stable id for pixels: the same cut-out or background from anywhere gets the same id."""
    digest = hashlib.sha256(str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


# -- cut-outs -----------------------------------------------------------------------------------

def _crop_to_alpha(rgba: np.ndarray) -> np.ndarray | None:
    box = mask_box(rgba[:, :, 3] > 0)  # keep soft edges; the label mask is cut at ALPHA_OBJECT later
    if box is None or not np.any(rgba[:, :, 3] >= ALPHA_OBJECT):
        return None
    x, y, w, h = (int(v) for v in box)
    return np.ascontiguousarray(rgba[y:y + h, x:x + w])


def make_cutout(rgba: np.ndarray, class_name: str, name: str) -> Cutout | None:
    """A cut-out from RGBA pixels, cropped to its alpha; None when nothing usable is left."""
    cropped = _crop_to_alpha(rgba)
    if cropped is None or min(cropped.shape[:2]) < MIN_CUTOUT_SIDE:
        return None
    return Cutout(content_id(cropped), class_name, cropped, name)


def _mask_beside(path: Path) -> Path | None:
    found = [p for p in path.parent.glob(f"{path.stem}{MASK_SUFFIX}.*") if p.suffix.lower() in IMAGE_SUFFIXES]
    return found[0] if found else None


def _is_mask_file(path: Path) -> bool:
    return Path(path.stem).suffix == MASK_SUFFIX


def _read_cutout_file(path: Path, class_name: str) -> Cutout | None:
    rgba = decode_rgba(path.read_bytes(), name=str(path)).copy()
    mask_file = _mask_beside(path)
    if mask_file is not None:
        mask = decode_image(mask_file.read_bytes(), name=str(mask_file))[:, :, 0]
        if mask.shape != rgba.shape[:2]:
            raise EdgedistillError(f"mask {mask_file} is {mask.shape[1]}x{mask.shape[0]} but {path} is "
                                   f"{rgba.shape[1]}x{rgba.shape[0]}", "the mask must have the image's size")
        rgba[:, :, 3] = mask
    elif np.all(rgba[:, :, 3] == 255):
        raise EdgedistillError(
            f"cut-out {path} has no transparency, so its object cannot be told from its background",
            f"save it as a PNG with alpha, or put a mask beside it named {path.stem}{MASK_SUFFIX}.png "
            "(white = object)")
    return make_cutout(rgba, class_name, str(path))


def load_cutouts(folder: str | Path) -> list[Cutout]:
    """Cut-outs from `folder/<class>/*.png`: RGBA images, or any image with a `<stem>.mask.png`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgedistillError(f"cut-out folder {folder} does not exist", "check `compositing.cutouts` in the recipe")
    cutouts: list[Cutout] = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not _is_mask_file(p))
        for path in files:
            cutout = _read_cutout_file(path, class_dir.name)
            if cutout is None:
                logger.warning("cut-out %s has no opaque object of at least %d px; skipped", path, MIN_CUTOUT_SIDE)
            else:
                cutouts.append(cutout)
    if not cutouts:
        raise EdgedistillError(f"{folder} holds no cut-outs",
                               "put RGBA images in one sub-folder per class, e.g. cutouts/helmet/a.png")
    return _unique(cutouts)


def cutouts_from_labels(dataset: Dataset, samples: list[Sample]) -> list[Cutout]:
    """Cut-outs of every labelled object: its mask where it has one (Segment Anything), else an
    ellipse inscribed in its box (a teacher's faces), which fits round objects well enough."""
    cutouts: list[Cutout] = []
    for sample in samples:
        labelled = [(i, label) for i, label in enumerate(sample.labels) if label.mask is not None or label.box]
        if sample.kind != "image" or not labelled:
            continue
        rgb = decode_image(dataset.media_path(sample).read_bytes(), name=sample.media)
        for index, label in labelled:
            mask = decode_rle(label.mask) if label.mask is not None else _ellipse_in_box(label.box, rgb.shape[:2])
            if mask.shape != rgb.shape[:2]:
                logger.warning("sample %s label %d: mask size differs from the image; skipped", sample.id, index)
                continue
            rgba = np.dstack([rgb, mask.astype(np.uint8) * 255])
            cutout = make_cutout(rgba, label.class_name, f"{sample.id}#{index}")
            if cutout is not None:
                cutouts.append(cutout)
    return _unique(cutouts)


def _ellipse_in_box(box: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    x, y, w, h = box
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (round(x + w / 2), round(y + h / 2)), (max(1, round(w / 2)), max(1, round(h / 2))),
                0, 0, 360, 1, -1)
    return mask.astype(bool)


def _unique(items: list[Any]) -> list[Any]:
    seen: set[str] = set()
    return [item for item in items if not (item.id in seen or seen.add(item.id))]


_PALETTE = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (240, 200, 30), (200, 60, 200), (30, 200, 210),
            (250, 130, 20), (120, 70, 30), (240, 240, 240), (30, 30, 30)]


def _draw_shape(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A filled shape of one of several kinds on a transparent square, as a 0/255 alpha."""
    alpha = np.zeros((size, size), np.uint8)
    c, r = size // 2, size // 2 - 2
    if kind == 0:
        cv2.circle(alpha, (c, c), r, 255, -1)
    elif kind == 1:
        cv2.rectangle(alpha, (2, size // 4), (size - 3, size - size // 4), 255, -1)
    elif kind == 2:
        cv2.fillPoly(alpha, [np.array([[c, 2], [size - 3, size - 3], [2, size - 3]])], 255)
    elif kind == 3:  # a star
        angles = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        points = np.stack([c + radii * np.sin(angles), c - radii * np.cos(angles)], axis=1)
        cv2.fillPoly(alpha, [points.astype(np.int32)], 255)
    elif kind == 4:  # a ring
        cv2.circle(alpha, (c, c), r, 255, -1)
        cv2.circle(alpha, (c, c), r // 2, 0, -1)
    else:  # a cross
        cv2.rectangle(alpha, (c - r // 3, 2), (c + r // 3, size - 3), 255, -1)
        cv2.rectangle(alpha, (2, c - r // 3), (size - 3, c + r // 3), 255, -1)
    squash = rng.uniform(0.7, 1.0)  # vary the aspect a little so instances of a class differ
    return cv2.resize(alpha, (size, max(MIN_CUTOUT_SIDE, int(size * squash))), interpolation=cv2.INTER_NEAREST)


def synthetic_cutouts(classes: list[str], n: int, seed: int = 0, size: int = 96) -> list[Cutout]:
    """`n` procedurally drawn objects per class: each class its own shape and colour, so that the
    whole pipeline (and a detector) can run with no input at all."""
    rng = np.random.default_rng(seed)
    cutouts = []
    for class_index, class_name in enumerate(classes):
        base = np.array(_PALETTE[class_index % len(_PALETTE)], np.float64)
        for number in range(n):
            alpha = _draw_shape(class_index % 6, size, rng)
            colour = np.clip(base + rng.normal(0, 18, 3), 0, 255)
            shade = np.linspace(0.75, 1.15, alpha.shape[0])[:, None, None]  # a little shading, not flat
            rgb = np.clip(colour * shade * np.ones((*alpha.shape, 3)), 0, 255).astype(np.uint8)
            cutout = make_cutout(np.dstack([rgb, alpha]), class_name, f"synthetic:{class_name}:{number}")
            if cutout is not None:
                cutouts.append(cutout)
    return _unique(cutouts)


# -- backgrounds --------------------------------------------------------------------------------

def _fit_side(rgb: np.ndarray, longest: int) -> np.ndarray:
    scale = longest / max(rgb.shape[:2])
    if scale >= 1:
        return rgb
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def load_backgrounds(folder: str | Path) -> list[Background]:
    """Every readable image under `folder` (recursively); unreadable ones are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgedistillError(f"background folder {folder} does not exist",
                               "check `compositing.backgrounds` in the recipe, or leave it out for generated ones")
    backgrounds, unreadable = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            rgb = _fit_side(decode_image(path.read_bytes(), name=str(path)), MAX_BACKGROUND_SIDE)
        except EdgedistillError as error:
            unreadable.append(f"{path.relative_to(folder)}: {error.problem}")
            continue
        backgrounds.append(Background(content_id(rgb), rgb, str(path.relative_to(folder))))
    if unreadable:
        logger.warning("skipped %d unreadable backgrounds:\n  %s", len(unreadable), "\n  ".join(unreadable))
    if not backgrounds:
        raise EdgedistillError(f"{folder} holds no readable background image",
                               "add JPEG or PNG photos, or leave `compositing.backgrounds` out for generated ones")
    return _unique(backgrounds)


def backgrounds_from_photos(dataset: Dataset, samples: list[Sample], limit: int, seed: int = 0) -> list[Background]:
    """Up to `limit` of the photos in which nothing was labelled, as backgrounds: the team's own
    scenes without the objects, so the detector learns what their clutter looks like. Photos
    smaller than MIN_BACKGROUND_SIDE are passed over."""
    empty = sorted((s for s in samples if s.kind == "image" and not s.labels and s.shape
                    and min(s.shape.width, s.shape.height) >= MIN_BACKGROUND_SIDE), key=lambda s: s.id)
    chosen = np.random.default_rng(seed).permutation(len(empty))[:limit]
    backgrounds = []
    for index in sorted(chosen):
        rgb = _fit_side(load_image(dataset.media_path(empty[index])), MAX_BACKGROUND_SIDE)
        backgrounds.append(Background(content_id(rgb), rgb, f"photo:{empty[index].id}"))
    return _unique(backgrounds)


def _gradient(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    width, height = size
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width]
    t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
    t = (t - t.min()) / (np.ptp(t) or 1.0)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return start + t[:, :, None] * (end - start)


def _noise_texture(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Several octaves of smooth noise: looks like concrete, grass, fabric or clouds."""
    width, height = size
    texture = np.zeros((height, width, 3))
    for octave in range(1, 6):
        cells = 2 ** octave + 1
        coarse = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
        texture += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) / octave
    tint, spread = rng.uniform(40, 215, 3), rng.uniform(15, 60)
    return tint + texture / (np.abs(texture).max() or 1.0) * spread


def _random_shapes(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clutter: rectangles, circles and lines, so that a detector learns to ignore shapes too."""
    canvas = np.ascontiguousarray(canvas.astype(np.uint8))
    height, width = canvas.shape[:2]
    for _ in range(int(rng.integers(3, 12))):
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        extent = int(rng.integers(max(2, min(width, height) // 20), max(3, min(width, height) // 4)))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.rectangle(canvas, (x, y), (x + extent, y + int(extent * rng.uniform(0.3, 1.5))), colour, -1)
        elif kind == 1:
            cv2.circle(canvas, (x, y), extent // 2, colour, -1)
        else:
            end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(canvas, (x, y), end, colour, int(rng.integers(1, 6)))
    return canvas


def generated_backgrounds(n: int, size: tuple[int, int], seed: int = 0) -> list[Background]:
    """`n` procedural backgrounds of `size` (width, height): gradients, noise textures, shapes."""
    rng = np.random.default_rng(seed)
    backgrounds = []
    for index in range(n):
        kind = index % 3
        if kind == 0:
            image = _gradient(size, rng)
        elif kind == 1:
            image = _noise_texture(size, rng)
        else:
            image = _random_shapes(0.5 * _gradient(size, rng) + 0.5 * _noise_texture(size, rng), rng)
        rgb = np.clip(image, 0, 255).astype(np.uint8)
        backgrounds.append(Background(content_id(rgb), rgb, f"generated:{seed}:{index}"))
    return _unique(backgrounds)


# -- planning -----------------------------------------------------------------------------------

def _settings_key(settings: CompositingSettings) -> str:
    # which inputs are used is in each job; these fields change how each one looks
    fields = settings.model_dump(mode="json", exclude={"enabled", "cutouts", "backgrounds", "images", "blending"})
    return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:12]


def plan_composites(settings: CompositingSettings, cutouts: list[Cutout], backgrounds: list[Background],
                    seed: int) -> list[CompositeJob]:
    """Draw every composite's background, cut-outs (classes balanced) and blending from `seed`."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Cutout]] = {}
    for cutout in cutouts:
        by_class.setdefault(cutout.class_name, []).append(cutout)
    class_names = sorted(by_class)
    low, high = settings.objects_per_image
    key = _settings_key(settings)
    jobs = []
    for index in range(settings.images):
        count = int(rng.integers(low, high + 1))
        chosen = []
        for _ in range(count):
            pool = by_class[class_names[int(rng.integers(len(class_names)))]]
            chosen.append(pool[int(rng.integers(len(pool)))].id)
        background = backgrounds[int(rng.integers(len(backgrounds)))].id
        blending = settings.blending[int(rng.integers(len(settings.blending)))]
        jobs.append(CompositeJob(index, int(rng.integers(2**31)), background, tuple(chosen), blending, key))
    return jobs


# -- making one composite -----------------------------------------------------------------------

def _crop_background(rgb: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of 60-100% of the largest window of the output's aspect, resized, maybe flipped."""
    width, height = size
    fit = min(rgb.shape[1] / width, rgb.shape[0] / height)
    scale = fit * rng.uniform(0.6, 1.0)
    crop_w, crop_h = max(1, int(width * scale)), max(1, int(height * scale))
    x = int(rng.integers(0, rgb.shape[1] - crop_w + 1))
    y = int(rng.integers(0, rgb.shape[0] - crop_h + 1))
    crop = cv2.resize(rgb[y:y + crop_h, x:x + crop_w], (width, height), interpolation=cv2.INTER_AREA)
    return crop[:, ::-1].copy() if rng.random() < 0.5 else crop


def _jitter_colour(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and a small hue shift."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[:, :, 0] = (hsv[:, :, 0] + rng.uniform(-6, 6)) % 180  # OpenCV hue runs 0..180
    hsv[:, :, 1] *= rng.uniform(0.7, 1.3)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.75, 1.25)
    return np.clip(out, 0, 255).astype(np.uint8)


def _transform_cutout(rgba: np.ndarray, longest: float, settings: CompositingSettings,
                      rng: np.random.Generator) -> np.ndarray:
    """Flip, jitter, scale to `longest` px and rotate, in premultiplied alpha (no dark fringes)."""
    if rng.random() < 0.5:
        rgba = rgba[:, ::-1]
    if rng.random() < 0.1:
        rgba = rgba[::-1]
    rgb = _jitter_colour(np.ascontiguousarray(rgba[:, :, :3]), rng).astype(np.float32)
    alpha = rgba[:, :, 3].astype(np.float32) / 255
    premultiplied = np.dstack([rgb * alpha[:, :, None], alpha * 255])
    height, width = alpha.shape
    scale = longest / max(height, width)
    angle = rng.uniform(-settings.max_rotation, settings.max_rotation)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64) @ matrix.T
    low, high = corners.min(axis=0), corners.max(axis=0)
    matrix[:, 2] -= low
    out_size = (max(1, int(np.ceil(high[0] - low[0]))), max(1, int(np.ceil(high[1] - low[1]))))
    warped = cv2.warpAffine(premultiplied, matrix, out_size, flags=cv2.INTER_LINEAR, borderValue=0)
    out_alpha = np.clip(warped[:, :, 3], 0, 255)
    out_rgb = warped[:, :, :3] / np.maximum(out_alpha[:, :, None] / 255, 1e-6)
    return np.dstack([np.clip(out_rgb, 0, 255), out_alpha]).astype(np.uint8)


def _place(size: tuple[int, int], object_size: tuple[int, int], placed: list[tuple[int, int, int, int]],
           occlude: bool, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner: overlapping an earlier object (`placed`: their x0, y0, x1, y1) when `occlude`,
    else the least crowded try (by intersection over the smaller box)."""
    width, height = size
    w, h = object_size
    free_x, free_y = max(0, width - w), max(0, height - h)
    if occlude and placed:
        x0, y0, x1, y1 = placed[int(rng.integers(len(placed)))]
        cx = x0 + (x1 - x0) * rng.uniform(0.1, 0.9)
        cy = y0 + (y1 - y0) * rng.uniform(0.1, 0.9)
        return int(np.clip(cx - w / 2, 0, free_x)), int(np.clip(cy - h / 2, 0, free_y))
    best, best_overlap = (0, 0), np.inf
    for _ in range(PLACEMENT_TRIES):
        corner = (int(rng.integers(0, free_x + 1)), int(rng.integers(0, free_y + 1)))
        overlap = iou_matrix([(*corner, corner[0] + w, corner[1] + h)], placed, over="smaller").max(initial=0.0)
        if overlap < best_overlap:
            best, best_overlap = corner, overlap
        if overlap == 0:
            break
    return best


def _paste_alpha(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[:, :, None] / 255
    return (rgb.astype(np.float32) * a + canvas.astype(np.float32) * (1 - a)).round().astype(np.uint8)


def _feathered(alpha: np.ndarray, longest: float) -> np.ndarray:
    """Blur the alpha edge; the width grows with the object so large objects get soft edges too."""
    sigma = max(0.6, longest / 120)
    return cv2.GaussianBlur(alpha, (0, 0), sigmaX=sigma)


def _poisson(canvas: np.ndarray, layer_rgb: np.ndarray, object_mask: np.ndarray) -> np.ndarray:
    """Poisson (seamless) cloning in a window around the object; padded so edge objects clone too."""
    pad = 4
    region = cv2.dilate(object_mask.astype(np.uint8) * 255, np.ones((5, 5), np.uint8))
    x, y, w, h = cv2.boundingRect(region)
    # in padded coordinates the region starts at (x + pad, y + pad): the window keeps `pad` around it
    window = (slice(y, y + h + 2 * pad), slice(x, x + w + 2 * pad))
    src = cv2.copyMakeBorder(layer_rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT)[window]
    dst = cv2.copyMakeBorder(canvas, pad, pad, pad, pad, cv2.BORDER_REFLECT)[window]
    mask = cv2.copyMakeBorder(region, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)[window]
    # seamlessClone puts the mask's bounding box at center - size // 2: this center keeps it in place
    patch = cv2.seamlessClone(np.ascontiguousarray(src), np.ascontiguousarray(dst), np.ascontiguousarray(mask),
                              (pad + w // 2, pad + h // 2), cv2.NORMAL_CLONE)
    cloned = canvas.copy()
    cloned[y:y + h, x:x + w] = patch[pad:pad + h, pad:pad + w]
    # Cloning alone gives a flat-coloured object the background's colour (it keeps only gradients),
    # which would leave labels on invisible objects: keep the object's own pixels inside and use
    # the cloned ones in a band along its edge, where the seam was.
    band = max(2, int(np.sqrt(object_mask.sum()) / 20))
    inside = cv2.erode(object_mask.astype(np.uint8), np.ones((2 * band + 1, 2 * band + 1), np.uint8))
    weight = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), sigmaX=band / 2)[:, :, None]
    return (layer_rgb * weight + cloned * (1 - weight)).round().astype(np.uint8)


@dataclass
class Layer:
    class_name: str
    cutout_id: str
    mask: np.ndarray  # the object's full mask on the canvas, before anything covers it


def _paste(canvas: np.ndarray, rgba: np.ndarray, corner: tuple[int, int],
           blending: Blending) -> tuple[np.ndarray, np.ndarray]:
    """Paste one transformed cut-out at `corner`; return the new canvas and the object's mask."""
    height, width = canvas.shape[:2]
    x, y = corner
    rgba = rgba[:height - y, :width - x]  # an object larger than the free room is cut at the edge
    h, w = rgba.shape[:2]
    alpha = np.zeros((height, width), np.uint8)
    alpha[y:y + h, x:x + w] = rgba[:, :, 3]
    layer_rgb = canvas.copy()
    layer_rgb[y:y + h, x:x + w] = rgba[:, :, :3]
    mask = alpha >= ALPHA_OBJECT
    if blending == "gaussian":
        return _paste_alpha(canvas, layer_rgb, _feathered(alpha, max(h, w))), mask
    pasted = _paste_alpha(canvas, layer_rgb, alpha)
    if blending == "poisson" and mask.any():
        return _poisson(canvas, pasted, mask), mask
    return pasted, mask


def visible_labels(layers: list[Layer]) -> tuple[list[Label], list[str]]:
    """Labels from what stays visible; ids of the objects dropped as hidden."""
    labels, hidden = [], []
    covered = np.zeros_like(layers[0].mask) if layers else None
    for layer in reversed(layers):  # the last pasted is on top
        visible = layer.mask & ~covered
        covered |= layer.mask
        area = int(layer.mask.sum())
        if area == 0:
            continue
        if visible.sum() < MIN_VISIBLE_PIXELS or 1 - visible.sum() / area > MAX_HIDDEN:
            hidden.append(layer.cutout_id)
            continue
        labels.append(Label(class_name=layer.class_name, box=mask_box(visible), mask=encode_rle(visible), score=1.0,
                            source=LabelSource(labeler="compositing")))
    return labels[::-1], hidden[::-1]


def compose(job: CompositeJob, background: np.ndarray, cutouts: dict[str, Cutout],
            settings: CompositingSettings) -> tuple[np.ndarray, list[Label], list[str]]:
    """Make one composite: (RGB image, labels in paste order, ids of cut-outs hidden too much)."""
    rng = np.random.default_rng(job.seed)
    size = settings.image_size
    canvas = _crop_background(background, size, rng)
    shorter = min(size)
    low, high = settings.distractors_per_image
    for _ in range(int(rng.integers(low, high + 1)) if job.cutouts else 0):
        # a cut-out's shape filled with another part of the scene, pasted the same way but not
        # labelled: the detector must learn the object, not the seams that pasting leaves
        shape = cutouts[job.cutouts[int(rng.integers(len(job.cutouts)))]].rgba[:, :, 3]
        fill = _crop_background(background, (shape.shape[1], shape.shape[0]), rng)
        rgba = _transform_cutout(np.dstack([fill, shape]), shorter * rng.uniform(*settings.scale), settings, rng)
        canvas, _ = _paste(canvas, rgba, _place(size, (rgba.shape[1], rgba.shape[0]), [], False, rng), job.blending)
    layers: list[Layer] = []
    placed: list[tuple[int, int, int, int]] = []
    for cutout_id in job.cutouts:
        cutout = cutouts[cutout_id]
        longest = shorter * rng.uniform(*settings.scale)
        rgba = _transform_cutout(cutout.rgba, longest, settings, rng)
        occlude = rng.random() < settings.occlusion_probability
        corner = _place(size, (rgba.shape[1], rgba.shape[0]), placed, occlude, rng)
        canvas, mask = _paste(canvas, rgba, corner, job.blending)
        placed.append((*corner, corner[0] + rgba.shape[1], corner[1] + rgba.shape[0]))
        layers.append(Layer(cutout.class_name, cutout.id, mask))
    labels, hidden = visible_labels(layers)
    return canvas, labels, hidden


# -- shards -------------------------------------------------------------------------------------

def _store_input(dataset: Dataset, pixels: np.ndarray) -> str:
    """An RGB or RGBA array as PNG media of the dataset; returns its media path."""
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    return dataset.add_media(cv2.imencode(".png", bgr)[1].tobytes(), "png")[1]


def _read_input(path: Path) -> np.ndarray:
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def _sample(dataset: Dataset, job: CompositeJob, image: np.ndarray, labels: list[Label],
            hidden: list[str]) -> Sample:
    digest, relative = dataset.add_media(image_bytes(image, "PNG"), "png")
    params = {"cutouts": list(job.cutouts), "background": job.background, "blending": job.blending,
              "hidden": hidden, "index": job.index}
    return Sample(id=digest[:16], media=relative, kind="image",
                  shape=ImageShape(width=image.shape[1], height=image.shape[0]),
                  provenance=Provenance(source="compositing", params=params, seed=job.seed,
                                        group=f"bg:{job.background}"),
                  labels=labels)


def composite_shard(settings: _ShardSettings, jobs: list[CompositeJob]) -> ShardOutput:
    """Make a shard of composites (runs in a worker process)."""
    cv2.setNumThreads(1)  # the processes already use every core
    dataset = Dataset.open(settings.dataset)
    cutouts = {}
    for cid in sorted({c for job in jobs for c in job.cutouts}):
        class_name, media = settings.cutouts[cid]
        cutouts[cid] = Cutout(cid, class_name, _read_input(dataset.media_file(media)), cid)
    backgrounds = {bid: _read_input(dataset.media_file(settings.backgrounds[bid]))
                   for bid in sorted({job.background for job in jobs})}
    output = ShardOutput()
    with dataset.parallel_media_writes():
        for job in jobs:
            image, labels, hidden = compose(job, backgrounds[job.background], cutouts, settings.compositing)
            output.samples.append(_sample(dataset, job, image, labels, hidden))
    return output


def _check_inputs(recipe: DetectionRecipe, cutouts: list[Cutout], backgrounds: list[Background]) -> None:
    if not cutouts:
        raise EdgedistillError("compositing has no cut-outs to paste",
                               "set `compositing.cutouts` to a folder of RGBA images, or use synthetic_cutouts")
    if not backgrounds:
        raise EdgedistillError("compositing has no backgrounds",
                               "set `compositing.backgrounds`, or leave it out for generated ones")
    if not recipe.compositing.blending:
        raise EdgedistillError("`compositing.blending` is empty", "list at least one of none, gaussian, poisson")
    unknown = sorted({c.class_name for c in cutouts} - set(recipe.classes))
    if unknown:
        raise EdgedistillError(f"cut-outs are in folders named {unknown}, which are not classes of the recipe",
                               f"name each sub-folder after a class: {', '.join(recipe.classes)}")
    missing = [name for name in recipe.classes if name not in {c.class_name for c in cutouts}]
    if missing:
        logger.warning("no cut-outs for classes %s: composites will not show them", missing)


def composite_images(dataset: Dataset, recipe: DetectionRecipe, cutouts: list[Cutout],
                     backgrounds: list[Background], work_dir: Path,
                     progress: Callable[[int, int], None] | None = None,
                     workers: int | None = None) -> list[Sample]:
    """Make `recipe.compositing.images` labelled composites into `dataset` (the caller commits).

    Finished shards are kept in `work_dir`, so a rerun after a crash makes only the missing ones.
    `workers` processes (default: one per core) share the shards.
    """
    _check_inputs(recipe, cutouts, backgrounds)
    jobs = plan_composites(recipe.compositing, cutouts, backgrounds, recipe.seed)
    with dataset.parallel_media_writes():
        settings = _ShardSettings(dataset.location,
                                  {c.id: (c.class_name, _store_input(dataset, c.rgba)) for c in cutouts},
                                  {b.id: _store_input(dataset, b.rgb) for b in backgrounds}, recipe.compositing)
    run = run_shards(jobs, functools.partial(composite_shard, settings), Path(work_dir) / "shards", SHARD_SIZE,
                     workers or os.cpu_count() or 1, progress)
    return _unique([s for output in run.outputs for s in output.samples])


SYNTHETIC_CUTOUTS_PER_CLASS = 12
GENERATED_BACKGROUNDS = 48


PHOTO_BACKGROUNDS = 200  # per split: enough scenes for variety, few enough to hold in memory


def composites_by_split(dataset: Dataset, recipe: DetectionRecipe, samples: list[Sample], work_dir: Path,
                        progress: Callable[[int, int], None] | None = None) -> list[Sample]:
    """Composites for the labelled sources, made per split from that split's own inputs, in the
    recipe's split shares.

    Cut-outs come from the recipe's folder, else from the labelled photos of the same split
    (their masks, or an ellipse in their boxes), else they are drawn. Backgrounds come from the
    recipe's folder, else from the split's photos in which nothing was labelled, mixed with
    generated ones. Folder and generated inputs are given splits by their content id, so an
    object or a background never appears in two splits.
    """
    from edgedistill.splits import assign_splits

    settings, train = recipe.compositing, recipe.train
    if not settings.enabled or settings.images == 0:
        return []

    def by_content_split(items: list) -> dict[str, list]:
        pool = assign_splits((item.id for item in items), train.val_share, train.test_share, recipe.seed)
        return {split: [item for item in items if pool[item.id] == split] for split in SPLITS}

    by_split = {split: [s for s in samples if s.split == split and s.review.status != "rejected"] for split in SPLITS}
    if settings.cutouts:
        cutouts_of = by_content_split(load_cutouts(settings.cutouts))
    else:
        cutouts_of = {split: cutouts_from_labels(dataset, by_split[split]) for split in SPLITS}
        if not any(cutouts_of.values()):  # nothing labelled to cut out: draw objects
            cutouts_of = by_content_split(synthetic_cutouts(recipe.class_names, SYNTHETIC_CUTOUTS_PER_CLASS,
                                                            recipe.seed))
    if settings.backgrounds:
        folder = load_backgrounds(settings.backgrounds)
        backgrounds_of = {split: chosen or folder for split, chosen in by_content_split(folder).items()}
    else:
        backgrounds_of = by_content_split(generated_backgrounds(GENERATED_BACKGROUNDS, settings.image_size,
                                                                recipe.seed))
    shares = {"train": 1 - train.val_share - train.test_share, "val": train.val_share, "test": train.test_share}
    composites: list[Sample] = []
    for split in SPLITS:
        count = round(settings.images * shares[split])
        if not cutouts_of[split] or count == 0:
            continue  # e.g. no labelled photo in this split to cut from
        backgrounds = backgrounds_of[split]
        if not settings.backgrounds:  # decoded per split, so only one split's photos are in memory
            backgrounds = backgrounds_from_photos(dataset, by_split[split], PHOTO_BACKGROUNDS, recipe.seed) + backgrounds
        per_split = recipe.model_copy(update={"compositing": settings.model_copy(update={"images": count}),
                                              "seed": recipe.seed + SPLITS.index(split)})
        made = composite_images(dataset, per_split, cutouts_of[split], backgrounds, Path(work_dir) / split, progress)
        composites += [s.model_copy(update={"split": split}) for s in made]
    return composites
