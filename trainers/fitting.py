"""The training loop both trainers share: epochs, early stopping, and a checkpoint per epoch.

The trainers put their models on the GPU when there is one (edgedistill.models.default_device) and hand
them back on the CPU; `fit` resumes a checkpoint on whichever device the model is on.

A rerun with the same checkpoint folder picks up after the last finished epoch, with the model,
optimiser, learning-rate schedule and random generator as they were.
"""

from __future__ import annotations

import copy
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgedistill.dataset import write_atomic

CHECKPOINT = "checkpoint.pt"
logger = logging.getLogger(__name__)


@dataclass
class Fitted:
    best_epoch: int
    epochs_run: int
    best_metrics: dict
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # spent in this call (a resumed run counts only its own epochs)
    epochs_here: int = 0


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, schedule, rng: np.random.Generator, *,
        epochs: int, patience: int, checkpoint_dir: Path,
        train_epoch: Callable[[np.random.Generator], float],
        validate: Callable[[], tuple[float, dict]],
        progress: Callable[[int, int, dict], None] | None = None) -> Fitted:
    """Train until `epochs` or until `patience` epochs pass without a better validation score.

    `train_epoch(rng)` runs one epoch and returns its mean loss; `validate()` returns the score
    to maximise and the metrics behind it. The model ends with the best epoch's weights.
    """
    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "best_model": None, "best_metrics": {},
             "history": []}
    checkpoint = Path(checkpoint_dir) / CHECKPOINT
    device = next(model.parameters()).device  # a checkpoint saved on a GPU resumes on a CPU, and back
    saved = torch.load(checkpoint, weights_only=False, map_location=device) if checkpoint.exists() else None
    if saved and saved["model"].keys() != model.state_dict().keys():
        logger.warning("%s holds another model's layers (saved by an older edgedistill?); training starts over",
                       checkpoint)
        saved = None
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        rng, state = saved["rng"], saved["state"]
    started, epochs_here = time.perf_counter(), 0
    while state["epoch"] < epochs and state["epoch"] - state["best_epoch"] < patience:
        loss = train_epoch(rng)
        state["epoch"] += 1
        epochs_here += 1
        score, metrics = validate()
        record = {"epoch": state["epoch"], "loss": loss, "val_score": score}
        state["history"].append(record)
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=state["epoch"], best_metrics=metrics,
                         best_model=copy.deepcopy(model.state_dict()))
        _save(checkpoint, model, optimizer, schedule, rng, state)
        if progress:
            progress(state["epoch"], epochs, record)
    model.load_state_dict(state["best_model"])
    model.eval()
    return Fitted(best_epoch=state["best_epoch"], epochs_run=state["epoch"], best_metrics=state["best_metrics"],
                  history=state["history"], seconds=time.perf_counter() - started, epochs_here=epochs_here)


def on_device_of(model: nn.Module, array: np.ndarray) -> torch.Tensor:
    """A numpy batch as a tensor on the device the model's weights are on (the GPU when training found one)."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(next(model.parameters()).device)


def _save(path: Path, model, optimizer, schedule, rng, state) -> None:
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "rng": rng, "state": state}, buffer)
    write_atomic(path, buffer.getvalue())
