"""Compile the int8 model for an Arm Ethos-U NPU with Vela, and read its performance estimate.

Vela runs as a subprocess (its CLI is its stable interface) into a temporary folder; the bundle
keeps its summary CSV, its console summary and the NPU-optimised .tflite.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

VELA_TIMEOUT_SECONDS = 300
_OPERATORS = re.compile(r"^(CPU|NPU) operators = (\d+) \(([\d.]+)%\)", re.MULTILINE)
KIB = 1024


@dataclass
class VelaResult:
    """What Vela said. `figures` goes into the manifest; the files into the bundle."""

    figures: dict
    summary_csv: str | None = None
    console: str = ""
    optimised_model: bytes | None = None
    warnings: list[str] = field(default_factory=list)


def vela_command() -> list[str] | None:
    if importlib.util.find_spec("ethosu") is not None:
        return [sys.executable, "-m", "ethosu.vela"]
    found = shutil.which("vela")
    return [found] if found else None


def _summary_figures(row: dict[str, str], console: str) -> dict:
    operators = {kind: (int(count), float(share)) for kind, count, share in _OPERATORS.findall(console)}
    npu_count, npu_share = operators.get("NPU", (0, 0.0))
    cpu_count, _ = operators.get("CPU", (0, 0.0))
    flash_kib = float(row["off_chip_flash_memory_used"]) + float(row["on_chip_flash_memory_used"])
    return {
        "status": "ok",
        "accelerator": row["accelerator_configuration"],
        "system_config": row["system_config"],
        "memory_mode": row["memory_mode"],
        "clock_hz": float(row["core_clock"]),
        "sram_bytes": round(float(row["sram_memory_used"]) * KIB),
        "flash_bytes": round(flash_kib * KIB),
        "dram_bytes": round(float(row["dram_memory_used"]) * KIB),
        "cycles_npu": int(float(row["cycles_npu"])),
        "cycles_total": int(float(row["cycles_total"])),
        "inference_seconds": float(row["inference_time"]),
        "inferences_per_second": float(row["inferences_per_second"]),
        "macs": int(float(row["nn_macs"])),
        "npu_operators": npu_count,
        "cpu_operators": cpu_count,
        "npu_operator_share": npu_share / 100.0,
    }


def _failed(reason: str, console: str = "") -> VelaResult:
    return VelaResult(figures={"status": "failed", "reason": reason}, console=console)


def compile_for_ethos_u(model: bytes, accelerator: str = "ethos-u55-128") -> VelaResult:
    """Run Vela on int8 .tflite bytes. Never raises for Vela's own problems: they go in `figures`."""
    command = vela_command()
    if command is None:
        return VelaResult(figures={"status": "unavailable", "reason": "Vela is not installed "
                                   "(pip install ethos-u-vela==5.2.0)"})
    with tempfile.TemporaryDirectory(prefix="edgedistill-vela-") as work:
        source = Path(work) / "model.tflite"
        source.write_bytes(model)
        output = Path(work) / "out"
        try:
            result = subprocess.run([*command, str(source), "--accelerator-config", accelerator,
                                     "--output-dir", str(output)],
                                    capture_output=True, text=True, timeout=VELA_TIMEOUT_SECONDS, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            return _failed(f"Vela did not run: {error}")
        console = result.stdout + result.stderr
        summaries = sorted(output.glob("*_summary_*.csv"))
        if result.returncode != 0 or not summaries:
            last = (console.strip().splitlines() or ["no output"])[-1]
            return _failed(f"Vela exited with {result.returncode}: {last}", console)
        summary_csv = summaries[0].read_text()
        row = next(csv.DictReader(summary_csv.splitlines()))
        optimised = output / "model_vela.tflite"
        warnings = [line.strip() for line in console.splitlines() if line.startswith("Warning")]
        return VelaResult(figures=_summary_figures(row, console), summary_csv=summary_csv, console=console,
                          optimised_model=optimised.read_bytes() if optimised.is_file() else None,
                          warnings=warnings)
