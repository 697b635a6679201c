"""Full-int8 TFLite (int8 input and output) with litert-torch PT2E static quantization.

No TensorFlow: torch.export -> PT2E observers calibrated on real features -> litert-torch's
converter, which folds the quantize/dequantize pairs into int8 kernels and int8 model I/O.
"""

from __future__ import annotations

import contextlib
import operator
import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.errors import EdgedistillError
from edgedistill.runtimes import TfliteModel


# TFLite's int8 kernels for these require an output scale of 1/256 and zero point -128
FIXED_SCALE_OPS = (torch.ops.aten.softmax.int, torch.ops.aten._softmax.default, torch.ops.aten.sigmoid.default)
# litert-torch's annotators find these ops by the Python function they came from, which a graph loaded
# from a .pt2 file (YOLO) no longer records: without it they stay float and split the int8 graph
SOURCES = {torch.ops.aten.add.Tensor: operator.add, torch.ops.aten.mul.Tensor: operator.mul,
           torch.ops.aten.cat.default: torch.cat, torch.ops.aten.max_pool2d.default: F.max_pool2d,
           torch.ops.aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d}


def _quantizer():
    """litert-torch's symmetric int8 quantizer (per-channel weights), with two fixes.

    Pooled features: its annotator makes global average pooling share its input's scale, and the
    classifier behind it then gets a second, finer scale. The converter drops that second quantize but
    still computes the classifier's int32 bias with its scale, while the int8 kernels use the first: in
    the DS-CNN the bias came out 5x too large and cost ~3 points of accuracy. A scale of its own for
    the pooled output (TFLite's MEAN requantises, on the NPU too) makes both quantizers agree.

    Ops it leaves float: sigmoid and softmax behind an input it did not quantise (a reshape or a split
    in YOLO's head), and subtraction, which has no annotator. Each float op splits the int8 graph and
    takes its neighbours off an NPU; here they get int8 inputs and outputs (TFLite's fixed 1/256
    output scale for sigmoid and softmax). `_ready_for_quantizer` handles the rest.
    """
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.pt2e_quantizer_utils import (get_fixed_qparams_qspec, get_input_act_qspec,
                                                            get_output_act_qspec)
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)

    def int8_in_and_out(node: torch.fx.Node, output_qspec) -> None:
        inputs = {arg: get_input_act_qspec(config) for arg in node.args if isinstance(arg, torch.fx.Node)}
        node.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=inputs,
                                                                      output_qspec=output_qspec, _annotated=True)

    class Quantizer(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for node in model.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                if node.target == torch.ops.aten.adaptive_avg_pool2d.default:
                    annotation.output_qspec = get_output_act_qspec(config)
                elif node.target in FIXED_SCALE_OPS and not (annotation and annotation.input_qspec_map):
                    int8_in_and_out(node, get_fixed_qparams_qspec(config))
                elif node.target == torch.ops.aten.sub.Tensor and not annotation:  # it has no annotator
                    int8_in_and_out(node, get_output_act_qspec(config))
            return model

    return Quantizer().set_global(config)


def _ready_for_quantizer(graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """SiLU as x * sigmoid(x), which has int8 kernels (the quantizer leaves SiLU float; YOLO has
    dozens), and each op's Python source where the graph lost it (SOURCES). With both, Vela puts all
    of an exported YOLO11n on the Ethos-U55 instead of 40% of its operators."""
    graph = graph_module.graph
    for node in list(graph.nodes):
        if node.target in (torch.ops.aten.silu.default, torch.ops.aten.silu_.default):  # nn.SiLU(inplace=True)
            with graph.inserting_before(node):
                gate = graph.call_function(torch.ops.aten.sigmoid.default, (node.args[0],))
                product = graph.call_function(torch.ops.aten.mul.Tensor, (node.args[0], gate))
            for part in (gate, product):  # same shape as the SiLU; PT2E observes only nodes with a value
                part.meta = {key: value for key, value in node.meta.items() if key != "source_fn_stack"}
            node.replace_all_uses_with(product)
            graph.erase_node(node)
    for node in graph.nodes:
        if node.target in SOURCES and not node.meta.get("source_fn_stack"):
            node.meta["source_fn_stack"] = [(node.name, SOURCES[node.target])]
    graph_module.recompile()
    return graph_module


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
    """Float model + calibration inputs (N, ...) -> full-int8 .tflite bytes (batch 1)."""
    import litert_torch
    from litert_torch.quantize import quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    if len(calibration) == 0:
        raise EdgedistillError("int8 quantisation needs calibration features and got none",
                               "pass some training clips' features as calibration")
    samples = torch.from_numpy(calibration.astype(np.float32))
    example = (samples[:1],)
    graph_module = _ready_for_quantizer(torch.export.export(model.eval(), example).module())
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
    dtypes = TfliteModel(content).dtypes()
    if dtypes != {"int8"}:
        raise EdgedistillError(f"the converter produced a model with {' and '.join(sorted(dtypes))} inputs or "
                               "outputs, not int8 in and out", "check the litert-torch version (the project pins 0.10.0)")
