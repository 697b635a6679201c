"""YOLO for NPUs and Linux boards: ultralytics trains it in its own environment, we score its ONNX.

ultralytics is AGPL-3.0 and needs torchvision, which exists only for another torch than the one
the project pins, so it never enters the project's environment. This module writes a dataset
version as a YOLO folder (edgedistill/formats/yolo.py), runs trainers/yolo_worker.py in the
torchvision environment (edgedistill/extras.py), and scores the exported ONNX model here, with onnxruntime and
faster-coco-eval (COCO mAP50 and mAP50-95) on the held-out split. The model is trained from a
model YAML, never from downloaded weights, so nothing it learned comes from a licence we chose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgedistill.dataset import Dataset, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.extras import run_worker
from edgedistill.formats.yolo import write_yolo_folder
from edgedistill.recipe import DetectorTrainSettings
from edgedistill.yolo import coco_map, detect_all, onnx_runner

WORKER = Path(__file__).with_name("yolo_worker.py")


@dataclass
class YoloModel:
    onnx: Path
    program: Path  # the same model as a torch.export program, for int8 export (exporters/yolo_int8.py)
    metrics: dict  # held-out COCO mAP of the ONNX model, and ultralytics' own figures


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
        data = write_yolo_folder(dataset, samples, labels, out_dir / "data", link_images=True)
        job = {"data": str(data.resolve()),
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
