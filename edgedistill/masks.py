"""Masks as COCO RLE: the one form a Label carries, whoever made it (compositing, SAM, people)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """A boolean (h, w) mask -> COCO compressed RLE, its counts as text so it fits in JSON."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed as str or bytes, or uncompressed counts) -> boolean (h, w) mask."""
    height, width = rle["size"]
    counts = rle["counts"]
    runs = counts if isinstance(counts, list) else _runs(counts.encode() if isinstance(counts, str) else counts)
    # pycocotools writes each run without a bound: runs that do not tile the image would write past the mask
    if any(not isinstance(run, int) or run < 0 for run in runs) or sum(runs) != height * width:
        raise ValueError(f"its runs do not cover its {height} x {width} pixels exactly")
    if isinstance(counts, list):
        encoded = coco_mask.frPyObjects(rle, height, width)
    else:
        encoded = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools vs numpy 2's copy keyword
        return coco_mask.decode(encoded).astype(bool)


def _runs(compressed: bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString, which checks nothing)."""
    runs: list[int] = []
    position = 0
    while position < len(compressed):
        value, shift, more = 0, 0, True
        while more:
            if position == len(compressed):
                raise ValueError("its compressed counts end in the middle of a number")
            chunk = compressed[position] - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position, shift = position + 1, shift + 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return runs


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Bounding box (x, y, w, h) in pixels of the True pixels, as pycocotools' toBbox gives it."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)
