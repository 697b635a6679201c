"""The keyword-spotting pipeline: recipe -> dataset versions -> model -> bundle.

Each step is a plain function; `generate`, `label`, `train` and `export` at the bottom are the
stages the CLI and the Prefect flow (flows/run.py) call. Every step is resumable: a dataset version
that exists is found by its stage key and not made again, unfinished stages keep their finished
shards, training resumes from its last epoch, and the bundle is written all at once.
"""

from __future__ import annotations

from typing import Callable

from edgedistill.bundle import Manifest
from edgedistill.dataset import Dataset, MediaPolicy, OntologyClass, SPLITS, VersionInfo, stage_key
from edgedistill.frontend import MfccFrontEnd
from edgedistill.recipe import KeywordSpottingRecipe
from flows.runs import Progress, RunPaths, TrainedModel, dataset_ref, newest


def frontend_for(recipe: KeywordSpottingRecipe) -> MfccFrontEnd:
    settings = recipe.frontend
    return MfccFrontEnd(sample_rate=recipe.sample_rate, clip_samples=round(recipe.sample_rate * recipe.clip_seconds),
                        frame_length=settings.frame_length, hop_length=settings.hop_length,
                        mel_filters=settings.mel_filters, mfcc=settings.mfcc,
                        f_min=settings.f_min, f_max=settings.f_max)


def open_dataset(recipe: KeywordSpottingRecipe, location: str) -> Dataset:
    ontology = [OntologyClass(name=name, prompts=[name]) for name in recipe.classes]
    media = MediaPolicy(sample_rate=recipe.sample_rate, clip_seconds=recipe.clip_seconds)
    return Dataset.create(location, recipe.name, "keyword_spotting", ontology, media)


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
                  "duplicates_dropped": result.duplicates_dropped, "api_usage": result.api_usage}
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
    from edgedistill.splits import split_version

    return split_version(dataset, parent, recipe.train.val_share, recipe.train.test_share, recipe.train.seed)


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




def train_step(recipe: KeywordSpottingRecipe, dataset: Dataset, version: VersionInfo, paths: RunPaths,
               progress: Callable[[int, int, dict], None] | None = None) -> TrainedModel:
    """Train on a training-set version; the record (model path, test metrics) goes beside the model."""
    import torch

    from trainers.keyword_spotter import clip_features, evaluate, save_model, train_keyword_spotter

    torch.set_num_threads(1)  # faster than 2 for this small CNN on these CPUs (OFFLINE.md)
    frontend = frontend_for(recipe)
    samples = [s for s in dataset.samples(version.id) if s.review.status != "rejected"]
    data = {split: clip_features(dataset, [s for s in samples if s.split == split], frontend, recipe.classes)
            for split in SPLITS}
    # keyed by data and settings: a rerun of the same training resumes, a changed one starts fresh
    checkpoints = paths.model_dir / "checkpoints" / stage_key(version.id, "train", recipe.train.model_dump())
    checkpoints.mkdir(parents=True, exist_ok=True)
    result = train_keyword_spotter(data["train"], data["val"], recipe.classes, recipe.train, checkpoints, progress)
    save_model(result.model, paths.model, recipe.classes, recipe.train)
    trained = TrainedModel(path=paths.model, version=version.id,
                           float_metrics=evaluate(result.model, data["test"], recipe.classes),
                           best_epoch=result.best_epoch, epochs_run=result.epochs_run, seconds=result.seconds,
                           samples_per_second=result.samples_per_second)
    trained.save(paths)
    return trained


def export_step(recipe: KeywordSpottingRecipe, dataset: Dataset, trained: TrainedModel, paths: RunPaths,
                progress: Callable[[str], None] | None = None) -> Manifest:
    from edgedistill.real_speech import read_labelled_clips
    from edgedistill.splits import calibration_set
    from exporters.bundle import export_keyword_bundle
    from trainers.keyword_spotter import clip_features, held_out_audio, load_model, negative_kind

    real_clips = read_labelled_clips(recipe.evaluate.real) if recipe.evaluate.real else []
    frontend = frontend_for(recipe)
    model, labels = load_model(trained.path)
    version = dataset.version(trained.version)
    samples = [s for s in dataset.samples(version.id) if s.review.status != "rejected"]
    calibration = clip_features(dataset, calibration_set(samples, recipe.export.calibration_samples, recipe.seed),
                                frontend, labels)
    test_samples = [s for s in samples if s.split == "test"]
    test = clip_features(dataset, test_samples, frontend, labels)
    return export_keyword_bundle(
        model, out_dir=paths.bundle, name=recipe.name, labels=labels, frontend=frontend,
        calibration=calibration.features, test_features=test.features, test_labels=test.targets,
        float_metrics=trained.float_metrics, settings=recipe.export,
        test_negative_kinds=[negative_kind(s) for s in test_samples],
        held_out_audio=held_out_audio(dataset, samples, frontend, labels, recipe.seed), streaming=recipe.detect,
        real_clips=real_clips, dataset_ref=dataset_ref(dataset, version),
        recipe=recipe.model_dump(mode="json"), progress=progress)


# -- the four stages, as the CLI and the Prefect flow call them (flows/pipeline.py) -----------
def generate(recipe: KeywordSpottingRecipe, paths: RunPaths, progress: Progress = None) -> str:
    return synthesize_step(recipe, open_dataset(recipe, paths.dataset), progress).id


def label(recipe: KeywordSpottingRecipe, paths: RunPaths, version_id: str | None = None,
          progress: Progress = None) -> str:
    dataset = open_dataset(recipe, paths.dataset)
    parent = dataset.version(version_id) if version_id else newest(dataset, "synthesize")
    return check_step(recipe, dataset, parent, progress).id


def train(recipe: KeywordSpottingRecipe, paths: RunPaths, version_id: str | None = None,
          progress: Progress = None) -> TrainedModel:
    """Split by voice, augment, train. `version_id`: the labelled (or reviewed) version."""
    dataset = open_dataset(recipe, paths.dataset)
    labelled = dataset.version(version_id) if version_id else newest(dataset, "review", "whisper_check")
    training_set = training_set_step(recipe, dataset, labelled, progress)
    return train_step(recipe, dataset, training_set, paths,
                      (lambda epoch, total, _: progress(epoch, total)) if progress else None)


def export(recipe: KeywordSpottingRecipe, paths: RunPaths, progress: Progress = None) -> Manifest:
    return export_step(recipe, open_dataset(recipe, paths.dataset), TrainedModel.load(paths), paths)
