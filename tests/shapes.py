"""Synthetic detection data for tests: coloured shapes on noise with exact boxes."""

import cv2
import numpy as np

from edgedistill.boxes import Detections
from trainers.fomo import DetectionArrays


def centroids(*found: tuple[int, float, float]) -> Detections:
    """Detections centred on each (class id, x, y), as FOMO's heat-map decoding makes them."""
    return Detections([(x - 4, y - 4, x + 4, y + 4) for _, x, y in found], [0.9] * len(found),
                      [class_id for class_id, _, _ in found])


def synthetic_shapes(count: int, seed: int, width: int = 128, height: int = 96) -> DetectionArrays:
    """Red squares and blue circles on dark noise; boxes exact. Non-square images exercise the letterbox."""
    rng = np.random.default_rng(seed)
    images, boxes, classes = [], [], []
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
            image_boxes.append((x, y, side, side))
            image_classes.append(kind)
        images.append(image)
        boxes.append(np.array(image_boxes, np.float64))
        classes.append(np.array(image_classes, np.int64))
    return DetectionArrays(images, boxes, classes)
