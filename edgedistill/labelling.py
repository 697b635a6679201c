"""The labeler protocol and the one driver that runs any labeler over a dataset in shards.

A labeler (OWL-ViT/OWLv2, a teacher detector, Segment Anything, the Whisper check) is a small
picklable object built from recipe settings. The driver ships it to wherever the shards run (this
process, worker processes, or a Dask cluster), loads its
model once per worker, and keeps each finished shard on disk (edgedistill/shards.py), so a crash
or Ctrl-C loses only the shards in flight and a rerun labels only what is missing.
"""

from __future__ import annotations

import functools
import pickle
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgedistill.boxes import Detections, clip_boxes, non_max_suppression, xyxy_to_xywh
from edgedistill.dataset import Dataset, Label, LabelSource, Sample
from edgedistill.images import load_image
from edgedistill.recipe import AutoLabelSettings, DetectionClass
from edgedistill.shards import ShardOutput, ShardRun, run_shards


class Labeler(ABC):
    """Puts labels on samples. Built unloaded from settings (cheap to pickle); `load` runs once per
    worker and sets `source`: the labeler's name, model id and version, as its labels record them.

    Most labelers label the samples they are given (`run_labeler`). A miner's work is instead pieces of
    something outside the dataset (stretches of long recordings, labelers/recordings.py), from which
    `label` cuts new, labelled samples; it runs with `label_in_shards` on the same driver."""

    shard_size: int = 32  # samples per resumable shard
    source: LabelSource | None = None

    @abstractmethod
    def load(self) -> None:
        """Load the model and set `source`."""

    def wants(self, sample: Sample) -> bool:
        """Whether this labeler labels the sample; the others pass through unchanged."""
        return sample.kind == "image"

    def plan(self, samples: list[Sample]) -> list[list[Sample]]:
        """The samples cut into shards (a labeler may group them as its model wants them)."""
        return [samples[i:i + self.shard_size] for i in range(0, len(samples), self.shard_size)]

    @abstractmethod
    def label(self, dataset: Dataset, samples: list[Sample]) -> list[Sample]:
        """One shard's samples, labelled (in the same order)."""


@dataclass
class Labelled:
    samples: list[Sample]  # every sample given, labelled where the labeler wants it, in the order given
    per_second: float  # samples labelled in this run per second of wall time (0 when all were on disk)


def run_labeler(labeler: Labeler, dataset: Dataset, samples: list[Sample], work_dir: Path,
                progress: Callable[[int, int], None] | None = None, workers: int = 1) -> Labelled:
    """Every sample the labeler wants, labelled, in shards kept in `work_dir`; the rest unchanged.

    `workers` processes share the shards when no flow task runner is set; 1 (the default) labels
    in this process, with the model loaded once and every core given to it.
    """
    shards = labeler.plan([s for s in samples if labeler.wants(s)])
    started = time.perf_counter()
    run = label_in_shards(labeler, dataset, shards, work_dir, progress, workers)
    labelled_now = sum(len(shards[index]) for index in run.ran)
    done = {s.id: s for output in run.outputs for s in output.samples}
    return Labelled([done.get(s.id, s) for s in samples],
                    labelled_now / (time.perf_counter() - started) if labelled_now else 0.0)


def label_in_shards(labeler: Labeler, dataset: Dataset, shards: list[list], work_dir: Path,
                    progress: Callable[[int, int], None] | None = None, workers: int = 1) -> ShardRun:
    """The labeler over its work as `plan` cut it, on the shard driver: shards found in `work_dir` are
    kept, the missing ones run (here, on `workers` processes, or the flow's task runner) and are kept
    there once done. Progress counts pieces of work (samples, for a labeler of samples)."""
    return run_shards(shards, functools.partial(label_shard, labeler, dataset.location), work_dir, 1, workers,
                      progress and _progress_in_samples(progress, [len(shard) for shard in shards]))


def _progress_in_samples(progress: Callable[[int, int], None], sizes: list[int]) -> Callable[[int, int], None]:
    """The driver counts shards done; people count samples."""
    ends = np.cumsum([0, *sizes])

    def report(shards_done: int, _: int) -> None:
        progress(int(ends[shards_done]), int(ends[-1]))

    return report


_loaded: dict[str, Labeler] = {}  # per worker process: each labeler's model is loaded once


def loaded(labeler: Labeler) -> Labeler:
    """The labeler with its model loaded in this process (loaded the first time it is asked for)."""
    key = f"{type(labeler).__module__}.{type(labeler).__qualname__}{vars(labeler)!r}"  # unloaded: its settings
    if key not in _loaded:
        copy = pickle.loads(pickle.dumps(labeler))  # the caller's object stays unloaded and light to ship
        copy.load()
        _loaded[key] = copy
    return _loaded[key]


def label_shard(labeler: Labeler, location: str, shard: list[list]) -> ShardOutput:
    """A shard task: runs wherever the driver sends it (a picklable top-level function)."""
    worker = loaded(labeler)
    dataset = Dataset.open(location)
    return ShardOutput([sample for samples in shard for sample in worker.label(dataset, samples)])


# -- box labelers ----------------------------------------------------------------------------------
class BoxLabeler(Labeler):
    """A detector that boxes the ontology's classes in images (OWL, a teacher): it labels an image
    sample by replacing the boxes it made before; other labels (people's, compositing's) stay."""

    def __init__(self, ontology: dict[str, DetectionClass], settings: AutoLabelSettings):
        self.ontology, self.settings = ontology, settings

    @abstractmethod
    def boxes(self, images: list[np.ndarray]) -> list[list[Label]]:
        """Each RGB image's labels: the same whether the image is a dataset's or a real photo."""

    def label(self, dataset: Dataset, samples: list[Sample]) -> list[Sample]:
        done = []
        for start in range(0, len(samples), self.settings.batch_size):
            batch = samples[start:start + self.settings.batch_size]
            found = self.boxes([load_image(path) for path in dataset.media_paths(batch)])
            for sample, labels in zip(batch, found):
                kept = [label for label in sample.labels if label.source.labeler != self.source.labeler]
                done.append(sample.model_copy(update={"labels": kept + labels}))
        return done

    def label_images(self, images: list[np.ndarray]) -> list[list[Label]]:
        """The labels of each RGB image (e.g. real photos the student is measured on), batch by batch."""
        worker = loaded(self)
        size = self.settings.batch_size
        return [labels for start in range(0, len(images), size) for labels in worker.boxes(images[start:start + size])]

    def select(self, found: Detections, class_names: np.ndarray, width: int, height: int) -> list[Label]:
        """Detections in an image's pixels, each named an ontology class ("" for none) -> labels: each
        class's threshold, boxes of no area dropped, then NMS (per class unless class-agnostic)."""
        boxes, scores = clip_boxes(found.boxes, width, height), found.scores
        keep = np.flatnonzero(self.confident(scores, class_names) & (xyxy_to_xywh(boxes)[:, 2:].min(axis=1) > 0))
        groups = None if self.settings.class_agnostic_nms else np.unique(class_names[keep], return_inverse=True)[1]
        keep = keep[non_max_suppression(boxes[keep], scores[keep], self.settings.nms_iou, groups)]
        return [Label(class_name=str(class_names[i]), box=tuple(round(float(v), 2) for v in xyxy_to_xywh(boxes[i])[0]),
                      score=round(float(scores[i]), 6), source=self.source) for i in keep]

    def confident(self, scores: np.ndarray, class_names: np.ndarray) -> np.ndarray:
        """Whether each score reaches its class's threshold (the class's own, else the recipe's)."""
        thresholds = np.array([self._threshold(name) if name else np.inf for name in class_names])
        return scores >= thresholds

    def _threshold(self, class_name: str) -> float:
        threshold = self.ontology[class_name].threshold
        return self.settings.threshold if threshold is None else threshold
