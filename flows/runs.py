"""What a run keeps and where: the run folder, the record training leaves for export, the newest version.

The pipeline modules (flows/keyword_spotting.py, flows/detection.py) and the flow that runs them
(flows/run.py) all read these; they live apart from the flow so that no module imports its importer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from edgedistill.bundle import Manifest, load_bundle
from edgedistill.dataset import Dataset, VersionInfo, write_atomic
from edgedistill.errors import EdgedistillError
from edgedistill.openai_api import spent
from edgedistill.recipe import AnyRecipe
from trainers.yolo import YoloModel

Progress = Callable[[int, int], None] | None


@dataclass(frozen=True)
class RunPaths:
    """Where one run keeps things: under its --out folder, and the dataset wherever the recipe says."""

    out: Path
    dataset_location: str | None = None  # the recipe's `dataset:` (a folder or an fsspec URL)

    @classmethod
    def of(cls, recipe: AnyRecipe, out: str | Path) -> "RunPaths":
        return cls(Path(out), recipe.dataset)

    @property
    def dataset(self) -> str:
        return self.dataset_location or str(self.out / "dataset")

    @property
    def model_dir(self) -> Path:
        return self.out / "model"

    @property
    def model(self) -> Path:
        return self.model_dir / "model.pt"

    @property
    def trained(self) -> Path:
        return self.model_dir / "trained.json"

    @property
    def bundle(self) -> Path:
        """The promoted bundle, the one to ship: the newest one as good as the one before it (export.promote)."""
        return self.out / "bundle"

    def bundle_of(self, version: str) -> Path:
        """Every bundle a run made, by the dataset version it learned from, promoted or not."""
        return self.out / "bundles" / version

    def bundle_made(self, version: str, recipe: AnyRecipe) -> Manifest | None:
        """The whole bundle an earlier run made from this version with this very recipe, promoted if it was to be,
        if there is one: a rerun with unchanged inputs exports nothing again (delete it to export it anew)."""
        made = _whole_bundle(self.bundle_of(version))
        if made is None or made.recipe != recipe.model_dump(mode="json"):
            return None
        if made.metrics.get("promotion", {}).get("promote"):  # and a run stopped before it was copied: not done
            promoted = _whole_bundle(self.bundle)
            return made if promoted is not None and promoted.created == made.created else None
        return made


def _whole_bundle(folder: Path) -> Manifest | None:
    try:
        return load_bundle(folder)
    except EdgedistillError:  # none, or not whole
        return None


@dataclass
class TrainedModel:
    """What training leaves for export: the model, the version it learned from, its test figures."""

    path: Path
    version: str
    float_metrics: dict  # on the whole held-out (test) split
    best_epoch: int
    epochs_run: int
    seconds: float
    samples_per_second: float
    # float figures per source: composites, photos (detection); synthetic, recordings (keywords)
    held_out: dict[str, dict] = field(default_factory=dict)
    yolo: YoloModel | None = None  # detection with train.yolo: the larger model

    def save(self, paths: RunPaths) -> None:
        write_atomic(paths.trained, json.dumps(asdict(self), indent=2, default=str).encode())

    @classmethod
    def load(cls, paths: RunPaths) -> TrainedModel:
        if not paths.trained.exists():
            raise EdgedistillError(f"no trained model in {paths.model_dir}", "run `edgedistill train RECIPE` first")
        record = json.loads(paths.trained.read_text())
        if "extra" in record:  # a record from before the typed fields: train again to write one
            raise EdgedistillError(f"{paths.trained} was written by an older edgedistill",
                                   "run `edgedistill train RECIPE` again (it resumes from its checkpoint)")
        yolo = record.pop("yolo")
        return cls(**(record | {"path": Path(record["path"])}),
                   yolo=yolo and YoloModel(Path(yolo["onnx"]), Path(yolo["program"]), yolo["metrics"]))


INPUT_CHANGES = ("photos_added", "photos_removed", "recordings_mined_now")  # what the input stages report


def dataset_ref(dataset: Dataset, version: VersionInfo) -> dict:
    """What a bundle says of the dataset version it was trained on: its lineage (each stage's version, with
    what changed in the input when a run found new photos or recordings) and what its API calls cost."""
    lineage = []
    for made in dataset.lineage(version):
        step = {"stage": made.stage, "version": made.id, "samples": made.counts.get("samples")}
        report = (dataset.report(made) or {}) if made.stage in ("sources", "recordings") else {}
        lineage.append(step | {name: report[name] for name in INPUT_CHANGES if name in report})
    ref = {"path": dataset.location, "version": version.id, "counts": version.counts, "lineage": lineage}
    return ref | ({"api_usage": usage} if (usage := spent(dataset, version)) else {})


def newest(dataset: Dataset, *stages: str, missing_ok: bool = False) -> VersionInfo | None:
    """The newest version one of `stages` made, for the one-stage-at-a-time commands (None, with
    `missing_ok`, when there is none)."""
    for version in reversed(dataset.info.versions):
        if version.stage in stages:
            return version
    if missing_ok:
        return None
    raise EdgedistillError(f"dataset {dataset.location} has no {' or '.join(stages)} version yet",
                           "run the stages before it first (`edgedistill generate`, then `label`)")
