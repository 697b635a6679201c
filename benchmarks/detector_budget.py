"""What each FOMO input choice costs on the device: flash, TFLite Micro arena and Ethos-U, as a table.

    .venv/bin/python benchmarks/detector_budget.py [--width 0.35]

Each choice (`train.input_size`, `train.grayscale`) is a randomly initialised FomoNet exported the way a
bundle is (full int8, calibrated on random images); sizes do not depend on the weights' values, so no
training is needed. Targets (issue 11): the default within 100 KB flash and 256 KB arena.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from edgedistill.inference import Int8Classifier
from edgedistill.runtimes import quantize
from exporters.tflite_int8 import quantize_to_int8_tflite
from exporters.tflite_micro import check_on_tflite_micro
from exporters.vela import compile_for_ethos_u
from trainers.fomo import FomoNet

CHOICES = ((96, 1), (96, 3), (128, 1), (128, 3), (160, 1), (160, 3))  # (input size, channels)


def budget(size: int, channels: int, width: float) -> dict:
    torch.manual_seed(0)
    model = FomoNet(1, width=width, channels=channels).eval()
    calibration = np.random.default_rng(0).random((16, size, size, channels), np.float32)
    content = quantize_to_int8_tflite(model, calibration)
    classifier = Int8Classifier(content)
    quant = classifier.input_quantization
    inputs = quantize(calibration[:2], quant.scale, quant.zero_point)
    micro = check_on_tflite_micro(content, inputs, classifier.run_int8(inputs))
    vela = compile_for_ethos_u(content).figures
    return {"flash": len(content), "arena": micro["arena_bytes"], "vela": vela}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=float, default=0.35, help="MobileNet width multiplier (train.width)")
    args = parser.parse_args()
    table = Table(title=f"FOMO int8 on the device, width {args.width}")
    for column in ("input", "flash (int8 .tflite)", "TFLite Micro arena", "Ethos-U55-128 SRAM / flash", "NPU cycles"):
        table.add_column(column)
    for size, channels in CHOICES:
        figures = budget(size, channels, args.width)
        vela = figures["vela"]
        table.add_row(f"{size}x{size} {'grey' if channels == 1 else 'RGB'}", f"{figures['flash'] / 1024:.1f} KiB",
                      f"{figures['arena'] / 1024:.1f} KiB",
                      f"{(vela.get('sram_bytes') or 0) / 1024:.1f} / {(vela.get('flash_bytes') or 0) / 1024:.1f} KiB",
                      str(vela.get("cycles_total", "n/a")))
    Console().print(table)
    print("targets: flash <= 100 KB, arena <= 256 KB for the default (96x96 RGB)")


if __name__ == "__main__":
    main()
