"""The keyword-spotting pipeline: recipe -> dataset versions -> model -> bundle.

Each step is a plain function; `generate`, `label`, `train` and `export` at the bottom are the
stages the CLI and the Prefect flow (flows/run.py) call. Every step is resumable: a dataset version
that exists is found by its stage key and not made again, unfinished stages keep their finished
shards, training resumes from its last epoch, and the bundle is written all at once.
"""

from __future__ import annotations

from typing import Callable

from edgedistill.audio import AUDIO_SUFFIXES
from edgedistill.bundle import Manifest
from edgedistill.dataset import Dataset, MediaPolicy, OntologyClass, SPLITS, Sample, VersionInfo, stage_key
from edgedistill.errors import EdgedistillError
from edgedistill.frontend import MfccFrontEnd
from edgedistill.recipe import KeywordSpottingRecipe, is_keyword
from flows.runs import Progress, RunPaths, TrainedModel, dataset_ref, newest


LABELLED_STAGES = ("review", "with_recordings", "recordings", "whisper_check")  # what `train` may start from


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


def mine_step(recipe: KeywordSpottingRecipe, dataset: Dataset, locations: list[str],
              progress: Progress = None) -> VersionInfo:
    """Clips mined from real recordings (files or folders, local or s3://...), as a version of their own: its
    stage key holds every file's fingerprint, so the same files are never mined twice and a changed one is.
    When recordings were added (or removed) since the last run, the version is made from the one before:
    the clips of unchanged recordings are kept, and only the new or changed recordings are mined."""
    from labelers.recordings import RecordingMiner, find_recordings, mine_recordings

    recordings = find_recordings(locations)
    params = _params(recipe, "mining") | {"recordings": [[r.location, r.fingerprint] for r in recordings]}
    miner = RecordingMiner(recipe.keywords, recipe.mining, recipe.sample_rate, recipe.clip_seconds)

    def mine(earlier, kept, work):
        mined_before = {tuple(pair) for pair in earlier.params["recordings"]} if earlier else set()
        fresh = [r for r in recordings if (r.location, r.fingerprint) not in mined_before]
        unchanged = {r.location for r in recordings} - {r.location for r in fresh}
        before = (dataset.report(earlier) or {}) if earlier else {}
        mined = mine_recordings(dataset, fresh, miner, work, progress)
        rows = [row for row in before.get("recordings", []) if row["file"] in unchanged] + mined.recordings
        unreadable = [row for row in before.get("unreadable", []) if row["file"] in unchanged] + mined.unreadable
        if not rows:
            reasons = "; ".join(f"{row['file']}: {row['reason']}" for row in unreadable) or "no audio files"
            raise EdgedistillError(f"no recording in {', '.join(locations)} could be read ({reasons})",
                                   f"give audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) or folders holding them")
        samples = [s for s in kept if s.provenance.group in unchanged] + mined.samples
        doubtful = [s for s in samples if is_keyword(s.class_name) and s.labels[0].score < recipe.review.threshold]
        report = {"recordings": rows, "unreadable": unreadable, "recordings_mined_now": len(fresh),
                  "audio_hours": round(sum(row["minutes"] for row in rows) / 60, 4),
                  "audio_hours_per_hour": round(mined.audio_hours_per_hour, 1),
                  "keyword_clips_for_review": len(doubtful)}
        return samples, report

    return dataset.derive_from_input("recordings", params, "recordings", mine)


def with_recordings_step(dataset: Dataset, parent: VersionInfo, mined: VersionInfo) -> VersionInfo:
    """`parent`'s samples and the clips mined from recordings, together: what review and training see."""
    def add(samples, _):
        have = {s.id for s in samples}
        return samples + [s for s in dataset.samples(mined.id) if s.id not in have]

    return dataset.derive(parent, "with_recordings", {"recordings": mined.id}, add)


def split_step(recipe: KeywordSpottingRecipe, dataset: Dataset, parent: VersionInfo) -> VersionInfo:
    """Split by voice, and by recording: real recordings among themselves, so that some reach the test."""
    from edgedistill.splits import split_version
    from labelers.recordings import SOURCE

    return split_version(dataset, parent, recipe.train.val_share, recipe.train.test_share, recipe.train.seed,
                         apart=lambda sample: sample.provenance.source == SOURCE)


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

    from trainers.keyword_spotter import clip_features, evaluate, evaluate_by_origin, save_model, train_keyword_spotter

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
    test_origins = origins(dataset.samples(version.id), [s for s in samples if s.split == "test"])
    trained = TrainedModel(path=paths.model, version=version.id,
                           float_metrics=evaluate(result.model, data["test"], recipe.classes),
                           best_epoch=result.best_epoch, epochs_run=result.epochs_run, seconds=result.seconds,
                           samples_per_second=result.samples_per_second,
                           held_out=evaluate_by_origin(result.model, data["test"], test_origins, recipe.classes))
    trained.save(paths)
    return trained


def export_step(recipe: KeywordSpottingRecipe, dataset: Dataset, trained: TrainedModel, paths: RunPaths,
                progress: Callable[[str], None] | None = None) -> Manifest:
    from edgedistill.real_speech import read_labelled_clips
    from edgedistill.splits import calibration_set
    from exporters.bundle import export_keyword_bundle
    from trainers.keyword_spotter import clip_features, held_out_audio, load_model, negative_kind

    if (made := paths.bundle_made(trained.version, recipe)) is not None:
        return made
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
        model, out_dir=paths.bundle_of(version.id), promote_to=paths.bundle, name=recipe.name, labels=labels,
        frontend=frontend,
        calibration=calibration.features, test_features=test.features, test_labels=test.targets,
        float_metrics=trained.float_metrics, settings=recipe.export,
        test_negative_kinds=[negative_kind(s) for s in test_samples],
        test_origins=origins(dataset.samples(version.id), test_samples),
        held_out_audio=held_out_audio(dataset, samples, frontend, labels, recipe.seed), streaming=recipe.detect,
        real_clips=real_clips, dataset_ref=dataset_ref(dataset, version) | {"held_out_float": trained.held_out},
        recipe=recipe.model_dump(mode="json"), progress=progress)


def origins(samples: list[Sample], of: list[Sample]) -> list[str]:
    """Where each of `of` comes from: "recordings" (mined from a real recording) or "synthetic"; an augmented
    copy from where the clip it copies does (`samples`: the version holding both)."""
    from labelers.recordings import SOURCE

    by_id = {s.id: s for s in samples}

    def origin(sample: Sample) -> str:
        while sample.provenance.source == "augment":
            sample = by_id[sample.provenance.params["parent"]]
        return "recordings" if sample.provenance.source == SOURCE else "synthetic"

    return [origin(sample) for sample in of]


# -- the four stages, as the CLI and the Prefect flow call them (flows/pipeline.py) -----------
def generate(recipe: KeywordSpottingRecipe, paths: RunPaths, progress: Progress = None) -> str:
    return synthesize_step(recipe, open_dataset(recipe, paths.dataset), progress).id


def label(recipe: KeywordSpottingRecipe, paths: RunPaths, version_id: str | None = None,
          progress: Progress = None) -> str:
    """The Whisper check of the synthetic clips, then the clips mined from the recipe's `recordings:`."""
    dataset = open_dataset(recipe, paths.dataset)
    parent = dataset.version(version_id) if version_id else newest(dataset, "synthesize")
    checked = check_step(recipe, dataset, parent, progress)
    if not recipe.recordings:
        return checked.id
    return with_recordings_step(dataset, checked, mine_step(recipe, dataset, recipe.recordings, progress)).id


def label_recordings(recipe: KeywordSpottingRecipe, paths: RunPaths, locations: list[str],
                     progress: Progress = None) -> tuple[VersionInfo, VersionInfo]:
    """Mine `locations` and add the clips to the run's newest labelled version, which `train` reads (alone
    when nothing is labelled yet). Returns the mined version and the one training will read."""
    dataset = open_dataset(recipe, paths.dataset)
    labelled = newest(dataset, *LABELLED_STAGES, missing_ok=True)
    mined = mine_step(recipe, dataset, locations, progress)
    if labelled is None or labelled.id == mined.id:  # nothing else labelled, or these very clips again
        return mined, mined
    return mined, with_recordings_step(dataset, labelled, mined)


def train(recipe: KeywordSpottingRecipe, paths: RunPaths, version_id: str | None = None,
          progress: Progress = None) -> TrainedModel:
    """Split by voice, augment, train. `version_id`: the labelled (or reviewed) version."""
    dataset = open_dataset(recipe, paths.dataset)
    labelled = dataset.version(version_id) if version_id else newest(dataset, *LABELLED_STAGES)
    training_set = training_set_step(recipe, dataset, labelled, progress)
    return train_step(recipe, dataset, training_set, paths,
                      (lambda epoch, total, _: progress(epoch, total)) if progress else None)


def export(recipe: KeywordSpottingRecipe, paths: RunPaths, progress: Progress = None) -> Manifest:
    return export_step(recipe, open_dataset(recipe, paths.dataset), TrainedModel.load(paths), paths)
