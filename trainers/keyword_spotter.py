"""Train and evaluate the DS-CNN keyword spotter on a dataset version's clips."""

from __future__ import annotations

import io
import json
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
from edgedistill.models import default_device
from edgedistill.recipe import SILENCE, UNKNOWN, TrainSettings, is_keyword
from edgedistill.streaming import HeldOutAudio
from trainers.dscnn import DSCNN
from trainers.fitting import fit, on_device_of



@dataclass
class FeatureSet:
    features: np.ndarray  # (n, frames, mfcc) float32
    targets: np.ndarray  # (n,) class indices

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, indices: list[int]) -> "FeatureSet":
        return FeatureSet(self.features[indices], self.targets[indices])


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
    clips = _clips(dataset, samples, frontend)
    index = {label: i for i, label in enumerate(labels)}
    targets = np.array([index[s.class_name] for s in samples], dtype=np.int64)
    return FeatureSet(frontend(clips) if len(clips) else np.zeros((0, *frontend.feature_shape), np.float32),
                      targets)


def _clips(dataset: Dataset, samples: list[Sample], frontend: MfccFrontEnd) -> np.ndarray:
    return np.stack([fit_to_length(load_audio(path, frontend.sample_rate), frontend.clip_samples)
                     for path in dataset.media_paths(samples)]) if samples else np.zeros((0, frontend.clip_samples))


BACKGROUND_KINDS = ("everyday", "phrase", "silence", "other", "recorded")  # "recorded": real talk, mined


def held_out_audio(dataset: Dataset, samples: list[Sample], frontend: MfccFrontEnd, labels: list[str],
                   seed: int) -> HeldOutAudio:
    """What the thresholds are set on: the background a device hears (everyday words, running speech, silence
    and noise) of the validation and test voices, none of it trained on, and the test voices' keyword clips,
    each joined end to end in a seeded order into one recording. Sound-alikes and parts of keywords are hard
    cases, not background: their false accepts are reported apart."""
    rng = np.random.default_rng(seed)
    held_out = [s for s in samples if s.split in ("val", "test")]
    negatives = [s for s in held_out if negative_kind(s) in BACKGROUND_KINDS]
    positives = [s for s in held_out if s.split == "test" and is_keyword(s.class_name)]
    negatives = [negatives[i] for i in rng.permutation(len(negatives))]
    positives = [positives[i] for i in rng.permutation(len(positives))]
    index = {label: i for i, label in enumerate(labels)}
    return HeldOutAudio(negative=_clips(dataset, negatives, frontend).ravel(),
                        positive=_clips(dataset, positives, frontend).ravel(),
                        positive_classes=np.array([index[s.class_name] for s in positives], np.int64))


def negative_kind(sample: Sample) -> str | None:
    """What a negative clip holds, for the false-accept table: "silence", or the kind of `_unknown_` speech
    ("confusable", "everyday", "partial", "phrase", "recorded" for other words mined from real recordings;
    "other" for clips made before kinds were recorded)."""
    if is_keyword(sample.class_name):
        return None
    return "silence" if sample.class_name == SILENCE else sample.provenance.params.get("negative", "other")


def predict_logits(model: nn.Module, features: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([
            model(on_device_of(model, features[i:i + batch_size])).cpu().numpy()
            for i in range(0, len(features), batch_size)
        ]) if len(features) else np.zeros((0, 0), np.float32)


def evaluate(model: nn.Module, data: FeatureSet, labels: list[str]) -> dict:
    predicted = predict_logits(model, data.features).argmax(axis=1)
    return classification_metrics(data.targets, predicted, labels)


def evaluate_by_origin(model: nn.Module, test: FeatureSet, origin_of: list[str], labels: list[str]) -> dict[str, dict]:
    """The test figures of each origin's clips apart (`origin_of`: each test clip's, e.g. synthetic, recordings),
    when the test holds more than one; {} otherwise (the overall figures say it all)."""
    found = sorted(set(origin_of))
    if len(found) < 2:
        return {}
    return {origin: evaluate(model, test.subset([i for i, o in enumerate(origin_of) if o == origin]), labels)
            for origin in found}


def _class_weights(targets: np.ndarray, labels: list[str], unknown_weight: float) -> torch.Tensor:
    """Inverse-frequency weights, so a class with few clips still counts in the loss; `_unknown_`, which must
    stand for every other word there is, counts `unknown_weight` times as much as a keyword."""
    counts = np.bincount(targets, minlength=len(labels)).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(labels), 0.0)
    weights[[i for i, label in enumerate(labels) if label == UNKNOWN]] *= unknown_weight
    return torch.tensor(weights, dtype=torch.float32)


def train_keyword_spotter(train: FeatureSet, val: FeatureSet, labels: list[str], settings: TrainSettings,
                          checkpoint_dir: Path,
                          progress: Callable[[int, int, dict], None] | None = None) -> TrainResult:
    """Train with class weights and early stopping on validation accuracy; resumable per epoch."""
    if len(train) == 0 or len(val) == 0:
        raise EdgedistillError("there is no training or no validation data",
                               "synthesise more voices: splits are by voice, so each split needs some")
    torch.manual_seed(settings.seed)
    model = DSCNN(len(labels), width=settings.width)
    model.set_normalisation(torch.from_numpy(train.features))
    device = default_device()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.epochs * _steps(len(train), settings))
    loss_fn = nn.CrossEntropyLoss(weight=_class_weights(train.targets, labels, settings.unknown_weight),
                                  label_smoothing=0.05).to(device)

    def train_epoch(rng: np.random.Generator) -> float:
        model.train()
        order = rng.permutation(len(train))
        total_loss = 0.0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            features = on_device_of(model, _mask_time(train.features[batch], rng))
            loss = loss_fn(model(features), on_device_of(model, train.targets[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(batch)
        return total_loss / len(train)

    def validate() -> tuple[float, dict]:
        metrics = evaluate(model, val, labels)
        return metrics["accuracy"], metrics

    fitted = fit(model, optimizer, schedule, np.random.default_rng(settings.seed), epochs=settings.epochs,
                 patience=settings.patience, checkpoint_dir=checkpoint_dir, train_epoch=train_epoch,
                 validate=validate, progress=progress)
    seen = fitted.epochs_here * len(train)
    return TrainResult(model=model.cpu(), best_epoch=fitted.best_epoch, epochs_run=fitted.epochs_run,
                       history=fitted.history, seconds=fitted.seconds,
                       samples_per_second=seen / fitted.seconds if fitted.seconds > 0 else 0.0)


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
