"""Checks of a bundle's stated device figures against the device tools themselves."""

import csv
from pathlib import Path

import numpy as np


def tflite_micro_runs(model: Path, arena_bytes: int, input_shape: list[int]) -> bool:
    """Whether TensorFlow Lite Micro allocates and runs the int8 model in an arena of `arena_bytes`."""
    from tflite_micro.python.tflite_micro import runtime

    try:
        interpreter = runtime.Interpreter.from_bytes(Path(model).read_bytes(), arena_size=arena_bytes)
        interpreter.set_input(np.zeros(input_shape, np.int8), 0)
        interpreter.invoke()
    except RuntimeError:
        return False
    return True


def vela_figures_of_its_report(summary_csv: Path, figures: dict) -> bool:
    """Whether the manifest's Vela figures are those of the summary CSV the bundle carries (sizes in KiB there)."""
    row = next(csv.DictReader(Path(summary_csv).read_text().splitlines()))
    flash_kib = float(row["off_chip_flash_memory_used"]) + float(row["on_chip_flash_memory_used"])
    stated = (figures["sram_bytes"], figures["flash_bytes"], figures["cycles_total"], figures["cycles_npu"],
              figures["macs"], figures["accelerator"])
    return stated == (round(float(row["sram_memory_used"]) * 1024), round(flash_kib * 1024),
                      int(float(row["cycles_total"])), int(float(row["cycles_npu"])), int(float(row["nn_macs"])),
                      row["accelerator_configuration"]) and min(stated[:5]) > 0
