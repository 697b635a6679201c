"""YOLO for NPUs and Linux boards: ultralytics trains it in its own environment, we score its ONNX.

ultralytics is AGPL-3.0 and needs torchvision, which exists only for another torch than the one
the project pins, so it never enters the project's environment. This module writes a dataset
version as a YOLO folder, runs trainers/yolo_worker.py in the torchvision environment
(edgedistill/extras.py), and scores the exported ONNX model here, with onnxruntime and
faster-coco-eval (COCO mAP50 and mAP50-95) on the held-out split. The model is trained from a
model YAML, never from downloaded weights, so nothing it learned comes from a licence we chose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import yaml

from edgedistill.boxes import clip_boxes, non_max_suppression, xyxy_to_xywh
from edgedistill.dataset import Dataset, Sample, write_atomic
from edgedistill.errors import EdgedistillError
from edgedistill.extras import run_worker
from edgedistill.images import load_image
from edgedistill.recipe import DetectorTrainSettings

WORKER = Path(__file__).with_name("yolo_worker.py")
SPLITS = ("train", "val", "test")
PAD_VALUE = 114  # ultralytics' letterbox grey


@dataclass
class YoloModel:
    onnx: Path
    program: Path  # the same model as a torch.export program, for int8 export (exporters/yolo_int8.py)
    metrics: dict  # held-out COCO mAP of the ONNX model, and ultralytics' own figures


def write_yolo_folder(dataset: Dataset, samples: list[Sample], labels: list[str], folder: Path) -> Path:
    """images/<split>/ (links to the media) and labels/<split>/ (class cx cy w h, 0-1); returns data.yaml."""
    index = {label: i for i, label in enumerate(labels)}
    for split in SPLITS:
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
    for sample in samples:
        if sample.split not in SPLITS:
            continue
        media = dataset.media_path(sample).resolve()
        image = folder / "images" / sample.split / f"{sample.id}{media.suffix}"
        if not image.is_symlink():
            image.symlink_to(media)
        width, height = sample.shape.width, sample.shape.height
        lines = [f"{index[label.class_name]} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} "
                 f"{w / width:.6f} {h / height:.6f}"
                 for label in sample.labels if label.box and label.class_name in index
                 for x, y, w, h in [label.box]]
        (folder / "labels" / sample.split / f"{sample.id}.txt").write_text("\n".join(lines))
    data = folder / "data.yaml"
    write_atomic(data, yaml.safe_dump({"path": str(folder.resolve()), **{s: f"images/{s}" for s in SPLITS},
                                       "names": dict(enumerate(labels))}).encode())
    return data


def train_yolo(dataset: Dataset, samples: list[Sample], labels: list[str], settings: DetectorTrainSettings,
               out_dir: Path) -> YoloModel:
    """Train from `settings.yolo_model` with ultralytics; `out_dir` keeps its work, so a rerun resumes or skips."""
    held_out = [s for s in samples if s.split == "test"]
    if not held_out or not any(s.split == "train" for s in samples):
        raise EdgedistillError("YOLO training needs images in the train and test splits",
                               "add photos or composites, or raise train.test_share")
    out_dir.mkdir(parents=True, exist_ok=True)
    result_file = out_dir / "result.json"
    if not result_file.exists():
        job = {"data": str(write_yolo_folder(dataset, samples, labels, out_dir / "data")),
               "model": settings.yolo_model, "epochs": settings.yolo_epochs, "image_size": settings.yolo_image_size,
               "batch_size": settings.batch_size, "seed": settings.seed, "out_dir": str(out_dir.resolve())}
        run_worker(WORKER, job, out_dir / "job.json", "YOLO training",
                   f"check train.yolo_model ({settings.yolo_model}: an ultralytics model YAML such as yolo11n.yaml) "
                   "and the log above; a rerun resumes")
    result = json.loads(result_file.read_text())
    onnx = Path(result["onnx"])
    found = detect_all(onnx_runner(onnx), dataset, held_out, settings.yolo_image_size)
    metrics = coco_map(dataset, held_out, labels, found)
    metrics |= {"model": settings.yolo_model, "image_size": settings.yolo_image_size, "epochs": settings.yolo_epochs,
                "ultralytics": {"map50": result["ultralytics_map50"], "map50_95": result["ultralytics_map50_95"]}}
    return YoloModel(onnx=onnx, program=Path(result["program"]), metrics=metrics)


# -- the exported model, run here ---------------------------------------------------------------
def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """RGB uint8 -> (1, 3, size, size) float 0-1, scaled to fit and padded grey in the middle, as
    ultralytics feeds its models; also the scale and (x, y) padding to map boxes back."""
    height, width = image.shape[:2]
    scale = min(size / height, size / width)
    new_w, new_h = round(width * scale), round(height * scale)
    pad_x, pad_y = (size - new_w) / 2, (size - new_h) / 2
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    left, top = round(pad_x - 0.1), round(pad_y - 0.1)
    canvas[top:top + new_h, left:left + new_w] = cv2.resize(image[..., :3], (new_w, new_h),
                                                            interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0, scale, (left, top)


def decode(output: np.ndarray, scale: float, pad: tuple[float, float], width: int, height: int,
           min_score: float = 0.001, iou: float = 0.7, max_boxes: int = 300) -> list[tuple[int, float, list[float]]]:
    """One (4 + classes, anchors) ONNX output -> [(class, score, [x, y, w, h] in image pixels)]."""
    scores_all = output[4:].T
    classes, scores = scores_all.argmax(1), scores_all.max(1)
    keep = scores > min_score
    cx, cy, w, h = output[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    boxes = (boxes - np.array([*pad, *pad])) / scale
    kept = non_max_suppression(boxes, scores[keep], iou, groups=classes[keep])[:max_boxes]
    boxes = xyxy_to_xywh(clip_boxes(boxes[kept], width, height))
    return [(int(c), float(s), b.tolist()) for c, s, b in zip(classes[keep][kept], scores[keep][kept], boxes)]


# a YOLO model as run here: letterboxed input (1, 3, size, size) -> output (4 + classes, anchors)
Runner = Callable[[np.ndarray], np.ndarray]


def onnx_runner(onnx: Path) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda inputs: session.run(None, {name: inputs})[0][0]


def detect_all(run: Runner, dataset: Dataset, samples: list[Sample], size: int) -> list[list]:
    found = []
    for sample in samples:
        image = load_image(dataset.media_path(sample))
        inputs, scale, pad = letterbox(image, size)
        found.append(decode(run(inputs), scale, pad, image.shape[1], image.shape[0]))
    return found


def coco_map(dataset: Dataset, samples: list[Sample], labels: list[str], found: list[list]) -> dict:
    """COCO mAP50 and mAP50-95 (faster-coco-eval) of detections against the samples' boxes."""
    from faster_coco_eval import COCO, COCOeval_faster

    index = {label: i for i, label in enumerate(labels)}
    truth = {"images": [], "annotations": [],
             "categories": [{"id": i + 1, "name": label} for i, label in enumerate(labels)]}
    detections = []
    for image_id, (sample, boxes) in enumerate(zip(samples, found), start=1):
        truth["images"].append({"id": image_id, "width": sample.shape.width, "height": sample.shape.height})
        for label in sample.labels:
            if label.box and label.class_name in index:
                truth["annotations"].append({"id": len(truth["annotations"]) + 1, "image_id": image_id,
                                             "category_id": index[label.class_name] + 1, "bbox": list(label.box),
                                             "area": label.box[2] * label.box[3], "iscrowd": 0})
        detections += [{"image_id": image_id, "category_id": c + 1, "score": s, "bbox": b} for c, s, b in boxes]
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
