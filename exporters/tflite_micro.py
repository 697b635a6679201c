"""Check the int8 model with TensorFlow Lite Micro's own kernels, and measure its tensor arena.

The `tflite-micro` wheel runs the microcontroller interpreter on the host: if it loads the model,
every op has an MCU kernel; its recording allocator says how much arena the device must reserve.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable

import numpy as np

from edgedistill.errors import EdgedistillError

ARENA_LIMIT_FACTOR = 20  # the interpreter needs an upper bound; the recorded use is what we report
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


def _capture_stderr(action: Callable[[], None]) -> str:
    """Run `action` and return what native code wrote to file descriptor 2 meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            action()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        return sink.read().decode(errors="replace")


def check_on_tflite_micro(model: bytes, inputs: np.ndarray, reference_outputs: np.ndarray) -> dict:
    """Run int8 `inputs` (N, ...) through TFLite Micro and compare with `reference_outputs` (N, ..., classes).

    Returns the arena bytes the allocator recorded, how often TFLM's int8 outputs of an input equal
    the reference exactly or within one step, and how often they agree on the top class (per cell
    for a heat map).
    """
    from tflite_micro.python.tflite_micro import runtime

    try:
        interpreter = runtime.Interpreter.from_bytes(model, arena_size=max(len(model) * ARENA_LIMIT_FACTOR, 1 << 20))
    except (RuntimeError, ValueError) as error:
        raise EdgedistillError(f"TensorFlow Lite Micro cannot load the int8 model: {error}",
                               "the model uses an op without an MCU kernel; keep to DS-CNN-style ops") from None
    outputs = []
    for row in inputs:
        interpreter.set_input(row[None].astype(np.int8), 0)
        interpreter.invoke()
        outputs.append(np.asarray(interpreter.get_output(0))[0].copy())
    # (N, ..., classes) -> (N, positions, classes): a heat map is compared cell by cell
    micro = np.stack(outputs).astype(np.int16).reshape(len(inputs), -1, reference_outputs.shape[-1])
    reference = reference_outputs.astype(np.int16).reshape(micro.shape)
    allocations = _capture_stderr(interpreter.print_allocations)
    found = _ARENA_TOTAL.search(allocations)
    difference = np.abs(micro - reference).max(axis=(1, 2))
    return {
        "arena_bytes": int(found.group(1)) if found else None,
        "model_bytes": len(model),
        "checked_inputs": int(len(inputs)),
        "exact_agreement": float((difference == 0).mean()),
        "within_one_step": float((difference <= 1).mean()),
        "top1_agreement": float((micro.argmax(axis=-1) == reference.argmax(axis=-1)).mean()),
        "max_abs_difference_steps": int(difference.max()) if difference.size else 0,
    }
