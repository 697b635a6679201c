"""Train and evaluate the DS-CNN keyword spotter on a dataset version's clips."""

from __future__ import annotations

import copy
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgedistill.audio import fit_to_length, load_audio
from edgedistill.dataset import Dataset, Sample, write_atomic
from edgedistill.errors import EdgedistillError
from edgedistill.frontend import MfccFrontEnd
from edgedistill.metrics import classification_metrics
from edgedistill.recipe import TrainSettings
from trainers.dscnn import DSCNN

CHECKPOINT = "checkpoint.pt"


@dataclass
class FeatureSet:
    features: np.ndarray  # (n, frames, mfcc) float32
    targets: np.ndarray  # (n,) class indices

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class TrainResult:
    model: nn.Module
    best_epoch: int
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_second: float = 0.0


def clip_features(dataset: Dataset, samples: list[Sample], frontend: MfccFrontEnd,
                  labels: list[str]) -> FeatureSet:
    """Load every clip at the front end's rate and length, and compute its MFCC features."""
    clips = np.stack([
        fit_to_length(load_audio(dataset.media_path(s), frontend.sample_rate), frontend.clip_samples)
        for s in samples
    ]) if samples else np.zeros((0, frontend.clip_samples), np.float32)
    index = {label: i for i, label in enumerate(labels)}
    targets = np.array([index[s.class_name] for s in samples], dtype=np.int64)
    return FeatureSet(frontend(clips) if len(clips) else np.zeros((0, *frontend.feature_shape), np.float32),
                      targets)


def predict_logits(model: nn.Module, features: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([
            model(torch.from_numpy(features[i:i + batch_size])).numpy()
            for i in range(0, len(features), batch_size)
        ]) if len(features) else np.zeros((0, 0), np.float32)


def evaluate(model: nn.Module, data: FeatureSet, labels: list[str]) -> dict:
    predicted = predict_logits(model, data.features).argmax(axis=1)
    return classification_metrics(data.targets, predicted, labels)


def _class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, so a class with few clips still counts in the loss."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def train_keyword_spotter(train: FeatureSet, val: FeatureSet, labels: list[str], settings: TrainSettings,
                          checkpoint_dir: Path,
                          progress: Callable[[int, int, dict], None] | None = None) -> TrainResult:
    """Train with class weights and early stopping on validation accuracy.

    A checkpoint is written after every epoch; a rerun with the same checkpoint folder picks up
    at the next epoch instead of starting over.
    """
    if len(train) == 0 or len(val) == 0:
        raise EdgedistillError("there is no training or no validation data",
                               "synthesise more voices: splits are by voice, so each split needs some")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = DSCNN(len(labels), width=settings.width)
    model.set_normalisation(torch.from_numpy(train.features))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.epochs * _steps(len(train), settings))
    loss_fn = nn.CrossEntropyLoss(weight=_class_weights(train.targets, len(labels)), label_smoothing=0.05)
    state = {"epoch": 0, "best_accuracy": -1.0, "best_epoch": 0, "best_model": None, "history": []}
    checkpoint = checkpoint_dir / CHECKPOINT
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        rng = saved["rng"]
        state = saved["state"]
    started = time.perf_counter()
    seen = 0
    while state["epoch"] < settings.epochs and state["epoch"] - state["best_epoch"] < settings.patience:
        model.train()
        order = rng.permutation(len(train))
        total_loss = 0.0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            features = torch.from_numpy(_mask_time(train.features[batch], rng))
            loss = loss_fn(model(features), torch.from_numpy(train.targets[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(batch)
            seen += len(batch)
        state["epoch"] += 1
        accuracy = evaluate(model, val, labels)["accuracy"]
        record = {"epoch": state["epoch"], "loss": total_loss / len(train), "val_accuracy": accuracy}
        state["history"].append(record)
        if accuracy > state["best_accuracy"]:
            state.update(best_accuracy=accuracy, best_epoch=state["epoch"],
                         best_model=copy.deepcopy(model.state_dict()))
        _save_checkpoint(checkpoint, model, optimizer, schedule, rng, state)
        if progress:
            progress(state["epoch"], settings.epochs, record)
    seconds = time.perf_counter() - started
    model.load_state_dict(state["best_model"])
    model.eval()
    return TrainResult(model=model, best_epoch=state["best_epoch"], epochs_run=state["epoch"],
                       history=state["history"], seconds=seconds,
                       samples_per_second=seen / seconds if seconds > 0 and seen else 0.0)


def _steps(n: int, settings: TrainSettings) -> int:
    return -(-n // settings.batch_size)


def _mask_time(features: np.ndarray, rng: np.random.Generator, max_frames: int = 6) -> np.ndarray:
    """SpecAugment-style time masking: hide a few frames so the model cannot lean on one."""
    features = features.copy()
    for row in features:
        width = int(rng.integers(0, max_frames + 1))
        start = int(rng.integers(0, max(1, row.shape[0] - width)))
        row[start:start + width] = row.mean(axis=0)
    return features


def _save_checkpoint(path: Path, model, optimizer, schedule, rng, state) -> None:
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "rng": rng, "state": state}, buffer)
    write_atomic(path, buffer.getvalue())


def save_model(model: nn.Module, path: Path, labels: list[str], settings: TrainSettings) -> None:
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "labels": labels, "width": settings.width}, buffer)
    write_atomic(path, buffer.getvalue())
    write_atomic(path.with_suffix(".json"), json.dumps({"labels": labels, "width": settings.width}).encode())


def load_model(path: Path) -> tuple[nn.Module, list[str]]:
    saved = torch.load(path, weights_only=False)
    model = DSCNN(len(saved["labels"]), width=saved["width"])
    model.feature_scale = saved["state_dict"]["feature_scale"]
    model.feature_shift = saved["state_dict"]["feature_shift"]
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model, saved["labels"]
