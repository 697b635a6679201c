"""The detection pipeline: recipe -> dataset versions -> FOMO model -> bundle.

generate: the team's photos and diffusion images (unlabelled sources)
label:    auto-labels on the sources (OWL-ViT/OWLv2 or a teacher, Segment Anything masks), plus the
          labels people imported (`edgedistill import`), then a split by photo
train:    copy-paste composites made per split from that split's cut-outs and backgrounds (so no
          object or background is seen in both training and test), then FOMO training
export:   the int8 bundle, with centroid F1 on held-out composites and real photos
Every stage is a `dataset.derive`, so a rerun finds what it made before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedistill.bundle import Manifest
from edgedistill.dataset import Dataset, MediaPolicy, OntologyClass, Sample, Store, VersionInfo, stage_key
from edgedistill.errors import EdgedistillError
from edgedistill.real_photos import RealPhotoCheck
from edgedistill.recipe import DetectionRecipe
from edgedistill.registry import load_plugin
from flows.run import Progress, RunPaths, TrainedModel, newest

SPLITS = ("train", "val", "test")


def open_dataset(recipe: DetectionRecipe, location: str) -> Dataset:
    ontology = [OntologyClass(name=name, prompts=spec.prompts, negative_prompts=spec.negative_prompts,
                              threshold=spec.threshold) for name, spec in recipe.classes.items()]
    return Dataset.create(location, recipe.name, "detection", ontology,
                          MediaPolicy(image_size=recipe.compositing.image_size))


# -- the four stages, as the CLI and the Prefect flow call them (flows/run.py) -----------------
def generate(recipe: DetectionRecipe, paths: RunPaths, progress: Progress = None) -> str:
    """The unlabelled sources: the team's photos and, when enabled, diffusion images."""
    from generators.diffusion import generate_images
    from generators.photos import ingest_photos, photos_fingerprint

    dataset = open_dataset(recipe, paths.dataset)
    params = {"images": recipe.images and Store(recipe.images).location,
              "images_fingerprint": recipe.images and photos_fingerprint(recipe.images),
              "diffusion": recipe.diffusion.model_dump(mode="json") if recipe.diffusion.enabled else None,
              "seed": recipe.seed}

    def make(_, work: Path) -> list[Sample]:
        samples = ingest_photos(dataset, recipe.images, work / "photos", progress) if recipe.images else []
        if recipe.diffusion.enabled:
            samples += generate_images(dataset, recipe, work / "diffusion", progress)
        return samples

    return dataset.derive(None, "sources", params, make).id


def label(recipe: DetectionRecipe, paths: RunPaths, version_id: str | None = None,
          progress: Progress = None) -> str:
    """Auto-label the sources, add masks when asked, add the labels people imported (`edgedistill import`),
    and split them all by photo (or prompt)."""
    from edgedistill.formats.importer import newest_imports, with_imports
    from edgedistill.labelling import run_labeler
    from edgedistill.splits import split_by_group
    from labelers.sam import SamLabeler

    dataset = open_dataset(recipe, paths.dataset)
    sources = dataset.version(version_id) if version_id else newest(dataset, "sources")
    settings = recipe.autolabel
    labelled = sources
    if settings.labeler != "none":
        labeler = load_plugin("labelers", settings.labeler)(recipe.classes, settings)
        labelled = dataset.derive(
            sources, "autolabel", {"autolabel": settings.model_dump(mode="json"),
                                   "classes": {k: v.model_dump() for k, v in recipe.classes.items()}},
            lambda samples, work: run_labeler(labeler, dataset, samples, work, progress).samples)
        if settings.masks:
            masks = SamLabeler(settings.sam_model, settings.batch_size)
            labelled = dataset.derive(labelled, "masks", {"sam_model": settings.sam_model},
                                      lambda samples, work: run_labeler(masks, dataset, samples, work, progress).samples)
    train = recipe.train
    imports = newest_imports(dataset)
    params = {"val_share": train.val_share, "test_share": train.test_share, "seed": train.seed,
              "strata": "labelled, empty"}
    if imports:  # named only when there are some, so that a dataset without imports keeps its split
        params["imports"] = [version.id for version in imports]
    return dataset.derive(labelled, "split", params,
                          lambda samples, _: split_by_group(with_imports(dataset, samples, imports), train.val_share,
                                                            train.test_share, train.seed)).id


PHOTO_BACKGROUNDS = 200  # per split: enough scenes for variety, few enough to hold in memory


def composite_step(recipe: DetectionRecipe, dataset: Dataset, labelled: VersionInfo,
                   progress: Progress = None) -> VersionInfo:
    """Add composites to the labelled sources, made per split from that split's own inputs.

    Cut-outs come from the recipe's folder, else from the labelled photos of the same split
    (their masks, or an ellipse in their boxes), else they are drawn. Backgrounds come from the
    recipe's folder, else from the split's photos in which nothing was labelled, mixed with
    generated ones. Folder and generated inputs are given splits by their content id, so an
    object or a background never appears in two splits.
    """
    from generators.compositing import (GENERATED_BACKGROUNDS, SYNTHETIC_CUTOUTS_PER_CLASS, backgrounds_from_photos,
                                        composite_images, cutouts_from_labels, generated_backgrounds,
                                        load_backgrounds, load_cutouts, synthetic_cutouts)
    from edgedistill.splits import assign_splits

    settings, train = recipe.compositing, recipe.train
    params = {"compositing": settings.model_dump(mode="json"), "seed": recipe.seed,
              "shares": [train.val_share, train.test_share], "photo_backgrounds": PHOTO_BACKGROUNDS}

    def by_content_split(items: list) -> dict[str, list]:
        pool = assign_splits((item.id for item in items), train.val_share, train.test_share, recipe.seed)
        return {split: [item for item in items if pool[item.id] == split] for split in SPLITS}

    def make(samples: list[Sample], work: Path) -> list[Sample]:
        if not settings.enabled or settings.images == 0:
            return samples
        by_split = {split: [s for s in samples if s.split == split and s.review.status != "rejected"]
                    for split in SPLITS}
        if settings.cutouts:
            cutouts_of = by_content_split(load_cutouts(settings.cutouts))
        else:
            cutouts_of = {split: cutouts_from_labels(dataset, by_split[split]) for split in SPLITS}
            if not any(cutouts_of.values()):  # nothing labelled to cut out: draw objects
                cutouts_of = by_content_split(synthetic_cutouts(recipe.class_names, SYNTHETIC_CUTOUTS_PER_CLASS,
                                                                recipe.seed))
        if settings.backgrounds:
            folder = load_backgrounds(settings.backgrounds)
            backgrounds_of = {split: chosen or folder for split, chosen in by_content_split(folder).items()}
        else:
            backgrounds_of = by_content_split(generated_backgrounds(GENERATED_BACKGROUNDS, settings.image_size,
                                                                    recipe.seed))
        shares = {"train": 1 - train.val_share - train.test_share, "val": train.val_share, "test": train.test_share}
        composites: list[Sample] = []
        for split in SPLITS:
            count = round(settings.images * shares[split])
            if not cutouts_of[split] or count == 0:
                continue  # e.g. no labelled photo in this split to cut from
            backgrounds = backgrounds_of[split]
            if not settings.backgrounds:  # decoded per split, so only one split's photos are in memory
                backgrounds = backgrounds_from_photos(dataset, by_split[split], PHOTO_BACKGROUNDS,
                                                      recipe.seed) + backgrounds
            per_split = recipe.model_copy(update={"compositing": settings.model_copy(update={"images": count}),
                                                  "seed": recipe.seed + SPLITS.index(split)})
            made = composite_images(dataset, per_split, cutouts_of[split], backgrounds, work / split, progress)
            composites += [s.model_copy(update={"split": split}) for s in made]
        return samples + composites

    return dataset.derive(labelled, "composite", params, make)


def _arrays(dataset: Dataset, samples: list[Sample], labels: list[str]):
    from trainers.fomo import detection_arrays

    return {split: detection_arrays(dataset, [s for s in samples if s.split == split], labels) for split in SPLITS}


def train(recipe: DetectionRecipe, paths: RunPaths, version_id: str | None = None,
          progress: Progress = None) -> TrainedModel:
    import torch

    from trainers.fomo import evaluate_fomo, prepare, save_fomo, train_fomo

    torch.set_num_threads(1)
    dataset = open_dataset(recipe, paths.dataset)
    labelled = dataset.version(version_id) if version_id else newest(dataset, "review", "split")
    version = composite_step(recipe, dataset, labelled, progress)
    labels = recipe.class_names
    samples = [s for s in dataset.samples(version.id) if s.review.status != "rejected"]
    data = _arrays(dataset, samples, labels)
    checkpoints = paths.model_dir / "checkpoints" / stage_key(version.id, "train", recipe.train.model_dump())
    checkpoints.mkdir(parents=True, exist_ok=True)
    result = train_fomo(data["train"], data["val"], labels, recipe.train, checkpoints,
                        (lambda epoch, total, *_: progress(epoch, total)) if progress else None)
    save_fomo(result, paths.model, labels, recipe.train)

    def held_out(source: str | None) -> dict:
        chosen = [s for s in samples if s.split == "test" and (source is None or s.provenance.source == source)]
        arrays = _arrays(dataset, chosen, labels)["test"]
        if not arrays.images:
            return {}
        return evaluate_fomo(result.model, prepare(arrays, result.frontend), result.frontend, result.decoding,
                             labels, recipe.train.centroid_distance)

    extra = {"composites": held_out("compositing"), "photos": held_out("photos")}
    if recipe.train.yolo:  # the larger model, for an NPU or a Linux board (trainers/yolo.py)
        from trainers.yolo import train_yolo

        yolo = train_yolo(dataset, samples, labels, recipe.train,
                          paths.model_dir / "yolo" / stage_key(version.id, "yolo", recipe.train.model_dump()))
        extra["yolo"] = {"onnx": str(yolo.onnx), "program": str(yolo.program), **yolo.metrics}
    trained = TrainedModel(path=paths.model, version=version.id, float_metrics=held_out(None),
                           best_epoch=result.best_epoch, epochs_run=result.epochs_run, seconds=result.seconds,
                           samples_per_second=0.0, extra=extra)
    trained.save(paths)
    return trained


def export(recipe: DetectionRecipe, paths: RunPaths, progress: Progress = None) -> Manifest:
    from exporters.bundle import export_detection_bundle
    from trainers.fomo import load_fomo, model_inputs

    dataset = open_dataset(recipe, paths.dataset)
    trained = TrainedModel.load(paths)
    version = dataset.version(trained.version)
    model, labels, frontend, decoding = load_fomo(trained.path)
    samples = [s for s in dataset.samples(version.id) if s.review.status != "rejected"]
    data = _arrays(dataset, samples, labels)
    if not data["test"].images:
        raise EdgedistillError("the test split is empty, so the int8 model cannot be checked",
                               "add photos or composites (compositing.images), or raise train.test_share")
    held_out_float = {k: v for k, v in trained.extra.items() if k != "yolo"}
    companions = []
    if yolo := trained.extra.get("yolo"):
        from exporters.yolo_int8 import yolo_companions

        companions = yolo_companions(
            recipe.name, Path(yolo["onnx"]), Path(yolo["program"]),
            {k: v for k, v in yolo.items() if k not in ("onnx", "program")}, dataset,
            [s for s in samples if s.split == "train"], [s for s in samples if s.split == "test"], labels,
            recipe.train.yolo_image_size, recipe.export, paths.model_dir / "yolo" / "int8")
    return export_detection_bundle(
        model, out_dir=paths.bundle, name=recipe.name, labels=labels, frontend=frontend, decoding=decoding,
        calibration=model_inputs(data["train"], frontend)[: recipe.export.calibration_samples],
        test_images=data["test"].images, test_boxes=data["test"].boxes, test_classes=data["test"].classes,
        centroid_distance=recipe.train.centroid_distance, settings=recipe.export,
        dataset_ref={"path": dataset.location, "version": version.id, "counts": version.counts,
                     "held_out_float": held_out_float},
        recipe=recipe.model_dump(mode="json"), companions=companions, real=real_photo_check(recipe, labels))


def real_photo_check(recipe: DetectionRecipe, labels: list[str]) -> RealPhotoCheck | None:
    """The recipe's labelled real photos, with what the teacher finds on them, for export to measure the
    student against (evaluate.real); None without them."""
    from edgedistill.boxes import xywh_to_xyxy
    from edgedistill.real_photos import load_photos, read_labelled_photos

    if not recipe.evaluate.real:
        return None
    photos = read_labelled_photos(recipe.evaluate.real, labels, recipe.evaluate.min_share)
    images = load_photos(photos)
    if recipe.autolabel.labeler == "none":  # no teacher: the student alone
        return RealPhotoCheck(photos, images, recipe.evaluate.min_share)
    found = load_plugin("labelers", recipe.autolabel.labeler)(recipe.classes, recipe.autolabel).label_images(images)
    teacher = [(xywh_to_xyxy([label.box for label in image]),
                np.array([labels.index(label.class_name) for label in image], np.int64)) for image in found]
    return RealPhotoCheck(photos, images, recipe.evaluate.min_share, teacher)
