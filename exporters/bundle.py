"""Float model -> the bundle a device team receives (DESIGN.md, "The bundle").

Keyword spotters and FOMO detectors share every step (ONNX, full-int8 TFLite, TFLite Micro check,
C header, Vela, manifest, model card and report); a `_Task` holds only what differs: the front
end, the int8 evaluation against the float model, and the sample figures of the report.

The bundle is built in a temporary sibling folder and renamed into place at the end, so a crash
or a failed check leaves the previous bundle (or none), never a half-written one.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from edgedistill.bundle import (MANIFEST, BundleFile, InputSpec, Manifest, OutputSpec, describe_file, load_bundle,
                                write_manifest)
from edgedistill.boxes import Detections
from edgedistill.errors import EdgedistillError
from edgedistill.frontend import MfccFrontEnd
from edgedistill.image_frontend import BACKGROUND, HeatmapDecoding, ImageFrontEnd, centroid_f1
from edgedistill.images import Placement
from edgedistill.inference import Int8Classifier, detect_centroids, softmax
from edgedistill.runtimes import quantize
from edgedistill.metrics import classification_metrics
from edgedistill.real_photos import RealPhotoCheck, measure_student
from edgedistill.real_speech import LabelledClip, evaluate_on_real
from edgedistill.recipe import ExportSettings, StreamingSettings, is_keyword
from edgedistill.streaming import HeldOutAudio, StreamingSpec, calibrate
from exporters.c_header import c_header_text
from exporters.onnx_export import export_onnx
from exporters.report import detection_sample_jpeg, model_card_markdown, report_html
from exporters.tflite_int8 import quantize_to_int8_tflite
from exporters.tflite_micro import check_on_tflite_micro
from exporters.vela import compile_for_ethos_u

TFLM_CHECK_INPUTS = 64  # TFLite Micro's reference kernels are slow; a sample shows any mismatch
TFLM_CHECK_IMAGES = 8  # a 96x96 image takes ~0.1 s on TFLite Micro's reference kernels
ONNX_CHECK_INPUTS = 8
REPORT_SAMPLE_IMAGES = 6
REAL_SAMPLE_IMAGES = 9  # real photos in a detection report, with the student's and the teacher's finds


@dataclass
class _Build:
    """Files written so far (path relative to the bundle, role) and the targets' figures."""

    root: Path
    files: list[tuple[str, str]] = field(default_factory=list)
    targets: dict[str, dict] = field(default_factory=dict)

    def write(self, relative: str, role: str, data: bytes) -> None:
        (self.root / relative).write_bytes(data)
        self.files.append((relative, role))

    def described(self) -> list[BundleFile]:
        return [describe_file(self.root, relative, role) for relative, role in self.files]


def _edgedistill_version() -> str:
    try:
        return version("edgedistill")
    except PackageNotFoundError:
        return "unknown"


def _evenly_spaced(features: np.ndarray, count: int) -> np.ndarray:
    """`count` rows spread over the whole array: calibration sees every class, not the first few."""
    if len(features) <= count:
        return features
    return features[np.linspace(0, len(features) - 1, count).round().astype(int)]


def _float_predictions(model: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(features.astype(np.float32))).argmax(dim=1).numpy()


def check_accuracy_drop(float_accuracy: float, int8_accuracy: float, settings: ExportSettings,
                         measure: str = "accuracy", samples: str = "clips") -> None:
    drop = float_accuracy - int8_accuracy
    if drop > settings.max_int8_accuracy_drop:
        raise EdgedistillError(
            f"int8 quantisation costs too much {measure}: float {float_accuracy:.1%}, int8 {int8_accuracy:.1%} "
            f"(a drop of {drop:.1%}, more than the allowed {settings.max_int8_accuracy_drop:.1%}); no bundle written",
            f"calibrate on more and more varied {samples} (export.calibration_samples), train longer or wider so the "
            "model's margins grow, or raise export.max_int8_accuracy_drop if this drop is acceptable")


@dataclass(frozen=True)
class Companion:
    """A second model that travels in the bundle as it was made: YOLO's ONNX for an NPU or a Linux board."""

    path: Path
    file_name: str  # its name in the bundle
    role: str  # its manifest role; its held-out figures go under manifest.metrics[role]
    metrics: dict


@dataclass
class Evaluation:
    metrics: dict  # {"float", "int8", "int8_vs_float", ...}
    streaming: StreamingSpec | None = None  # keyword models: the calibrated device loop


@dataclass
class _Task:
    """What a keyword and a detection bundle do differently; every other step is shared."""

    task: str  # the manifest's task
    input_kind: str  # "audio" or "image"
    frontend: MfccFrontEnd | ImageFrontEnd
    frontend_spec: dict  # what the manifest records as the input's front end
    labels: list[str]  # the model's output order
    test_inputs: np.ndarray  # float model inputs, for the ONNX and TFLite Micro checks
    tflm_inputs: int
    # (classifier, float model) -> metrics and streaming spec; raises on too large a drop
    evaluate: Callable[[Int8Classifier, torch.nn.Module], Evaluation]
    decoding: HeatmapDecoding | None = None
    # int8 classifier -> (title, JPEG bytes) figures for the report, made after evaluation
    report_images: Callable[[Int8Classifier], list[tuple[str, bytes]]] = lambda classifier: []
    companions: list[Companion] = field(default_factory=list)
    # any int8 classifier of these inputs and labels, and its device loop -> its headline figures on this
    # bundle's held-out set (and real recordings or photos, when given): how two bundles are compared
    score: Callable[[Int8Classifier, StreamingSpec | None], dict] = lambda classifier, spec: {}
    measure: str = "accuracy"  # what score's figures are


def _compare_with_promoted(task: _Task, classifier: Int8Classifier, evaluation: Evaluation,
                           promoted_dir: Path, settings: ExportSettings) -> dict:
    """Whether this bundle replaces the promoted one: both int8 models on this bundle's held-out set (which
    holds the old test samples and the new ones), the real figures beside; a worse one only when the recipe
    says `export.promote: always`."""
    if not (promoted_dir / MANIFEST).exists():
        return {"promote": True, "reason": "no bundle was promoted before"}
    try:
        promoted = load_bundle(promoted_dir)
    except EdgedistillError as error:
        return {"promote": True, "reason": f"the promoted bundle cannot be read ({error.problem})"}
    before = {"dataset_version": promoted.dataset.get("version"), "samples": promoted.dataset.get("counts", {}).get(
        "samples"), "created": promoted.created.isoformat(timespec="seconds")}
    if (promoted.labels, promoted.input.shape, promoted.input.frontend) != (
            task.labels, classifier.input_shape, task.frontend_spec):
        return {"promote": True, "before": before,
                "reason": "the promoted bundle takes other inputs or labels (the recipe changed them)"}
    old = Int8Classifier((promoted_dir / promoted.file("model_int8").path).read_bytes())
    scores = {"before": task.score(old, promoted.streaming), "now": task.score(classifier, evaluation.streaming)}
    better = scores["now"]["held_out"] >= scores["before"]["held_out"]
    figures = f"held-out {task.measure} {scores['now']['held_out']:.1%} against {scores['before']['held_out']:.1%}"
    if better:
        reason = f"as good or better: {figures}"
    elif settings.promote == "always":
        reason = f"worse ({figures}), promoted as the recipe says (export.promote: always)"
    else:
        reason = f"worse: {figures}; the promoted bundle stays (export.promote: always would replace it)"
    return {"promote": better or settings.promote == "always", "reason": reason, "before": before,
            "measure": task.measure, "scores": scores}


def _vela_stage(build: _Build, content: bytes, settings: ExportSettings, name: str) -> None:
    result = compile_for_ethos_u(content, settings.vela_accelerator)
    build.targets["vela"] = {**result.figures, "warnings": result.warnings}
    if result.summary_csv is not None:
        build.write("vela_summary.csv", "vela_report", result.summary_csv.encode())
    if result.console:
        build.write("vela_log.txt", "vela_log", result.console.encode())
    if result.optimised_model is not None:
        build.write(f"{name}_int8_vela.tflite", "model_int8_ethos_u", result.optimised_model)


def _replace_folder(built: Path, out_dir: Path) -> None:
    """Put `built` at `out_dir`; an existing bundle there is swapped out and then removed."""
    if not out_dir.exists():
        built.rename(out_dir)
        return
    retired = out_dir.with_name(f".{out_dir.name}.old-{time.time_ns()}")
    out_dir.rename(retired)
    built.rename(out_dir)
    shutil.rmtree(retired, ignore_errors=True)


def _refuse_foreign_folder(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists())):
        raise EdgedistillError(f"{out_dir} exists and is not a bundle; exporting would replace it",
                               "choose an empty or new folder, or an earlier bundle to overwrite")


def _export(model: torch.nn.Module, task: _Task, *, out_dir: Path, name: str, calibration: np.ndarray,
            settings: ExportSettings, dataset_ref: dict, recipe: dict,
            progress: Callable[[str], None] | None, promote_to: Path | None = None) -> Manifest:
    """Build the bundle in a temporary sibling folder and swap it into `out_dir` only when complete; with
    `promote_to`, compare it with the bundle there and copy it there when it is as good or better."""
    out_dir = Path(out_dir)
    for folder in (out_dir, promote_to):
        if folder is not None:
            _refuse_foreign_folder(folder)
    say = progress or (lambda message: None)
    model = copy.deepcopy(model).eval().cpu()  # the caller's model keeps its mode and device
    with _building(out_dir) as built:
        manifest = _build_bundle(_Build(built), model, task, name, calibration, settings, dataset_ref, recipe, say,
                                 promote_to)
    say(f"bundle written to {out_dir}")
    if promote_to is not None and manifest.metrics["promotion"]["promote"]:
        with _building(promote_to) as built:
            shutil.copytree(out_dir, built, dirs_exist_ok=True)
        say(f"promoted to {promote_to}")
    return manifest


@contextmanager
def _building(out_dir: Path) -> Iterator[Path]:
    """A temporary sibling folder to build a bundle in, swapped into `out_dir` when the block ends well."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    built.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        yield built
        _replace_folder(built, out_dir)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise


def _build_bundle(build: _Build, model: torch.nn.Module, task: _Task, name: str, calibration: np.ndarray,
                  settings: ExportSettings, dataset_ref: dict, recipe: dict,
                  say: Callable[[str], None], promote_to: Path | None) -> Manifest:
    formats = set(settings.formats)
    if "onnx" in formats:
        say("exporting float ONNX")
        build.targets["onnx"] = export_onnx(model, _evenly_spaced(task.test_inputs, ONNX_CHECK_INPUTS),
                                            build.root / f"{name}.onnx")
        build.files.append((f"{name}.onnx", "model_float_onnx"))
    say("quantising to full-int8 TFLite")
    content = quantize_to_int8_tflite(model, calibration)
    classifier = Int8Classifier(content)
    if classifier.output_shape[-1] != len(task.labels):
        raise EdgedistillError(f"the model has {classifier.output_shape[-1]} outputs but {len(task.labels)} labels "
                               "were given",
                               "pass the labels in the model's output order (recipe.classes)")
    evaluation = task.evaluate(classifier, model)
    metrics = evaluation.metrics
    build.write(f"{name}_int8.tflite", "model_int8", content)
    say("checking on TensorFlow Lite Micro")
    _micro_stage(build, content, classifier, task)
    if "c_header" in formats:
        say("writing the C header")
        header = c_header_text(name=name, model=content, labels=task.labels, input_shape=classifier.input_shape,
                               input_quantization=classifier.input_quantization,
                               output_quantization=classifier.output_quantization, frontend=task.frontend,
                               arena_bytes=build.targets["tflite_micro"]["arena_bytes"], decoding=task.decoding,
                               output_shape=classifier.output_shape if task.decoding else None,
                               streaming=evaluation.streaming)
        build.write(f"{name}_model.h", "c_header", header.encode())
    if "vela" in formats:
        say(f"compiling for {settings.vela_accelerator} with Vela")
        _vela_stage(build, content, settings, name)
    for companion in task.companions:
        build.write(companion.file_name, companion.role, companion.path.read_bytes())
        metrics[companion.role] = companion.metrics
    if promote_to is not None:
        say(f"comparing with the bundle in {promote_to}")
        metrics["promotion"] = _compare_with_promoted(task, classifier, evaluation, promote_to, settings)
    manifest = Manifest(
        name=name, task=task.task, labels=task.labels,
        input=InputSpec(kind=task.input_kind, shape=classifier.input_shape,
                        quantization=classifier.input_quantization, frontend=task.frontend_spec),
        output=OutputSpec(shape=classifier.output_shape, quantization=classifier.output_quantization,
                          activation="logits"), streaming=evaluation.streaming,
        files=build.described(), metrics=metrics, targets=build.targets,
        dataset=dataset_ref, recipe=recipe, created=datetime.now(timezone.utc),
        edgedistill_version=_edgedistill_version())
    say("writing the model card and report")
    build.write("README.md", "model_card", model_card_markdown(manifest).encode())
    build.write("report.html", "report", report_html(manifest, task.report_images(classifier)).encode())
    manifest = manifest.model_copy(update={"files": build.described()})
    write_manifest(build.root, manifest).chmod(0o644)  # write_atomic's temp file is private
    return manifest


def _micro_stage(build: _Build, content: bytes, classifier: Int8Classifier, task: _Task) -> None:
    sample = _evenly_spaced(task.test_inputs, task.tflm_inputs)
    quant = classifier.input_quantization
    inputs = quantize(sample, quant.scale, quant.zero_point)
    build.targets["tflite_micro"] = check_on_tflite_micro(content, inputs, classifier.run_int8(inputs))


# -- keyword spotting -----------------------------------------------------------------------------
def export_keyword_bundle(model: torch.nn.Module, *, out_dir: Path, name: str, labels: list[str],
                          frontend: MfccFrontEnd, calibration: np.ndarray, test_features: np.ndarray,
                          test_labels: np.ndarray, float_metrics: dict, settings: ExportSettings,
                          dataset_ref: dict, recipe: dict, test_negative_kinds: list[str | None] = (),
                          test_origins: list[str] = (), held_out_audio: HeldOutAudio | None = None,
                          streaming: StreamingSettings | None = None, real_clips: list[LabelledClip] = (),
                          progress: Callable[[str], None] | None = None, promote_to: Path | None = None) -> Manifest:
    """Export a trained float keyword model as a bundle in `out_dir`; return its manifest.

    `test_negative_kinds` names what each negative test clip says (a keyword's sound-alike, running speech...):
    false accepts are reported per kind too. `test_origins` says where each test clip comes from (synthetic,
    mined from recordings): with more than one, the int8 figures of each are reported apart. With
    `held_out_audio`, the int8 model is run over it as the device would (`streaming` settings) to pick
    per-keyword thresholds for the false-accept target; `real_clips` are real recordings it is measured on.
    With `promote_to`, the bundle there is measured on the same clips and replaced when this one is as good.
    Raises EdgedistillError, leaving `out_dir` as it was, when int8 accuracy drops more than
    `settings.max_int8_accuracy_drop` below `float_metrics["accuracy"]`.
    """
    say = progress or (lambda message: None)
    if len(test_features) == 0 or len(test_features) != len(test_labels):
        raise EdgedistillError(f"export needs test features with one label each (got {len(test_features)} features, "
                               f"{len(test_labels)} labels)", "pass the held-out test split's features and labels")

    def evaluate(classifier: Int8Classifier, float_model: torch.nn.Module) -> dict:
        int8_predictions = classifier.logits(test_features).argmax(axis=1)
        int8_metrics = classification_metrics(test_labels, int8_predictions, labels)
        int8_metrics["false_accept_rate_by_negative"] = _false_accepts_by_kind(int8_predictions, labels,
                                                                             test_negative_kinds)
        if len(set(test_origins)) > 1:
            int8_metrics["by_origin"] = {
                origin: classification_metrics(np.asarray(test_labels)[chosen], int8_predictions[chosen], labels)
                for origin in sorted(set(test_origins)) for chosen in [np.asarray(test_origins) == origin]}
        float_predictions = _float_predictions(float_model, test_features)
        float_accuracy = float_metrics.get("accuracy")
        if float_accuracy is None:
            float_accuracy = float((float_predictions == np.asarray(test_labels)).mean())
        check_accuracy_drop(float_accuracy, int8_metrics["accuracy"], settings)
        agreement = {"top1_agreement": float((float_predictions == int8_predictions).mean()),
                     "count": int(len(test_features))}
        metrics = {"float": float_metrics, "int8": int8_metrics, "int8_vs_float": agreement}
        probabilities = lambda features: softmax(classifier.logits(features))  # noqa: E731
        spec = None
        if held_out_audio is not None:
            say("setting the thresholds on held-out audio, as the device listens")
            spec, metrics["streaming"] = calibrate(held_out_audio, labels, frontend, streaming or StreamingSettings(),
                                                   probabilities)
        if real_clips:
            say(f"measuring on {len(real_clips)} real recordings")
            metrics["real"] = evaluate_on_real(list(real_clips), labels, frontend, probabilities, spec)
        return Evaluation(metrics, spec)

    def score(classifier: Int8Classifier, spec: StreamingSpec | None) -> dict:
        predictions = classifier.logits(test_features).argmax(axis=1)
        figures = {"held_out": float((predictions == np.asarray(test_labels)).mean())}
        if real_clips:
            real_figures = evaluate_on_real(list(real_clips), labels, frontend,
                                            lambda features: softmax(classifier.logits(features)), spec)
            figures["real"] = real_figures["keyword_accuracy"]
        return figures

    task = _Task(task="keyword_spotting", input_kind="audio", frontend=frontend, frontend_spec=frontend.spec(),
                 labels=labels, test_inputs=test_features, tflm_inputs=TFLM_CHECK_INPUTS, evaluate=evaluate,
                 score=score, measure="accuracy")
    return _export(model, task, out_dir=out_dir, name=name, calibration=calibration, settings=settings,
                   dataset_ref=dataset_ref, recipe=recipe, progress=progress, promote_to=promote_to)


def _false_accepts_by_kind(predictions: np.ndarray, labels: list[str], kinds: list[str | None]) -> dict:
    """The share of each kind of negative clip called a keyword."""
    accepted = np.array([is_keyword(labels[p]) for p in predictions])
    return {kind: float(accepted[[k == kind for k in kinds]].mean())
            for kind in sorted({k for k in kinds if k is not None})}


# -- detection (FOMO centroids) -------------------------------------------------------------------
@dataclass
class _DetectionTest:
    """Held-out images at model input size, with true centres in input pixels."""

    images: list[np.ndarray]
    inputs: np.ndarray  # (n, size, size, channels) float
    placements: list[Placement]
    truth: list[list[tuple[int, float, float]]]  # per image: (class index, x, y) in input pixels
    objects: list[Detections]  # per image, in its pixels


def _detection_test(frontend: ImageFrontEnd, images: list[np.ndarray], objects: list[Detections]) -> _DetectionTest:
    if len(images) == 0 or len(images) != len(objects):
        raise EdgedistillError(f"export needs test images with their objects (got {len(images)} images, "
                               f"{len(objects)} object lists)", "pass the held-out test split's images and objects")
    inputs, placements, truth = [], [], []
    for image, image_objects in zip(images, objects):
        prepared, placement = frontend(image)
        xs, ys = placement.to_input(image_objects.centres[:, 0], image_objects.centres[:, 1])
        inputs.append(prepared)
        placements.append(placement)
        truth.append([(int(c), float(x), float(y)) for c, x, y in zip(image_objects.class_ids, xs, ys)])
    return _DetectionTest(list(images), np.stack(inputs), placements, truth, list(objects))


def _float_heatmaps(model: torch.nn.Module, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([torch.softmax(model(torch.from_numpy(inputs[i:i + batch_size])), dim=-1).numpy()
                               for i in range(0, len(inputs), batch_size)])


def export_detection_bundle(model: torch.nn.Module, *, out_dir: Path, name: str, labels: list[str],
                            frontend: ImageFrontEnd, decoding: HeatmapDecoding, calibration: np.ndarray,
                            test_images: list[np.ndarray], test_objects: list[Detections],
                            centroid_distance: float, settings: ExportSettings,
                            dataset_ref: dict, recipe: dict, companions: list[Companion] = (),
                            real: RealPhotoCheck | None = None,
                            progress: Callable[[str], None] | None = None, promote_to: Path | None = None) -> Manifest:
    """Export a trained FOMO heat-map model as a bundle in `out_dir`; return its manifest.

    model: float inputs (n, size, size, channels) from `frontend` -> logits (n, grid, grid, 1 + classes).
    labels: the classes, without background. calibration: `frontend` outputs of training images.
    test_*: held-out RGB images and the labelled objects in each (class ids index `labels`).
    `real`: labelled real photos (and the teacher's boxes on them) to measure the int8 model on, as
    `edgedistill predict` runs it; the figures go under metrics["real"] and the report draws a few.
    Metrics are centroid F1 within `centroid_distance` x input size, float and int8; raises
    EdgedistillError, leaving `out_dir` as it was, when int8 F1 drops more than
    `settings.max_int8_accuracy_drop` below float. With `promote_to`, the bundle there is measured on the
    same images and replaced when this one is as good.
    """
    test = _detection_test(frontend, test_images, test_objects)
    say = progress or (lambda message: None)
    radius = centroid_distance * frontend.size
    # with a black and a white image the int8 input spans the whole pixel range, not only what the
    # calibration photos happened to contain
    extremes = [frontend.normalise(np.full((1, *frontend.input_shape), value, np.uint8)) for value in (0, 255)]
    calibration = np.concatenate([extremes[0], np.asarray(calibration, np.float32), extremes[1]])
    found: dict[str, list] = {}

    def evaluate(classifier: Int8Classifier, float_model: torch.nn.Module) -> dict:
        float_probabilities = _float_heatmaps(float_model, test.inputs)
        int8_probabilities = softmax(classifier.logits(test.inputs))
        found["int8"] = [decoding.decode(p) for p in int8_probabilities]
        float_metrics = centroid_f1(test.truth, [decoding.decode(p) for p in float_probabilities], labels, radius)
        int8_metrics = centroid_f1(test.truth, found["int8"], labels, radius)
        check_accuracy_drop(float_metrics["f1"], int8_metrics["f1"], settings, "centroid F1", "images")
        agreement = {"cell_agreement": float((float_probabilities.argmax(-1) == int8_probabilities.argmax(-1)).mean()),
                     "count": len(test.images)}
        metrics = {"float": float_metrics, "int8": int8_metrics, "int8_vs_float": agreement}
        if real is not None:
            say(f"measuring on {len(real.photos)} real photos")
            metrics["real"], found["real"] = measure_student(
                real, labels, lambda image: detect_centroids(classifier, frontend, decoding, image))
        return Evaluation(metrics)

    def report_images(classifier: Int8Classifier) -> list[tuple[str, bytes]]:
        figures = []
        for i in _evenly_spaced(np.arange(len(test.images)), REPORT_SAMPLE_IMAGES):
            int8 = found["int8"][i]
            in_image = int8.with_boxes(test.placements[i].boxes_to_original(int8.boxes))
            figures.append((f"test image {i}", detection_sample_jpeg(test.images[i], test.objects[i].boxes, in_image, labels)))
        for i in _evenly_spaced(np.arange(len(real.images) if real else 0), REAL_SAMPLE_IMAGES):
            teacher_boxes = real.teacher[i].boxes if real.teacher is not None else None
            figures.append((f"real photo {real.photos[i].path.name}",
                            detection_sample_jpeg(real.images[i], real.photos[i].boxes, found["real"][i],
                                                  labels, teacher_boxes=teacher_boxes)))
        return figures

    def score(classifier: Int8Classifier, _: StreamingSpec | None) -> dict:
        found_now = [decoding.decode(p) for p in softmax(classifier.logits(test.inputs))]
        figures = {"held_out": centroid_f1(test.truth, found_now, labels, radius)["f1"]}
        if real is not None:
            student, _ = measure_student(real, labels, lambda image: detect_centroids(classifier, frontend, decoding,
                                                                                      image))
            figures["real"] = student["student"]["f1"]
        return figures

    task = _Task(task="detection", input_kind="image", frontend=frontend,
                 frontend_spec={**frontend.spec(), "heatmap": decoding.spec(), "centroid_distance": centroid_distance},
                 labels=[BACKGROUND, *labels], test_inputs=test.inputs, tflm_inputs=TFLM_CHECK_IMAGES,
                 evaluate=evaluate, decoding=decoding, report_images=report_images, companions=list(companions),
                 score=score, measure="centroid F1")
    return _export(model, task, out_dir=out_dir, name=name, calibration=calibration, settings=settings,
                   dataset_ref=dataset_ref, recipe=recipe, progress=progress, promote_to=promote_to)

