"""The second Python environment, for the optional extras that need torchvision.

torchvision exists only for another torch than the one the project pins, so ultralytics (YOLO)
and Meta's segment-anything live in `.venv-torchvision/` (`make torchvision-extras`, part of
`make setup`). Their worker scripts import nothing of ours: a job goes in as a JSON file, results
come back as files, and the caller turns them into our types.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from edgedistill.dataset import write_atomic
from edgedistill.errors import EdgedistillError

ROOT = Path(__file__).resolve().parents[1]
PYTHON_OVERRIDE = "EDGEDISTILL_TORCHVISION_PYTHON"


def torchvision_python() -> Path:
    python = Path(os.environ.get(PYTHON_OVERRIDE) or ROOT / ".venv-torchvision" / "bin" / "python")
    if not python.exists():
        raise EdgedistillError(f"this extra needs the torchvision environment and {python} does not exist",
                               "run `make torchvision-extras` (ultralytics and segment-anything with torchvision "
                               f"and its own torch), or point {PYTHON_OVERRIDE} at a Python that has them")
    return python


def run_worker(script: Path, job: dict, job_file: Path, what: str, hint: str) -> None:
    """Run `script JOB_FILE` in the torchvision environment; a failure raises with the end of its log."""
    python = torchvision_python()
    job_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(job_file, json.dumps(job, indent=2).encode())
    done = subprocess.run([str(python), str(script), str(job_file)], capture_output=True, text=True)
    if done.returncode != 0:
        raise EdgedistillError(f"{what} failed:\n{(done.stderr or done.stdout)[-2000:]}", hint)
