"""YOLO as a full-int8 TFLite model, for NPUs (Ethos-U through Vela) and Linux boards.

The YOLO worker (trainers/yolo_worker.py) saves a torch.export program beside its ONNX: aten ops
and weights, no ultralytics code. Here the program's one output, which concatenates boxes in input
pixels with 0-1 class scores, is split in two (one int8 scale for both would crush the scores, see
OFFLINE.md), its input becomes NHWC as camera frames are laid out, and it goes through the same
PT2E quantizer as FOMO and the keyword spotters (exporters/tflite_int8.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgedistill.dataset import Dataset, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.images import load_image
from edgedistill.runtimes import TfliteModel, dequantize, quantize
from edgedistill.recipe import ExportSettings
from exporters.bundle import Companion, check_accuracy_drop
from exporters.tflite_int8 import quantize_to_int8_tflite
from exporters.vela import compile_for_ethos_u
from edgedistill.yolo import coco_map, detect_all, letterbox

CALIBRATION_IMAGES = 64  # observing YOLO's ~400 activations is slow on a CPU; 64 images span them


class _ChannelsLast(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(images.permute(0, 3, 1, 2))


def load_program(path: Path) -> torch.nn.Module:
    """The saved program as a module: (1, size, size, 3) 0-1 input -> boxes (1, 4, anchors), scores
    (1, classes, anchors)."""
    module = torch.export.load(path).module()
    output = next(node for node in module.graph.nodes if node.op == "output")
    (joined,) = output.args[0]
    if joined.target != torch.ops.aten.cat.default or len(joined.args[0]) != 2:
        raise EdgedistillError(f"{path} does not end in boxes and scores joined into one output",
                               "delete the YOLO work folder under the run's model/yolo/ so the worker saves it again")
    output.args = (tuple(joined.args[0]),)
    module.graph.eliminate_dead_code()
    module.graph._codegen = torch.fx.graph.CodeGen()  # plain tensors in and out, not the program's pytree
    return _ChannelsLast(torch.fx.GraphModule(module, module.graph))  # a plain module: eval() works on it


def calibration_inputs(dataset: Dataset, samples: list[Sample], size: int) -> np.ndarray:
    """The samples' images letterboxed, (n, size, size, 3) in 0-1."""
    return np.concatenate([letterbox(load_image(path), size)[0].transpose(0, 2, 3, 1)
                           for path in dataset.media_paths(samples)])


def yolo_companions(name: str, onnx: Path, program: Path, float_metrics: dict, dataset: Dataset,
                    calibration: list[Sample], test: list[Sample], labels: list[str], size: int,
                    settings: ExportSettings, work_dir: Path) -> list[Companion]:
    """The YOLO files of a bundle: float ONNX, full-int8 TFLite with its held-out mAP, and the
    Vela-compiled int8 model for Ethos-U. `calibration`: the training samples to calibrate on (at most
    CALIBRATION_IMAGES). Raises, so that no bundle is written, when int8 loses more mAP50 than
    `settings.max_int8_accuracy_drop`."""
    content = quantize_to_int8_tflite(load_program(program), calibration_inputs(dataset, calibration, size))
    int8_metrics = coco_map(dataset, test, labels, detect_all(Int8Yolo(content), dataset, test, size))
    if float_metrics["map50"] is not None:
        check_accuracy_drop(float_metrics["map50"], int8_metrics["map50"], settings, "YOLO mAP50", "images")
    int8_metrics |= {"model": float_metrics.get("model"), "image_size": size}
    vela = compile_for_ethos_u(content, settings.vela_accelerator) if "vela" in settings.formats else None
    if vela is not None:
        int8_metrics["vela"] = vela.figures
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "int8.tflite").write_bytes(content)
    companions = [Companion(onnx, f"{name}_yolo.onnx", "model_yolo_onnx", float_metrics)] if "onnx" in settings.formats else []
    companions.append(Companion(work_dir / "int8.tflite", f"{name}_yolo_int8.tflite", "model_yolo_int8", int8_metrics))
    if vela is not None and vela.optimised_model is not None:
        (work_dir / "int8_vela.tflite").write_bytes(vela.optimised_model)
        companions.append(Companion(work_dir / "int8_vela.tflite", f"{name}_yolo_int8_vela.tflite",
                                    "model_yolo_int8_ethos_u", vela.figures))
    return companions


class Int8Yolo:
    """The int8 model run here with ai-edge-litert, as an edgedistill.yolo runner: letterboxed
    (1, 3, size, size) 0-1 input -> (4 + classes, anchors), like the ONNX model."""

    def __init__(self, content: bytes) -> None:
        self.model = TfliteModel(content)
        self._order = sorted(range(len(self.model.outputs)), key=lambda i: self.model.outputs[i]["name"])  # boxes, scores

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        outputs = self.model.run(quantize(inputs.transpose(0, 2, 3, 1)[0], *self.model.input["quantization"]))
        return np.concatenate([dequantize(outputs[i][0], *self.model.outputs[i]["quantization"]) for i in self._order])
