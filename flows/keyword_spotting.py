"""The keyword-spotting pipeline: recipe -> dataset versions -> model -> bundle.

Each step is a plain function (the CLI runs them one at a time, tests call them directly); the
Prefect flow at the bottom wires them into tasks. Every step is resumable: a dataset version
that exists is found by its stage key and not made again, unfinished stages keep their finished
shards, training resumes from its last epoch, and the bundle is written all at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgedistill.bundle import Manifest
from edgedistill.dataset import Dataset, MediaPolicy, OntologyClass, VersionInfo, stage_key
from edgedistill.errors import EdgedistillError
from edgedistill.frontend import MfccFrontEnd
from edgedistill.recipe import KeywordSpottingRecipe, load_recipe

Progress = Callable[[int, int], None] | None


@dataclass(frozen=True)
class RunPaths:
    """Where one run keeps things, under its --out folder."""

    out: Path

    @property
    def dataset(self) -> Path:
        return self.out / "dataset"

    @property
    def model_dir(self) -> Path:
        return self.out / "model"

    @property
    def model(self) -> Path:
        return self.model_dir / "model.pt"

    @property
    def bundle(self) -> Path:
        return self.out / "bundle"


def frontend_for(recipe: KeywordSpottingRecipe) -> MfccFrontEnd:
    settings = recipe.frontend
    return MfccFrontEnd(sample_rate=recipe.sample_rate, clip_samples=round(recipe.sample_rate * recipe.clip_seconds),
                        frame_length=settings.frame_length, hop_length=settings.hop_length,
                        mel_filters=settings.mel_filters, mfcc=settings.mfcc,
                        f_min=settings.f_min, f_max=settings.f_max)


def open_dataset(recipe: KeywordSpottingRecipe, root: Path) -> Dataset:
    ontology = [OntologyClass(name=name, prompts=[name]) for name in recipe.classes]
    media = MediaPolicy(sample_rate=recipe.sample_rate, clip_seconds=recipe.clip_seconds)
    return Dataset.create(root, recipe.name, "keyword_spotting", ontology, media)


def _params(recipe: KeywordSpottingRecipe, *sections: str) -> dict:
    """The recipe fields a step depends on: its stage key changes when, and only when, they do."""
    base = {"keywords": recipe.keywords, "sample_rate": recipe.sample_rate,
            "clip_seconds": recipe.clip_seconds, "seed": recipe.seed}
    return base | {name: getattr(recipe, name).model_dump(mode="json") for name in sections}


def synthesize_step(recipe: KeywordSpottingRecipe, dataset: Dataset, progress: Progress = None) -> VersionInfo:
    from generators.synthesis import synthesize_speech

    def synthesize(_, work):
        result = synthesize_speech(dataset, recipe, work, progress)
        report = {"engine_counts": result.engine_counts, "clips_per_second": result.clips_per_second,
                  "failures": [f.__dict__ for f in result.failures],
                  "duplicates_dropped": result.duplicates_dropped}
        return result.samples, report

    return dataset.derive(None, "synthesize", _params(recipe, "speech"), synthesize)


def check_step(recipe: KeywordSpottingRecipe, dataset: Dataset, parent: VersionInfo,
               progress: Progress = None) -> VersionInfo:
    from labelers.whisper_check import check_speech

    def check(samples, work):
        result = check_speech(dataset, samples, recipe.whisper_check, work, progress)
        report = {"voices": result.voices, "engines_dropped": result.engines_dropped,
                  "failed_groups": result.failed_groups, "clips_per_second": result.clips_per_second,
                  "kept": len(result.kept), "dropped": len(result.dropped)}
        return result.kept, report

    return dataset.derive(parent, "whisper_check", _params(recipe, "whisper_check"), check)


def split_step(recipe: KeywordSpottingRecipe, dataset: Dataset, parent: VersionInfo) -> VersionInfo:
    from trainers.splits import split_by_group

    train = recipe.train
    params = {"val_share": train.val_share, "test_share": train.test_share, "seed": train.seed}
    return dataset.derive(parent, "split", params,
                          lambda samples, _: split_by_group(samples, train.val_share, train.test_share, train.seed))


def augment_step(recipe: KeywordSpottingRecipe, dataset: Dataset, parent: VersionInfo,
                 progress: Progress = None) -> VersionInfo:
    from generators.augment import augment_samples

    return dataset.derive(parent, "augment", _params(recipe, "augment"),
                          lambda samples, work: augment_samples(dataset, samples, recipe.augment, recipe.sample_rate,
                                                                recipe.seed, work, progress))


def training_set_step(recipe: KeywordSpottingRecipe, dataset: Dataset, checked: VersionInfo,
                      progress: Progress = None) -> VersionInfo:
    """Split the checked clips by voice, then augment them: the version training reads."""
    return augment_step(recipe, dataset, split_step(recipe, dataset, checked), progress)


def prepare_dataset(recipe: KeywordSpottingRecipe, paths: RunPaths, progress: Progress = None) -> VersionInfo:
    """Generate, check, split and augment."""
    dataset = open_dataset(recipe, paths.dataset)
    version = synthesize_step(recipe, dataset, progress)
    version = check_step(recipe, dataset, version, progress)
    return training_set_step(recipe, dataset, version, progress)


def newest(dataset: Dataset, stage: str) -> VersionInfo:
    """The newest version a stage made, for the CLI's one-stage-at-a-time commands."""
    for version in reversed(dataset.info.versions):
        if version.stage == stage:
            return version
    raise EdgedistillError(f"dataset {dataset.root} has no {stage} version yet",
                           {"synthesize": "run `edgedistill generate RECIPE` first",
                            "whisper_check": "run `edgedistill label RECIPE` first"}.get(stage, ""))


@dataclass
class TrainedModel:
    path: Path
    float_metrics: dict
    best_epoch: int
    epochs_run: int
    seconds: float
    samples_per_second: float


def train_step(recipe: KeywordSpottingRecipe, dataset: Dataset, version: VersionInfo, paths: RunPaths,
               progress: Callable[[int, int, dict], None] | None = None) -> TrainedModel:
    import torch

    from trainers.keyword_spotter import clip_features, evaluate, save_model, train_keyword_spotter

    torch.set_num_threads(1)  # faster than 2 for this small CNN on these CPUs (OFFLINE.md)
    frontend = frontend_for(recipe)
    samples = [s for s in dataset.samples(version.id) if s.review.status != "rejected"]
    data = {split: clip_features(dataset, [s for s in samples if s.split == split], frontend, recipe.classes)
            for split in ("train", "val", "test")}
    # keyed by data and settings: a rerun of the same training resumes, a changed one starts fresh
    checkpoints = paths.model_dir / "checkpoints" / stage_key(version.id, "train", recipe.train.model_dump())
    checkpoints.mkdir(parents=True, exist_ok=True)
    result = train_keyword_spotter(data["train"], data["val"], recipe.classes, recipe.train, checkpoints, progress)
    save_model(result.model, paths.model, recipe.classes, recipe.train)
    return TrainedModel(path=paths.model, float_metrics=evaluate(result.model, data["test"], recipe.classes),
                        best_epoch=result.best_epoch, epochs_run=result.epochs_run, seconds=result.seconds,
                        samples_per_second=result.samples_per_second)


def export_step(recipe: KeywordSpottingRecipe, dataset: Dataset, version: VersionInfo, trained: TrainedModel,
                paths: RunPaths, progress: Callable[[str], None] | None = None) -> Manifest:
    import numpy as np

    from exporters.bundle import export_keyword_bundle
    from trainers.keyword_spotter import clip_features, load_model

    frontend = frontend_for(recipe)
    model, labels = load_model(trained.path)
    samples = [s for s in dataset.samples(version.id) if s.review.status != "rejected"]
    train = [s for s in samples if s.split == "train"]
    picks = np.random.default_rng(recipe.seed).permutation(len(train))[: recipe.export.calibration_samples]
    calibration = clip_features(dataset, [train[i] for i in sorted(picks)], frontend, labels)
    test = clip_features(dataset, [s for s in samples if s.split == "test"], frontend, labels)
    return export_keyword_bundle(
        model, out_dir=paths.bundle, name=recipe.name, labels=labels, frontend=frontend,
        calibration=calibration.features, test_features=test.features, test_labels=test.targets,
        float_metrics=trained.float_metrics, settings=recipe.export,
        dataset_ref={"path": str(dataset.root.resolve()), "version": version.id, "counts": version.counts},
        recipe=recipe.model_dump(mode="json"), progress=progress)


# -- Prefect ---------------------------------------------------------------------------------
def keyword_spotting_flow_fn():
    """Build the Prefect flow lazily, so importing this module does not import Prefect.

    Tasks take and return small values (paths, version ids). Prefect's own result caching is
    off: the dataset is the cache, and each step finds the version it made before.
    """
    from prefect import flow, task
    from prefect.artifacts import create_markdown_artifact
    from prefect.cache_policies import NO_CACHE

    from flows.progress import progress_bar
    from flows.review import review_step

    def context(recipe_path: str, out: str) -> tuple[KeywordSpottingRecipe, RunPaths, Dataset]:
        recipe, paths = load_recipe(recipe_path), RunPaths(Path(out))
        return recipe, paths, open_dataset(recipe, paths.dataset)

    @task(name="synthesize", cache_policy=NO_CACHE, retries=1)
    def synthesize(recipe_path: str, out: str) -> str:
        recipe, _, dataset = context(recipe_path, out)
        with progress_bar("synthesize") as update:
            return synthesize_step(recipe, dataset, update).id

    @task(name="whisper-check", cache_policy=NO_CACHE, retries=1)
    def check(recipe_path: str, out: str, version_id: str) -> str:
        recipe, _, dataset = context(recipe_path, out)
        with progress_bar("whisper check") as update:
            return check_step(recipe, dataset, dataset.version(version_id), update).id

    @task(name="split-and-augment", cache_policy=NO_CACHE, retries=1)
    def training_set(recipe_path: str, out: str, version_id: str) -> str:
        recipe, _, dataset = context(recipe_path, out)
        with progress_bar("augment") as update:
            return training_set_step(recipe, dataset, dataset.version(version_id), update).id

    @task(name="train", cache_policy=NO_CACHE)
    def train(recipe_path: str, out: str, version_id: str) -> dict:
        recipe, paths, dataset = context(recipe_path, out)
        with progress_bar("train") as update:
            trained = train_step(recipe, dataset, dataset.version(version_id), paths,
                                 lambda epoch, total, _: update(epoch, total))
        return trained.__dict__ | {"path": str(trained.path)}

    @task(name="export", cache_policy=NO_CACHE)
    def export(recipe_path: str, out: str, version_id: str, trained: dict) -> str:
        recipe, paths, dataset = context(recipe_path, out)
        model = TrainedModel(**(trained | {"path": Path(trained["path"])}))
        manifest = export_step(recipe, dataset, dataset.version(version_id), model, paths)
        create_markdown_artifact(key=f"{recipe.name.lower().replace('_', '-')}-bundle",
                                 markdown=summary_markdown(manifest, paths.bundle))
        return str(paths.bundle)

    @flow(name="keyword-spotting", log_prints=True)
    def keyword_spotting(recipe_path: str, out: str) -> str:
        recipe = load_recipe(recipe_path)
        version_id = check(recipe_path, out, synthesize(recipe_path, out))
        if recipe.review.enabled:  # pauses the run until people have reviewed the doubtful clips
            version_id = review_step(str(RunPaths(Path(out)).dataset), recipe.review)
        version_id = training_set(recipe_path, out, version_id)
        trained = train(recipe_path, out, version_id)
        return export(recipe_path, out, version_id, trained)

    return keyword_spotting


def summary_markdown(manifest: Manifest, bundle: Path) -> str:
    int8 = manifest.metrics.get("int8", {})
    floating = manifest.metrics.get("float", {})
    tflm = manifest.targets.get("tflite_micro", {})
    vela = manifest.targets.get("vela", {})
    rows = [
        ("bundle", str(bundle)),
        ("float accuracy (held-out voices)", _pct(floating.get("accuracy"))),
        ("int8 accuracy (held-out voices)", _pct(int8.get("accuracy"))),
        ("int8 model size", f"{manifest.file('model_int8').bytes / 1024:.1f} KiB"),
        ("TFLite Micro arena", f"{tflm.get('arena_bytes', 0) / 1024:.1f} KiB"),
        ("Ethos-U SRAM / flash", f"{vela.get('sram_bytes', 0) / 1024:.1f} / {vela.get('flash_bytes', 0) / 1024:.1f} KiB"
         if vela else "not compiled"),
    ]
    return "| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"
