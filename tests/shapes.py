"""Synthetic detection data for tests: coloured shapes on noise with exact boxes."""

import cv2
import numpy as np

from edgedistill.boxes import Detections, xyxy_to_xywh
from edgedistill.dataset import Label, LabelSource
from trainers.fomo import DetectionArrays


def shape_labels(objects: Detections, labels: list[str], source: LabelSource) -> list[Label]:
    """The objects of one image as dataset labels (boxes x, y, w, h), as people would have drawn them."""
    return [Label(class_name=labels[c], box=tuple(float(v) for v in box), source=source)
            for box, c in zip(xyxy_to_xywh(objects.boxes), objects.class_ids)]


def centroids(*found: tuple[int, float, float]) -> Detections:
    """Detections centred on each (class id, x, y), as FOMO's heat-map decoding makes them."""
    return Detections([(x - 4, y - 4, x + 4, y + 4) for _, x, y in found], [0.9] * len(found),
                      [class_id for class_id, _, _ in found])


def synthetic_shapes(count: int, seed: int, width: int = 128, height: int = 96) -> DetectionArrays:
    """Red squares and blue circles on dark noise; boxes exact. Non-square images exercise the letterbox."""
    rng = np.random.default_rng(seed)
    images, objects = [], []
    for _ in range(count):
        image = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
        image_boxes, image_classes = [], []
        for _ in range(int(rng.integers(1, 4))):
            kind, side = int(rng.integers(0, 2)), int(rng.integers(12, 22))
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            if kind == 0:
                cv2.rectangle(image, (x, y), (x + side - 1, y + side - 1), (230, 40, 40), -1)
            else:
                cv2.circle(image, (x + side // 2, y + side // 2), side // 2, (40, 80, 230), -1)
            image_boxes.append((x, y, x + side, y + side))
            image_classes.append(kind)
        images.append(image)
        objects.append(Detections(image_boxes, np.ones(len(image_boxes)), image_classes))
    return DetectionArrays(images, objects)
