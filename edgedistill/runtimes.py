"""The two model files run here: a .tflite with ai-edge-litert, an .onnx with onnxruntime (CPU).

Every place that runs a model file (the bundle's int8 model in export and `predict`, the int8 and
ONNX YOLO, teacher detectors, the ONNX check) goes through these, so threads, batching and
quantisation are done one way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgedistill.errors import EdgedistillError


def quantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float -> int8 the way TFLite does it: round(x / scale) + zero_point, saturated."""
    return np.clip(np.round(values / scale) + zero_point, -128, 127).astype(np.int8)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


class TfliteModel:
    """A .tflite model (a path or its bytes). TFLite models here take batch 1: `run` invokes once per input."""

    def __init__(self, model: Path | bytes, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            if isinstance(model, bytes):
                self.interpreter = Interpreter(model_content=model, num_threads=threads)
            else:
                self.interpreter = Interpreter(model_path=str(model), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:  # what the runtime raises for a file it cannot read
            raise unreadable(model, error) from None
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()

    def run(self, row: np.ndarray) -> list[np.ndarray]:
        """One input (without its batch axis) -> every output (batch axis kept), in the model's order."""
        self.interpreter.set_tensor(self.input["index"], row[None].astype(self.input["dtype"]))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(detail["index"]).copy() for detail in self.outputs]

    def run_batch(self, inputs: np.ndarray) -> list[list[np.ndarray]]:
        return [self.run(row) for row in inputs]

    def dtypes(self) -> set[str]:
        return {np.dtype(detail["dtype"]).name for detail in [self.input, *self.outputs]}


class OnnxModel:
    """An .onnx model on onnxruntime's CPU provider, with one input."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except (RuntimeError, ValueError) as error:  # onnxruntime's errors for a file it cannot read derive from these
            raise unreadable(path, error) from None
        self.input_name = self.session.get_inputs()[0].name
        self.batched = not isinstance(self.session.get_inputs()[0].shape[0], int)  # a free batch dimension

    def run(self, inputs: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        """A batch of inputs -> the outputs (all, or those named) for the whole batch."""
        return self.session.run(outputs, {self.input_name: inputs})

    def run_batch(self, inputs: np.ndarray) -> list[list[np.ndarray]]:
        """Each input's outputs (batch axis kept), in one call when the batch dimension is free."""
        if self.batched:
            outputs = self.run(inputs)
            return [[output[i:i + 1] for output in outputs] for i in range(len(inputs))]
        return [self.run(inputs[i:i + 1]) for i in range(len(inputs))]


def open_model(path: Path) -> TfliteModel | OnnxModel:
    """An .onnx or .tflite file as a model to run (a TFLite one on up to 4 threads)."""
    if path.suffix.lower() == ".onnx":
        return OnnxModel(path)
    return TfliteModel(path, min(4, os.cpu_count() or 1))


def unreadable(model: Path | bytes, error: Exception) -> EdgedistillError:
    name = "the model" if isinstance(model, bytes) else str(model)
    return EdgedistillError(f"{name} could not be loaded as a model ({str(error).splitlines()[0][:200]})",
                            "check that the file is a complete .onnx or .tflite model")
