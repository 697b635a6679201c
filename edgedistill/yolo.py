"""A YOLO detector run and scored here, whichever file holds it (ONNX, or the int8 TFLite).

Shared by the trainer (trainers/yolo.py scores the float ONNX) and the exporter
(exporters/yolo_int8.py scores the int8 model): ultralytics' letterbox, the (4 + classes, anchors)
output decoded with per-class NMS, and COCO mAP50 / mAP50-95 with faster-coco-eval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edgedistill.boxes import Detections, clip_boxes, non_max_suppression, xyxy_to_xywh
from edgedistill.dataset import Dataset, Sample
from edgedistill.formats.coco import coco_dict
from edgedistill.images import Placement, load_image, place
from edgedistill.runtimes import OnnxModel

PAD_VALUE = 114  # ultralytics' letterbox grey


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Placement]:
    """RGB uint8 -> (1, 3, size, size) float 0-1, scaled to fit and padded grey in the middle, as
    ultralytics feeds its models; also where the image sits, to map boxes back."""
    canvas, placement = place(image[..., :3], size, size, pad_value=PAD_VALUE, interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0, placement


def decode(output: np.ndarray, placement: Placement, width: int, height: int, min_score: float = 0.001,
           iou: float = 0.7, max_boxes: int = 300) -> Detections:
    """One (4 + classes, anchors) ONNX output -> detections in image pixels, per-class NMS applied."""
    scores_all = output[4:].T
    classes, scores = scores_all.argmax(1), scores_all.max(1)
    keep = scores > min_score
    cx, cy, w, h = output[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    boxes = placement.boxes_to_original(boxes)
    kept = non_max_suppression(boxes, scores[keep], iou, groups=classes[keep])[:max_boxes]
    return Detections(clip_boxes(boxes[kept], width, height), scores[keep][kept], classes[keep][kept])


# a YOLO model as run here: letterboxed input (1, 3, size, size) -> output (4 + classes, anchors)
Runner = Callable[[np.ndarray], np.ndarray]


def onnx_runner(onnx: Path) -> Runner:
    model = OnnxModel(onnx)
    return lambda inputs: model.run(inputs)[0][0]


def detect_all(run: Runner, dataset: Dataset, samples: list[Sample], size: int) -> list[Detections]:
    found = []
    for path in dataset.media_paths(samples):
        image = load_image(path)
        inputs, placement = letterbox(image, size)
        found.append(decode(run(inputs), placement, image.shape[1], image.shape[0]))
    return found


def coco_map(dataset: Dataset, samples: list[Sample], labels: list[str], found: list[Detections]) -> dict:
    """COCO mAP50 and mAP50-95 (faster-coco-eval) of each sample's detections (class ids index `labels`)
    against its boxes."""
    from faster_coco_eval import COCO, COCOeval_faster

    truth = coco_dict(samples, labels)
    detections = [{"image_id": image_id, "category_id": int(c) + 1, "score": float(s), "bbox": b.tolist()}
                  for image_id, image in enumerate(found, start=1)
                  for c, s, b in zip(image.class_ids, image.scores, xyxy_to_xywh(image.boxes))]
    counts = {"images": len(samples), "boxes": len(truth["annotations"])}
    if not truth["annotations"] or not detections:  # nothing to find, or nothing found
        return {"map50_95": 0.0, "map50": 0.0, **counts} if truth["annotations"] else {"map50_95": None,
                                                                                      "map50": None, **counts}
    ground_truth = COCO(truth)
    evaluation = COCOeval_faster(ground_truth, ground_truth.loadRes(detections), iouType="bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return {"map50_95": float(evaluation.stats[0]), "map50": float(evaluation.stats[1]), **counts}
