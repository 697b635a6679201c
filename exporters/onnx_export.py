"""Float ONNX export, checked against PyTorch with onnxruntime before it goes into a bundle."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from edgedistill.errors import EdgedistillError
from edgedistill.runtimes import OnnxModel

INPUT_NAME = "features"
OUTPUT_NAME = "logits"


def _export_dynamo(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    # external_data=False: one self-contained file, not a .onnx plus a .onnx.data sidecar
    torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, optimize=True,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
                      # by position, not by name: the model's argument may be called anything
                      dynamic_shapes=({0: torch.export.Dim("batch")},))


def _export_legacy(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def max_difference_from_torch(path: Path, model: torch.nn.Module, features: np.ndarray) -> float:
    """Largest absolute logit difference between onnxruntime and PyTorch on `features`."""
    onnx_logits = OnnxModel(path).run(features.astype(np.float32), [OUTPUT_NAME])[0]
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(features.astype(np.float32))).numpy()
    return float(np.abs(onnx_logits - torch_logits).max())


def export_onnx(model: torch.nn.Module, check_features: np.ndarray, path: Path, tolerance: float = 1e-3) -> dict:
    """Write `model` (in eval mode) as float ONNX with a dynamic batch; return how it was made and checked."""
    example = torch.from_numpy(check_features[:2].astype(np.float32))
    try:
        _export_dynamo(model, example, path)
        exporter = "dynamo"
    except Exception as error:  # noqa: BLE001 - any dynamo failure falls back to the TorchScript exporter
        warnings.warn(f"dynamo ONNX export failed ({type(error).__name__}: {error}); using the legacy exporter")
        path.unlink(missing_ok=True)
        _export_legacy(model, example, path)
        exporter = "legacy"
    difference = max_difference_from_torch(path, model, check_features)
    if not difference <= tolerance:
        raise EdgedistillError(f"the ONNX model's logits differ from PyTorch's by up to {difference:.3g}",
                               "report this as a bug; pass formats without onnx to skip it meanwhile")
    return {"exporter": exporter, "max_abs_logit_difference": difference, "opset": _opset(path),
            "checked_inputs": int(len(check_features))}


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")))
