"""The detection pipeline: recipe -> dataset versions -> FOMO model -> bundle.

generate: the team's photos and diffusion images (unlabelled sources)
label:    auto-labels on the sources (OWL-ViT/OWLv2 or a teacher, Segment Anything masks, a
          vision-language model's verdicts), plus the labels people imported (`edgedistill
          import`), then a split by photo
train:    copy-paste composites made per split from that split's cut-outs and backgrounds (so no
          object or background is seen in both training and test), then FOMO training
export:   the int8 bundle, with centroid F1 on held-out composites and real photos
Every stage is a `dataset.derive`, so a rerun finds what it made before.
"""

from __future__ import annotations

from pathlib import Path

from edgedistill.bundle import Manifest
from edgedistill.dataset import Dataset, MediaPolicy, OntologyClass, SPLITS, Sample, Store, VersionInfo, stage_key
from edgedistill.errors import EdgedistillError
from edgedistill.real_photos import RealPhotoCheck
from edgedistill.recipe import DetectionRecipe
from edgedistill.registry import load_plugin
from flows.runs import Progress, RunPaths, TrainedModel, dataset_ref, newest

LABELLED_STAGES = ("review", "split")  # what `train` may start from; review reviews the newest split


def open_dataset(recipe: DetectionRecipe, location: str) -> Dataset:
    ontology = [OntologyClass(name=name, prompts=spec.prompts, negative_prompts=spec.negative_prompts,
                              threshold=spec.threshold) for name, spec in recipe.classes.items()]
    return Dataset.create(location, recipe.name, "detection", ontology,
                          MediaPolicy(image_size=recipe.compositing.image_size))


# -- the four stages, as the CLI and the Prefect flow call them (flows/run.py) -----------------
def generate(recipe: DetectionRecipe, paths: RunPaths, progress: Progress = None) -> str:
    """The unlabelled sources: the team's photos and, when enabled, diffusion and image-API images.

    When photos were added to (or removed from) the folder since the last run, the new sources version is
    made from the one before: its generated images and its unchanged photos are kept, and only new photos
    are read; the labelling stages then label only those (`Dataset.derive_each`)."""
    from generators.diffusion import generate_images
    from generators.photos import ingest_photos, known_photos, photos_fingerprint

    dataset = open_dataset(recipe, paths.dataset)
    params = {"images": recipe.images and Store(recipe.images).location,
              "images_fingerprint": recipe.images and photos_fingerprint(recipe.images),
              "diffusion": recipe.diffusion.model_dump(mode="json") if recipe.diffusion.enabled else None,
              "seed": recipe.seed}
    if recipe.image_api.enabled:  # named only when enabled, so that recipes without it keep their versions
        params["image_api"] = recipe.image_api.deciding()

    def make(earlier: VersionInfo | None, kept: list[Sample], work: Path) -> tuple[list[Sample], dict]:
        report, samples = {}, []
        if recipe.images:
            listing = (dataset.report(earlier) or {}).get("photos", []) if earlier else []
            known = known_photos(listing, kept)
            photos = ingest_photos(dataset, recipe.images, work / "photos", progress, known=known)
            samples, report["photos"] = photos.samples, photos.listing
            if earlier is not None:
                before = {s.id for s in kept if s.provenance.source == "photos"}
                now = {s.id for s in samples}
                report["photos_added"], report["photos_removed"] = len(now - before), len(before - now)
        if earlier is not None:  # the generated images of the version before, with the same settings
            samples += [s for s in kept if s.provenance.source != "photos"]
        else:
            if recipe.diffusion.enabled:
                samples += generate_images(dataset, recipe, work / "diffusion", progress)
            if recipe.image_api.enabled:
                from generators.api_images import generate_api_images

                made, report["image_api"] = generate_api_images(dataset, recipe, work / "image-api", progress)
                samples += made
        return samples, report

    return dataset.derive_from_input("sources", params, "images_fingerprint", make).id


def label(recipe: DetectionRecipe, paths: RunPaths, version_id: str | None = None,
          progress: Progress = None) -> str:
    """Auto-label the sources, add masks when asked, have a vision-language model verify the auto-labels when
    asked, add the labels people imported (`edgedistill import`), and split them all by photo (or prompt)."""
    from edgedistill.formats.importer import newest_imports, with_imports
    from edgedistill.labelling import run_labeler
    from edgedistill.splits import split_version
    from labelers.sam import SamLabeler

    dataset = open_dataset(recipe, paths.dataset)
    sources = dataset.version(version_id) if version_id else newest(dataset, "sources")
    settings = recipe.autolabel
    labelled = sources
    if settings.labeler != "none":
        labeler = load_plugin("labelers", settings.labeler)(recipe.classes, settings)
        labelled = dataset.derive_each(
            sources, "autolabel", {"autolabel": settings.model_dump(mode="json"),
                                   "classes": {k: v.model_dump() for k, v in recipe.classes.items()}},
            lambda samples, work: run_labeler(labeler, dataset, samples, work, progress).samples)
        if settings.masks:
            masks = SamLabeler(settings.sam_model, settings.batch_size)
            labelled = dataset.derive_each(labelled, "masks", {"sam_model": settings.sam_model},
                                      lambda samples, work: run_labeler(masks, dataset, samples, work, progress).samples)
    if recipe.verify.enabled:
        from labelers.verifier import verify_labels

        labelled = dataset.derive(labelled, "verify", {"verify": recipe.verify.deciding()},
                                  lambda samples, work: verify_labels(dataset, samples, recipe.classes, recipe.verify,
                                                                      work, progress))
    imports = newest_imports(dataset)
    params = {"strata": "labelled, empty"}
    if imports:  # named only when there are some, so that a dataset without imports keeps its split
        params["imports"] = [version.id for version in imports]
    return split_version(dataset, labelled, recipe.train.val_share, recipe.train.test_share, recipe.train.seed,
                         params, lambda samples: with_imports(dataset, samples, imports)).id


def composite_step(recipe: DetectionRecipe, dataset: Dataset, labelled: VersionInfo,
                   progress: Progress = None) -> VersionInfo:
    """Add composites to the labelled sources, made per split from that split's own inputs."""
    from generators.compositing import PHOTO_BACKGROUNDS, composites_by_split

    settings, train = recipe.compositing, recipe.train
    params = {"compositing": settings.model_dump(mode="json"), "seed": recipe.seed,
              "shares": [train.val_share, train.test_share], "photo_backgrounds": PHOTO_BACKGROUNDS}
    return dataset.derive(labelled, "composite", params,
                          lambda samples, work: samples + composites_by_split(dataset, recipe, samples, work, progress))


def train(recipe: DetectionRecipe, paths: RunPaths, version_id: str | None = None,
          progress: Progress = None) -> TrainedModel:
    import torch

    from trainers.fomo import detection_arrays, evaluate_held_out, save_fomo, train_fomo

    torch.set_num_threads(1)
    dataset = open_dataset(recipe, paths.dataset)
    labelled = dataset.version(version_id) if version_id else newest(dataset, *LABELLED_STAGES)
    version = composite_step(recipe, dataset, labelled, progress)
    labels = recipe.class_names
    samples = [s for s in dataset.samples(version.id) if s.review.status != "rejected"]
    data = {split: detection_arrays(dataset, [s for s in samples if s.split == split], labels) for split in SPLITS}
    checkpoints = paths.model_dir / "checkpoints" / stage_key(version.id, "train", recipe.train.model_dump())
    checkpoints.mkdir(parents=True, exist_ok=True)
    result = train_fomo(data["train"], data["val"], labels, recipe.train, checkpoints,
                        (lambda epoch, total, *_: progress(epoch, total)) if progress else None)
    save_fomo(result, paths.model, labels, recipe.train)

    test_sources = [s.provenance.source for s in samples if s.split == "test"]  # in data["test"]'s order
    overall, held_out = evaluate_held_out(result.model, data["test"], test_sources, labels, result.frontend,
                                          result.decoding, recipe.train.centroid_distance,
                                          sources=("compositing", "photos"))
    yolo = None
    if recipe.train.yolo:  # the larger model, for an NPU or a Linux board (trainers/yolo.py)
        from trainers.yolo import train_yolo

        yolo = train_yolo(dataset, samples, labels, recipe.train,
                          paths.model_dir / "yolo" / stage_key(version.id, "yolo", recipe.train.model_dump()))
    trained = TrainedModel(path=paths.model, version=version.id, float_metrics=overall, best_epoch=result.best_epoch,
                           epochs_run=result.epochs_run, seconds=result.seconds, samples_per_second=0.0,
                           held_out={"composites": held_out["compositing"], "photos": held_out["photos"]}, yolo=yolo)
    trained.save(paths)
    return trained


def export(recipe: DetectionRecipe, paths: RunPaths, progress: Progress = None) -> Manifest:
    from edgedistill.splits import calibration_set
    from exporters.bundle import export_detection_bundle
    from trainers.fomo import detection_arrays, load_fomo, model_inputs

    dataset = open_dataset(recipe, paths.dataset)
    trained = TrainedModel.load(paths)
    if (made := paths.bundle_made(trained.version, recipe)) is not None:
        return made
    version = dataset.version(trained.version)
    model, labels, frontend, decoding = load_fomo(trained.path)
    samples = [s for s in dataset.samples(version.id) if s.review.status != "rejected"]
    test_samples = [s for s in samples if s.split == "test"]
    if not test_samples:
        raise EdgedistillError("the test split is empty, so the int8 model cannot be checked",
                               "add photos or composites (compositing.images), or raise train.test_share")
    test = detection_arrays(dataset, test_samples, labels)
    calibration = calibration_set(samples, recipe.export.calibration_samples, recipe.seed)
    companions = []
    if yolo := trained.yolo:
        from exporters.yolo_int8 import CALIBRATION_IMAGES, yolo_companions

        companions = yolo_companions(
            recipe.name, yolo.onnx, yolo.program, yolo.metrics, dataset,
            calibration_set(samples, min(CALIBRATION_IMAGES, recipe.export.calibration_samples), recipe.seed),
            test_samples, labels, recipe.train.yolo_image_size, recipe.export, paths.model_dir / "yolo" / "int8")
    return export_detection_bundle(
        model, out_dir=paths.bundle_of(version.id), promote_to=paths.bundle, name=recipe.name, labels=labels,
        frontend=frontend, decoding=decoding,
        calibration=model_inputs(detection_arrays(dataset, calibration, labels), frontend),
        test_images=test.images, test_objects=test.objects,
        centroid_distance=recipe.train.centroid_distance, settings=recipe.export,
        dataset_ref=dataset_ref(dataset, version) | {"held_out_float": trained.held_out},
        recipe=recipe.model_dump(mode="json"), companions=companions, real=real_photo_check(recipe, labels))


def real_photo_check(recipe: DetectionRecipe, labels: list[str]) -> RealPhotoCheck | None:
    """The recipe's labelled real photos, with what the teacher finds on them, for export to measure the
    student against (evaluate.real); None without them."""
    from edgedistill.boxes import Detections
    from edgedistill.real_photos import load_photos, read_labelled_photos

    if not recipe.evaluate.real:
        return None
    photos = read_labelled_photos(recipe.evaluate.real, labels, recipe.evaluate.min_share)
    images = load_photos(photos)
    if recipe.autolabel.labeler == "none":  # no teacher: the student alone
        return RealPhotoCheck(photos, images, recipe.evaluate.min_share)
    found = load_plugin("labelers", recipe.autolabel.labeler)(recipe.classes, recipe.autolabel).label_images(images)
    teacher = [Detections.from_labels(image, labels) for image in found]
    return RealPhotoCheck(photos, images, recipe.evaluate.min_share, teacher)
