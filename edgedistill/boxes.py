"""What a detector found in one image (`Detections`), and the box helpers: IoU, NMS, conversions.

Every detector here (OWL, a teacher, YOLO, FOMO's heat-map decoding) hands back `Detections`, as
supervision's detectors do.
Boxes are float arrays of shape (n, 4) in (x0, y0, x1, y1) pixel corners unless a name says
otherwise; a Label stores (x, y, width, height), so `xyxy_to_xywh` is the last step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

if TYPE_CHECKING:
    from edgedistill.dataset import Label


@dataclass
class Detections:
    """Boxes found in one image, with their scores and the detector's class ids (OWL's are its prompts)."""

    boxes: np.ndarray  # (n, 4) x0, y0, x1, y1
    scores: np.ndarray  # (n,)
    class_ids: np.ndarray  # (n,) int

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, which: np.ndarray | slice) -> Detections:
        return Detections(self.boxes[which], self.scores[which], self.class_ids[which])

    @classmethod
    def from_labels(cls, labels: Iterable[Label], class_names: list[str]) -> Detections:
        """A sample's boxed labels of these classes, where dataset labels become detections: class ids
        index `class_names`; a label without a score (people's) scores 1; one the verifier rejected is
        left out until people decide."""
        index = {name: i for i, name in enumerate(class_names)}
        kept = [label for label in labels if label.class_name in index and label.box is not None
                and not (label.verdict and label.verdict.outcome == "rejected")]
        return cls(xywh_to_xyxy([label.box for label in kept]), [1.0 if label.score is None else label.score
                                                                for label in kept],
                   [index[label.class_name] for label in kept])

    @classmethod
    def merge(cls, parts: list[Detections]) -> Detections:
        return cls(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.class_ids for p in parts]))

    def with_boxes(self, boxes: np.ndarray) -> Detections:
        return Detections(boxes, self.scores, self.class_ids)

    @property
    def centres(self) -> np.ndarray:
        """(n, 2) x, y of each box's centre (a FOMO detection's centroid)."""
        return (self.boxes[:, :2] + self.boxes[:, 2:]) / 2

    def of_class(self, class_id: int) -> Detections:
        return self[self.class_ids == class_id]


def iou_matrix(first: np.ndarray, second: np.ndarray, over: Literal["union", "smaller"] = "union") -> np.ndarray:
    """Intersection over union of every box in `first` (n, 4) with every box in `second` (m, 4); or,
    `over="smaller"`, over the smaller box's area (how much of one box the other covers)."""
    first = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    first_areas, second_areas = box_areas(first)[:, None], box_areas(second)[None, :]
    if over == "union":
        denominator = first_areas + second_areas - intersection
    else:
        denominator = np.minimum(first_areas, second_areas)
    return np.divide(intersection, denominator, out=np.zeros_like(intersection), where=denominator > 0)


def label_iou(a: tuple[float, float, float, float] | None, b: tuple[float, float, float, float] | None) -> float:
    """IoU of two labels' (x, y, width, height) boxes; two labels without a box are the same region."""
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    return float(iou_matrix(xywh_to_xyxy(a), xywh_to_xyxy(b))[0, 0])


def box_areas(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                        groups: np.ndarray | None = None) -> np.ndarray:
    """Indices of the boxes kept, best score first; a box is dropped when it overlaps a better one
    of the same group (class-aware) by IoU > iou_threshold. `groups=None`: one group (class-agnostic).

    OpenCV's NMS is used because torchvision, its usual home, is not installable alongside our torch.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = xyxy_to_xywh(boxes).tolist()
    # OpenCV drops scores at or below its threshold (which must be >= 0): shift every score above
    # it, keeping their order, because thresholds were applied before NMS
    ranks = (scores - scores.min() + 1.0).tolist()
    if groups is None:
        kept = cv2.dnn.NMSBoxes(xywh, ranks, 0.0, float(iou_threshold))
    else:
        kept = cv2.dnn.NMSBoxesBatched(xywh, ranks, np.asarray(groups).astype(int).tolist(), 0.0,
                                       float(iou_threshold))
    kept = np.asarray(kept, dtype=np.int64).reshape(-1)
    return kept[np.argsort(-scores[kept], kind="stable")]


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes cut to the image; a model may predict past the border (OWLv2 sees a padded square)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes
