"""Full-int8 TFLite (int8 input and output) with litert-torch PT2E static quantization.

No TensorFlow: torch.export -> PT2E observers calibrated on real features -> litert-torch's
converter, which folds the quantize/dequantize pairs into int8 kernels and int8 model I/O.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch

from edgedistill.errors import EdgedistillError
from edgedistill.inference import Int8Classifier


def _quantizer():
    """litert-torch's symmetric int8 quantizer (per-channel weights), with one fix for pooled features.

    Its annotator makes global average pooling share its input's scale, and the classifier behind it
    then gets a second, finer scale. The converter drops that second quantize but still computes the
    classifier's int32 bias with its scale, while the int8 kernels use the first: in the DS-CNN the bias
    came out 5x too large and cost ~3 points of accuracy. A scale of its own for the pooled output
    (TFLite's MEAN requantises, on the NPU too) makes both quantizers agree, so the bias is right.
    """
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.pt2e_quantizer_utils import get_output_act_qspec

    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)

    class Quantizer(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for node in model.graph.nodes:
                if node.target == torch.ops.aten.adaptive_avg_pool2d.default:
                    node.meta["quantization_annotation"].output_qspec = get_output_act_qspec(config)
            return model

    return Quantizer().set_global(config)


@contextlib.contextmanager
def _quiet_litert_torch() -> Iterator[None]:
    """litert-torch prints a progress line per conversion step; our caller reports progress itself."""
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous


def quantize_to_int8_tflite(model: torch.nn.Module, calibration: np.ndarray) -> bytes:
    """Float model + calibration features (N, frames, mfcc) -> full-int8 .tflite bytes (batch 1)."""
    import litert_torch
    from litert_torch.quantize import quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    if len(calibration) == 0:
        raise EdgedistillError("int8 quantisation needs calibration features and got none",
                               "pass some training clips' features as calibration")
    samples = torch.from_numpy(calibration.astype(np.float32))
    example = (samples[:1],)
    graph_module = torch.export.export(model.eval(), example).module()
    quantizer = _quantizer()
    prepared = quantize_pt2e.prepare_pt2e(graph_module, quantizer)
    with torch.no_grad():
        for index in range(len(samples)):  # the exported graph is specialised to batch 1
            prepared(samples[index:index + 1])
    quantized = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(prepared, fold_quantize=False))
    # the graph already holds eval-mode ops; clear the flag too, which litert-torch warns about
    torch.nn.Module.train(quantized, False)
    with _quiet_litert_torch():
        converted = litert_torch.convert(quantized, example,
                                         quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
        content = converted.model_content()
    _require_int8_io(content)
    return content


def _require_int8_io(content: bytes) -> None:
    classifier = Int8Classifier(content)
    dtypes = (classifier.input_quantization.dtype, classifier.output_quantization.dtype)
    if dtypes != ("int8", "int8"):
        raise EdgedistillError(f"the converter produced a model with {dtypes[0]} input and {dtypes[1]} output, "
                               "not int8 in and out", "check the litert-torch version (the project pins 0.10.0)")
