"""The image side of a detector: preprocessing in, heat-map decoding out, and the centroid metric.

Training, export and `edgedistill predict` all use `ImageFrontEnd` to turn a photo into the model's
input tensor and map results back, so a bundle's manifest (`ImageFrontEnd.spec()`) says exactly
what a device must do. Decoding and the F1 metric live here too because the trainer, the exporter
and `predict` all need them, and stages may only share code through the core.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np
from scipy import ndimage

from edgedistill.boxes import Detections
from edgedistill.images import Placement, place, placement

BACKGROUND = "_background_"  # output channel 0 of a FOMO heat map


@dataclass(frozen=True)
class ImageFrontEnd:
    """RGB uint8 photo -> (size, size, channels) float32: resize, optional gray, (pixel - mean) * scale.

    `letterbox` keeps the aspect ratio and pads with `pad_value` (centred); `stretch` ignores it.
    The layout is channels-last (NHWC), as the int8 model and the device take it.
    """

    size: int = 96
    channels: Literal[1, 3] = 3
    resize: Literal["letterbox", "stretch"] = "letterbox"
    mean: float = 0.0
    scale: float = 1.0 / 255.0
    pad_value: int = 0
    interpolation: Literal["area", "linear"] = "area"  # OpenCV's INTER_AREA: no aliasing when shrinking

    kind = "image"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError("channels must be 1 (grayscale) or 3 (RGB)")
        if self.resize not in ("letterbox", "stretch"):
            raise ValueError("resize must be 'letterbox' or 'stretch'")
        if self.size < 8:
            raise ValueError("size must be at least 8 pixels")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.channels)

    def spec(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_spec(cls, spec: dict) -> ImageFrontEnd:
        # a detection manifest keeps the heat-map decoding and metric radius beside the front end
        fields = {k: v for k, v in spec.items() if k not in ("kind", "heatmap", "centroid_distance")}
        if spec.get("kind", cls.kind) != cls.kind:
            raise ValueError(f"front end kind {spec.get('kind')!r} is not {cls.kind!r}")
        return cls(**fields)

    def placement(self, width: int, height: int) -> Placement:
        return placement(width, height, self.size, self.size, self.resize == "letterbox")

    def pixels(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """RGB uint8 (h, w, 3) -> uint8 (size, size, channels) before normalisation, and its placement."""
        if self.channels == 1:
            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[..., None]
        return place(image, self.size, self.size, self.resize == "letterbox", self.pad_value,
                     cv2.INTER_AREA if self.interpolation == "area" else cv2.INTER_LINEAR)

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        return ((pixels.astype(np.float32) - self.mean) * self.scale).astype(np.float32)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """RGB uint8 (h, w, 3) -> model input (size, size, channels) float32, and its placement."""
        pixels, placement = self.pixels(image)
        return self.normalise(pixels), placement


@dataclass(frozen=True)
class HeatmapDecoding:
    """How a FOMO heat map (grid_h, grid_w, 1 + classes) of probabilities becomes detections."""

    stride: int = 8  # input pixels per grid cell
    threshold: float = 0.5
    background_index: int = 0

    def spec(self) -> dict:
        return asdict(self)

    @classmethod
    def from_spec(cls, spec: dict) -> HeatmapDecoding:
        return cls(**spec)

    def decode(self, probabilities: np.ndarray, placement: Placement | None = None) -> Detections:
        """Per class, cells at or above the threshold; touching cells (8-neighbours) are one object. Its
        box is centred on the probability-weighted mean of the cell centres (the centroid, which is what
        FOMO finds) and as wide and high as the cells; its score is the highest cell's; its class id
        indexes the labels without background. Best first; in input pixels, or in the original image's
        pixels given its placement."""
        boxes, scores, class_ids = [], [], []
        classes = [c for c in range(probabilities.shape[-1]) if c != self.background_index]
        for index, channel in enumerate(classes):
            heat = probabilities[..., channel]
            regions, count = ndimage.label(heat >= self.threshold, structure=np.ones((3, 3)))
            for region in range(1, count + 1):
                rows, columns = np.nonzero(regions == region)
                weights = heat[rows, columns].astype(np.float64)
                x = ((columns + 0.5) * self.stride * weights).sum() / weights.sum()
                y = ((rows + 0.5) * self.stride * weights).sum() / weights.sum()
                half_width = (columns.max() - columns.min() + 1) * self.stride / 2
                half_height = (rows.max() - rows.min() + 1) * self.stride / 2
                boxes.append((x - half_width, y - half_height, x + half_width, y + half_height))
                scores.append(weights.max())
                class_ids.append(index)
        found = Detections(boxes, scores, class_ids)
        if placement is not None:
            found = found.with_boxes(placement.boxes_to_original(found.boxes))
        return found[np.argsort(-found.scores, kind="stable")]


def _match_count(truth: np.ndarray, predicted: np.ndarray, radius: float) -> int:
    """Largest one-to-one matching within `radius` (Hungarian on distances), so a prediction counts once."""
    if len(truth) == 0 or len(predicted) == 0:
        return 0
    from scipy.optimize import linear_sum_assignment

    distances = np.linalg.norm(truth[:, None, :] - predicted[None, :, :], axis=-1)
    cost = np.where(distances <= radius, distances, 1e9)
    rows, columns = linear_sum_assignment(cost)
    return int((distances[rows, columns] <= radius).sum())


def _f1(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}


def centroid_f1(truth: list[list[tuple[int, float, float]]], predicted: list[Detections],
                labels: list[str], radius: float) -> dict:
    """F1 of predicted centroids (the centres of the detections' boxes) against true object centres,
    per class and overall (micro).

    truth: per image, (class_index, x, y) of each object's box centre. A prediction is a true
    positive when matched one-to-one to a true centre of its class within `radius` pixels.
    """
    counts = np.zeros((len(labels), 3), np.int64)  # tp, fp, fn
    for true_objects, found in zip(truth, predicted, strict=True):
        for index in range(len(labels)):
            true_points = np.array([(x, y) for c, x, y in true_objects if c == index], np.float64).reshape(-1, 2)
            found_points = found.of_class(index).centres
            tp = _match_count(true_points, found_points, radius)
            counts[index] += (tp, len(found_points) - tp, len(true_points) - tp)
    overall = _f1(*(int(v) for v in counts.sum(axis=0)))
    return {**overall, "per_class": {label: _f1(*(int(v) for v in row)) for label, row in zip(labels, counts)},
            "radius_pixels": radius, "images": len(truth)}
