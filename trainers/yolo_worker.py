"""Train a YOLO detector with ultralytics and export it to ONNX and a torch.export program.
Runs inside .venv-torchvision only.

    .venv-torchvision/bin/python trainers/yolo_worker.py JOB.json

ultralytics (AGPL-3.0) needs torchvision, which needs another torch than the project pins, so it
lives in its own environment (edgedistill/extras.py) and this script imports nothing of ours:
trainers/yolo.py writes the dataset as a YOLO folder and a job file, runs this script, and reads
`result.json`.
A job that stopped part way resumes from ultralytics' last checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _offline(config_dir: Path) -> None:
    """No download, pip install, update check or telemetry: set before ultralytics is imported."""
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update({"YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false", "YOLO_VERBOSE": "false",
                       "ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS": "1", "YOLO_CONFIG_DIR": str(config_dir)})


def _save_program(model, image_size: int, path: Path) -> Path:
    """The model as a torch.export program: aten ops and weights, no ultralytics code, so the
    project's own environment can load and quantise it (exporters/yolo_int8.py). Its head is set
    up as for the ONNX export, so both give the same (4 + classes, anchors) output."""
    import copy

    import torch
    from ultralytics.nn.modules import Detect

    model = copy.deepcopy(model).float().fuse().eval()
    for module in model.modules():
        if isinstance(module, Detect):
            module.export, module.format, module.dynamic = True, "onnx", False
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    example = (torch.zeros(1, 3, image_size, image_size),)
    model(*example)  # the head caches its anchors for this size, so they export as constants
    torch.export.save(torch.export.export(model, example, strict=False), path)
    return path


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    out = Path(job["out_dir"])
    _offline(out / "ultralytics-config")
    import torch
    from ultralytics import YOLO, settings

    # no telemetry or logger integrations, and nothing written outside this job's folder
    integrations = ("sync", "wandb", "mlflow", "comet", "clearml", "neptune", "dvc", "raytune", "tensorboard")
    settings.update({key: False for key in integrations if key in settings}
                    | {"datasets_dir": str(out), "weights_dir": str(out / "weights"), "runs_dir": str(out)})
    last = out / "train" / "weights" / "last.pt"
    # the recipe's device (edgedistill.models.DEVICE_ENV), else the GPU when this environment's torch sees one;
    # ultralytics names a GPU by its index
    device = os.environ.get("EDGEDISTILL_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    device = device.removeprefix("cuda:").replace("cuda", "0")
    common = dict(imgsz=job["image_size"], device=device, workers=0, plots=False, verbose=False)
    if last.exists() and not (out / "train" / "weights" / "best.pt").exists():
        model = YOLO(str(last))
        model.train(resume=True, **common)
    else:
        model = YOLO(job["model"])  # a model YAML: built untrained, nothing is downloaded
        model.train(data=job["data"], epochs=job["epochs"], batch=job["batch_size"], seed=job["seed"],
                    deterministic=True, pretrained=False, amp=False, project=str(out), name="train",
                    exist_ok=True, **common)
    best = YOLO(str(out / "train" / "weights" / "best.pt"))
    metrics = best.val(data=job["data"], split="test", batch=job["batch_size"], project=str(out), name="test",
                       exist_ok=True, **common)
    onnx = best.export(format="onnx", imgsz=job["image_size"], simplify=False, dynamic=False, opset=17,
                       device="cpu", verbose=False)
    program = _save_program(best.model, job["image_size"], out / "model.pt2")
    result = {"onnx": str(onnx), "program": str(program), "ultralytics_map50": float(metrics.box.map50),
              "ultralytics_map50_95": float(metrics.box.map), "epochs": job["epochs"]}
    (out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
