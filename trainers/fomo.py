"""FOMO ("Faster Objects, More Objects"): a microcontroller detector that finds object centroids.

A MobileNetV2 backbone cut at 1/8 resolution and a 1x1 head give, per grid cell, logits for
background + each class (96x96 input -> 12x12 grid). Training targets mark the cell holding
each box centre; a weighted cross-entropy (train.object_weight) makes the few object cells count
against the many background cells, and the score threshold that decoding ships with is the one
with the best validation F1. Decoding and the centroid F1 live in `edgedistill.image_frontend`,
shared with the exporter and `edgedistill predict`.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from edgedistill.boxes import Detections
from edgedistill.dataset import Dataset, Sample, write_atomic
from edgedistill.errors import EdgedistillError
from edgedistill.image_frontend import BACKGROUND, HeatmapDecoding, ImageFrontEnd, centroid_f1
from edgedistill.images import load_image
from edgedistill.models import default_device
from edgedistill.recipe import DetectorTrainSettings
from trainers.fitting import fit, on_device_of
from trainers.mobilenet import MobileNetV2Stride8

STRIDE = 8  # the backbone's output is 1/8 of the input
HEAD_CHANNELS = 32
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # score thresholds tried on validation data


class FomoNet(nn.Module):
    """Input: images (batch, size, size, channels) float, channels-last as the device holds them.
    Output: logits (batch, size/8, size/8, 1 + classes), channel 0 the background."""

    def __init__(self, num_classes: int, width: float = 0.35, channels: int = 3) -> None:
        super().__init__()
        self.backbone = MobileNetV2Stride8(channels, width)
        self.head = nn.Sequential(nn.Conv2d(self.backbone.out_channels, HEAD_CHANNELS, 1), nn.ReLU6(),
                                  nn.Conv2d(HEAD_CHANNELS, num_classes + 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


@dataclass
class DetectionArrays:
    """Images with their labelled objects, in memory: what the flow loads from a dataset version."""

    images: list[np.ndarray]  # each (h, w, 3) uint8 RGB, any size
    objects: list[Detections]  # each image's, in its pixels; class ids index the labels (no background),
    # scores are the labeler's confidence in each box (people's: 1)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, keep: list[int]) -> DetectionArrays:
        return DetectionArrays([self.images[i] for i in keep], [self.objects[i] for i in keep])


@dataclass
class PreparedSet:
    """DetectionArrays at model input size: pixels after resizing, object centres in input pixels."""

    pixels: np.ndarray  # (n, size, size, channels) uint8
    centres: list[np.ndarray]  # each (objects, 2) float: x, y in input pixels
    classes: list[np.ndarray]
    scores: list[np.ndarray]  # each (objects,): the target probability of each object's class in its cell

    def __len__(self) -> int:
        return len(self.pixels)

    def truth(self) -> list[list[tuple[int, float, float]]]:
        return [[(int(c), float(x), float(y)) for c, (x, y) in zip(classes, centres)]
                for classes, centres in zip(self.classes, self.centres)]


@dataclass
class FomoTrainResult:
    model: FomoNet
    frontend: ImageFrontEnd
    decoding: HeatmapDecoding
    best_epoch: int
    epochs_run: int
    val_metrics: dict
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    seconds_per_epoch: float = 0.0


def image_frontend_for(settings: DetectorTrainSettings) -> ImageFrontEnd:
    if settings.input_size % STRIDE:
        raise EdgedistillError(f"train.input_size {settings.input_size} is not a multiple of {STRIDE}",
                               f"use a multiple of {STRIDE}, e.g. 96 or 128")
    return ImageFrontEnd(size=settings.input_size, channels=1 if settings.grayscale else 3)


def detection_arrays(dataset: Dataset, samples: list[Sample], labels: list[str]) -> DetectionArrays:
    """Load each sample's image and the boxes of its labels whose class is in `labels`."""
    return DetectionArrays([load_image(path) for path in dataset.media_paths(samples)],
                           [Detections.from_labels(sample.labels, labels) for sample in samples])


def prepare(data: DetectionArrays, frontend: ImageFrontEnd) -> PreparedSet:
    """Resize every image once, exactly as `predict` will, and move box centres into input pixels."""
    pixels, centres = [], []
    for image, objects in zip(data.images, data.objects):
        resized, placement = frontend.pixels(image)
        x, y = placement.to_input(objects.centres[:, 0], objects.centres[:, 1])
        pixels.append(resized)
        centres.append(np.stack([x, y], axis=1))
    stacked = np.stack(pixels) if pixels else np.zeros((0, *frontend.input_shape), np.uint8)
    return PreparedSet(stacked, centres, [objects.class_ids for objects in data.objects],
                       [objects.scores.astype(np.float32) for objects in data.objects])


def heatmap_targets(centres: np.ndarray, classes: np.ndarray, scores: np.ndarray, grid: int, num_classes: int,
                    stride: int = STRIDE) -> np.ndarray:
    """(grid, grid, 1 + classes) target probabilities: background everywhere but in the cell holding each
    centre, where the object's class gets its score and the background the rest."""
    target = np.zeros((grid, grid, num_classes + 1), np.float32)
    target[..., 0] = 1.0
    for (x, y), class_index, score in zip(centres, classes, scores):
        column, row = int(x // stride), int(y // stride)
        if 0 <= column < grid and 0 <= row < grid:
            target[row, column] = 0.0
            target[row, column, [0, class_index + 1]] = 1.0 - score, score
    return target


def _augment(pixels: np.ndarray, centres: list[np.ndarray], rng: np.random.Generator,
             pad_value: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Horizontal flips, shifts up to 1/8 of the size, and brightness/contrast jitter."""
    size = pixels.shape[1]
    out = pixels.astype(np.float32)
    moved = []
    for i in range(len(out)):
        points = centres[i].copy()
        if rng.random() < 0.5:
            out[i] = out[i, :, ::-1]
            points[:, 0] = size - points[:, 0]
        dx, dy = (int(v) for v in rng.integers(-size // 8, size // 8 + 1, 2))
        out[i] = np.roll(out[i], (dy, dx), axis=(0, 1))
        # what rolled round from the far edge is not image: fill it like letterbox padding
        if dy:
            out[i, slice(0, dy) if dy > 0 else slice(dy, None)] = pad_value
        if dx:
            out[i, :, slice(0, dx) if dx > 0 else slice(dx, None)] = pad_value
        points += (dx, dy)
        contrast, brightness = rng.uniform(0.7, 1.3), rng.uniform(-30, 30)
        out[i] = (out[i] - 128) * contrast + 128 + brightness
        moved.append(points)
    return np.clip(out, 0, 255), moved


def _mosaic(data: PreparedSet, rng: np.random.Generator,
            count: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """`count` images, each four random training images side by side at half size: many small objects
    on natural backgrounds, as in crowd photos, without a pasted seam."""
    size, channels = data.pixels.shape[1], data.pixels.shape[3]
    half = size // 2
    pixels = np.empty((count, size, size, channels), np.uint8)
    centres, classes, scores = [], [], []
    for i in range(count):
        picks = rng.integers(0, len(data), 4)
        moved = []
        for quarter, j in enumerate(picks):
            top, left = quarter // 2 * half, quarter % 2 * half
            small = cv2.resize(data.pixels[j], (half, half), interpolation=cv2.INTER_AREA)
            pixels[i, top:top + half, left:left + half] = small.reshape(half, half, channels)
            moved.append(data.centres[j] / 2 + (left, top))
        centres.append(np.concatenate(moved).reshape(-1, 2))
        classes.append(np.concatenate([data.classes[j] for j in picks]))
        scores.append(np.concatenate([data.scores[j] for j in picks]))
    return pixels, centres, classes, scores


def heatmaps(model: nn.Module, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Float inputs (n, size, size, channels) -> probabilities (n, grid, grid, 1 + classes)."""
    model.eval()
    with torch.no_grad():
        return np.concatenate([
            torch.softmax(model(on_device_of(model, inputs[i:i + batch_size])), dim=-1).cpu().numpy()
            for i in range(0, len(inputs), batch_size)
        ])


def evaluate_fomo(model: nn.Module, data: PreparedSet, frontend: ImageFrontEnd, decoding: HeatmapDecoding,
                  labels: list[str], centroid_distance: float) -> dict:
    """Centroid F1 (per class and overall) on prepared data, distances in input pixels."""
    probabilities = heatmaps(model, frontend.normalise(data.pixels))
    found = [decoding.decode(p) for p in probabilities]
    return centroid_f1(data.truth(), found, labels, radius=centroid_distance * frontend.size)


def evaluate_held_out(model: nn.Module, test: DetectionArrays, source_of: list[str], labels: list[str],
                      frontend: ImageFrontEnd, decoding: HeatmapDecoding, centroid_distance: float,
                      sources: tuple[str, ...]) -> tuple[dict, dict[str, dict]]:
    """Centroid F1 on the test images, and on those of each source (`source_of`: each image's; e.g.
    composites, photos; {} for a source with none)."""
    def figures(arrays: DetectionArrays) -> dict:
        if not arrays.images:
            return {}
        return evaluate_fomo(model, prepare(arrays, frontend), frontend, decoding, labels, centroid_distance)

    return figures(test), {source: figures(test.subset([i for i, s in enumerate(source_of) if s == source]))
                           for source in sources}


def at_best_threshold(model: nn.Module, data: PreparedSet, frontend: ImageFrontEnd, decoding: HeatmapDecoding,
                      labels: list[str], centroid_distance: float) -> dict:
    """Centroid F1 metrics on `data` at the score threshold (of THRESHOLDS) that gives the best F1,
    under "threshold". The object-cell weight makes the heat map run hot, so 0.5 is rarely the best
    cut; train_fomo ships the threshold chosen on validation data in the decoding."""
    probabilities = heatmaps(model, frontend.normalise(data.pixels))
    tried = []
    for threshold in THRESHOLDS:
        candidate = dataclasses.replace(decoding, threshold=threshold)
        metrics = centroid_f1(data.truth(), [candidate.decode(p) for p in probabilities], labels,
                              radius=centroid_distance * frontend.size)
        tried.append({**metrics, "threshold": threshold})
    return max(tried, key=lambda metrics: metrics["f1"])  # the first (lowest threshold) of equals


def train_fomo(train: DetectionArrays, val: DetectionArrays, labels: list[str], settings: DetectorTrainSettings,
               checkpoint_dir: Path, progress: Callable[[int, int, dict], None] | None = None) -> FomoTrainResult:
    """Train FOMO with early stopping on validation centroid F1 (at the best score threshold).

    A checkpoint is written after every epoch; a rerun with the same checkpoint folder picks up
    at the next epoch instead of starting over.
    """
    if len(train) == 0 or len(val) == 0:
        raise EdgedistillError("there is no training or no validation data for the detector",
                               "generate or import more images: each split needs some")
    if not labels:
        raise EdgedistillError("the detector has no classes", "name at least one class in the recipe")
    if not any(len(objects) for objects in val.objects):
        raise EdgedistillError("the validation images hold no labelled object, so no epoch can be judged (every model "
                               "would score as perfect)", "give the labeler more images with the recipe's classes in "
                               "them, lower autolabel.threshold, or give compositing a folder of cut-outs")
    frontend = image_frontend_for(settings)
    decoding = HeatmapDecoding(stride=STRIDE)
    if not settings.soft_labels:  # every labelled box a certain object, whatever its labeler's score
        train = DetectionArrays(train.images, [Detections(o.boxes, np.ones(len(o)), o.class_ids) for o in train.objects])
    train_set = prepare(train, frontend)
    val_set = prepare(val, frontend)
    torch.manual_seed(settings.seed)
    device = default_device()
    model = FomoNet(len(labels), width=settings.width, channels=frontend.channels).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    steps = settings.epochs * -(-len(train_set) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.learning_rate, total_steps=steps)
    loss_fn = CellLoss(torch.tensor([1.0] + [settings.object_weight] * len(labels), device=device),
                       settings.hard_negative_weight)

    def validate() -> tuple[float, dict]:
        metrics = at_best_threshold(model, val_set, frontend, decoding, labels, settings.centroid_distance)
        return metrics["f1"], metrics

    fitted = fit(model, optimizer, schedule, np.random.default_rng(settings.seed), epochs=settings.epochs,
                 patience=settings.patience, checkpoint_dir=checkpoint_dir,
                 train_epoch=lambda rng: _train_epoch(model, train_set, frontend, optimizer, schedule, loss_fn, rng,
                                                      settings.batch_size, settings.mosaic),
                 validate=validate, progress=progress)
    decoding = dataclasses.replace(decoding, threshold=fitted.best_metrics.get("threshold", decoding.threshold))
    return FomoTrainResult(model=model.cpu(), frontend=frontend, decoding=decoding, best_epoch=fitted.best_epoch,
                           epochs_run=fitted.epochs_run, val_metrics=fitted.best_metrics, history=fitted.history,
                           seconds=fitted.seconds,
                           seconds_per_epoch=fitted.seconds / fitted.epochs_here if fitted.epochs_here else 0.0)


@dataclass
class CellLoss:
    """Cross-entropy per grid cell against target probabilities, weighted by the cell's classes (object
    cells against the many background cells), with the pure background cells the student currently takes
    for an object (argmax not background: its false alarms) weighing `hard_negative_weight` times more.
    With one-hot targets and weight 1 it is nn.CrossEntropyLoss(weight=class_weights)."""

    class_weights: torch.Tensor
    hard_negative_weight: float = 1.0

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1, logits.shape[-1])
        weights = targets @ self.class_weights
        if self.hard_negative_weight != 1.0:
            false_alarms = (targets[:, 0] == 1.0) & (logits.detach().argmax(dim=-1) != 0)
            weights = torch.where(false_alarms, weights * self.hard_negative_weight, weights)
        cross_entropy = -(targets * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
        return (cross_entropy * weights).sum() / weights.sum()


def _train_epoch(model: FomoNet, data: PreparedSet, frontend: ImageFrontEnd, optimizer, schedule,
                 loss_fn: CellLoss, rng: np.random.Generator, batch_size: int, mosaic: float = 0.0) -> float:
    model.train()
    order = rng.permutation(len(data))
    total = 0.0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        pixels = data.pixels[batch]
        centres, classes, scores = ([part[i] for i in batch] for part in (data.centres, data.classes, data.scores))
        if mosaic and (count := int(rng.binomial(len(batch), mosaic))):
            made = _mosaic(data, rng, count)
            pixels = np.concatenate([made[0], pixels[count:]])
            centres, classes, scores = made[1] + centres[count:], made[2] + classes[count:], made[3] + scores[count:]
        pixels, centres = _augment(pixels, centres, rng, frontend.pad_value)
        logits = model(on_device_of(model, frontend.normalise(pixels)))
        grid, num_classes = logits.shape[1], logits.shape[-1] - 1
        targets = np.stack([heatmap_targets(*objects, grid, num_classes) for objects in zip(centres, classes, scores)])
        loss = loss_fn(logits, on_device_of(model, targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        total += float(loss.detach()) * len(batch)
    return total / len(data)


def save_fomo(result: FomoTrainResult, path: Path, labels: list[str], settings: DetectorTrainSettings) -> None:
    buffer = io.BytesIO()
    torch.save({"state_dict": result.model.state_dict(), "labels": labels, "width": settings.width,
                "frontend": result.frontend.spec(), "decoding": result.decoding.spec()}, buffer)
    write_atomic(Path(path), buffer.getvalue())


def load_fomo(path: Path) -> tuple[FomoNet, list[str], ImageFrontEnd, HeatmapDecoding]:
    saved = torch.load(path, weights_only=False)
    frontend = ImageFrontEnd.from_spec(saved["frontend"])
    model = FomoNet(len(saved["labels"]), width=saved["width"], channels=frontend.channels)
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model, saved["labels"], frontend, HeatmapDecoding.from_spec(saved["decoding"])


def output_labels(labels: list[str]) -> list[str]:
    """The heat map's channel order: background first, then the classes."""
    return [BACKGROUND, *labels]


def model_inputs(data: DetectionArrays, frontend: ImageFrontEnd) -> np.ndarray:
    """Float model inputs (n, size, size, channels) of each image: calibration for int8 export."""
    if len(data) == 0:
        return np.zeros((0, *frontend.input_shape), np.float32)
    return np.stack([frontend(image)[0] for image in data.images])
