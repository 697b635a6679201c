"""Float DS-CNN -> the bundle a device team receives (DESIGN.md, "The bundle").

The bundle is built in a temporary sibling folder and renamed into place at the end, so a crash
or a failed check leaves the previous bundle (or none), never a half-written one.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from edgedistill.bundle import MANIFEST, BundleFile, InputSpec, Manifest, OutputSpec, describe_file, write_manifest
from edgedistill.errors import EdgedistillError
from edgedistill.frontend import MfccFrontEnd
from edgedistill.inference import Int8Classifier, quantize
from edgedistill.metrics import classification_metrics
from edgedistill.recipe import ExportSettings
from exporters.c_header import c_header_text
from exporters.onnx_export import export_onnx
from exporters.report import model_card_markdown, report_html
from exporters.tflite_int8 import quantize_to_int8_tflite
from exporters.tflite_micro import check_on_tflite_micro
from exporters.vela import compile_for_ethos_u

TFLM_CHECK_INPUTS = 64  # TFLite Micro's reference kernels are slow; a sample shows any mismatch
ONNX_CHECK_INPUTS = 8


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


def _check_accuracy_drop(float_accuracy: float, int8_accuracy: float, settings: ExportSettings) -> None:
    drop = float_accuracy - int8_accuracy
    if drop > settings.max_int8_accuracy_drop:
        raise EdgedistillError(
            f"int8 quantisation costs too much accuracy: float {float_accuracy:.1%}, int8 {int8_accuracy:.1%} "
            f"(a drop of {drop:.1%}, more than the allowed {settings.max_int8_accuracy_drop:.1%}); no bundle written",
            "calibrate on more and more varied clips (export.calibration_samples), train longer or wider so the "
            "model's margins grow, or raise export.max_int8_accuracy_drop if this drop is acceptable")


def _int8_stage(build: _Build, model: torch.nn.Module, calibration: np.ndarray, test_features: np.ndarray,
                test_labels: np.ndarray, labels: list[str], float_metrics: dict, settings: ExportSettings,
                name: str) -> tuple[bytes, Int8Classifier, dict]:
    content = quantize_to_int8_tflite(model, _evenly_spaced(calibration, settings.calibration_samples))
    classifier = Int8Classifier(content)
    if classifier.output_shape[-1] != len(labels):
        raise EdgedistillError(f"the model has {classifier.output_shape[-1]} outputs but {len(labels)} labels "
                               "were given",
                               "pass the labels in the model's output order (recipe.classes)")
    int8_predictions = classifier.logits(test_features).argmax(axis=1)
    int8_metrics = classification_metrics(test_labels, int8_predictions, labels)
    float_predictions = _float_predictions(model, test_features)
    float_accuracy = float_metrics.get("accuracy")
    if float_accuracy is None:
        float_accuracy = float((float_predictions == np.asarray(test_labels)).mean())
    _check_accuracy_drop(float_accuracy, int8_metrics["accuracy"], settings)
    build.write(f"{name}_int8.tflite", "model_int8", content)
    agreement = {"top1_agreement": float((float_predictions == int8_predictions).mean()),
                 "count": int(len(test_features))}
    return content, classifier, {"int8": int8_metrics, "int8_vs_float": agreement}


def _micro_stage(build: _Build, content: bytes, classifier: Int8Classifier, test_features: np.ndarray) -> None:
    sample = _evenly_spaced(test_features, TFLM_CHECK_INPUTS)
    quant = classifier.input_quantization
    inputs = quantize(sample, quant.scale, quant.zero_point)
    build.targets["tflite_micro"] = check_on_tflite_micro(content, inputs, classifier.run_int8(inputs))


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


def export_keyword_bundle(model: torch.nn.Module, *, out_dir: Path, name: str, labels: list[str],
                          frontend: MfccFrontEnd, calibration: np.ndarray, test_features: np.ndarray,
                          test_labels: np.ndarray, float_metrics: dict, settings: ExportSettings,
                          dataset_ref: dict, recipe: dict,
                          progress: Callable[[str], None] | None = None) -> Manifest:
    """Export a trained float keyword model as a bundle in `out_dir`; return its manifest.

    Raises EdgedistillError, leaving `out_dir` as it was, when int8 accuracy drops more than
    `settings.max_int8_accuracy_drop` below `float_metrics["accuracy"]`.
    """
    out_dir = Path(out_dir)
    _refuse_foreign_folder(out_dir)
    if len(test_features) == 0 or len(test_features) != len(test_labels):
        raise EdgedistillError(f"export needs test features with one label each (got {len(test_features)} features, "
                               f"{len(test_labels)} labels)", "pass the held-out test split's features and labels")
    say = progress or (lambda message: None)
    model = copy.deepcopy(model).eval().cpu()  # the caller's model keeps its mode and device
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    built.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        manifest = _build_bundle(_Build(built), model, name, labels, frontend, calibration, test_features,
                                 test_labels, float_metrics, settings, dataset_ref, recipe, say)
        _replace_folder(built, out_dir)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    say(f"bundle written to {out_dir}")
    return manifest


def _build_bundle(build: _Build, model: torch.nn.Module, name: str, labels: list[str], frontend: MfccFrontEnd,
                  calibration: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray,
                  float_metrics: dict, settings: ExportSettings, dataset_ref: dict, recipe: dict,
                  say: Callable[[str], None]) -> Manifest:
    formats = set(settings.formats)
    if "onnx" in formats:
        say("exporting float ONNX")
        build.targets["onnx"] = export_onnx(model, _evenly_spaced(test_features, ONNX_CHECK_INPUTS),
                                            build.root / f"{name}.onnx")
        build.files.append((f"{name}.onnx", "model_float_onnx"))
    say("quantising to full-int8 TFLite")
    content, classifier, int8_metrics = _int8_stage(build, model, calibration, test_features, test_labels,
                                                    labels, float_metrics, settings, name)
    say("checking on TensorFlow Lite Micro")
    _micro_stage(build, content, classifier, test_features)
    if "c_header" in formats:
        say("writing the C header")
        header = c_header_text(name=name, model=content, labels=labels, input_shape=classifier.input_shape,
                               input_quantization=classifier.input_quantization,
                               output_quantization=classifier.output_quantization, frontend=frontend,
                               arena_bytes=build.targets["tflite_micro"]["arena_bytes"])
        build.write(f"{name}_model.h", "c_header", header.encode())
    if "vela" in formats:
        say(f"compiling for {settings.vela_accelerator} with Vela")
        _vela_stage(build, content, settings, name)
    manifest = Manifest(
        name=name, task="keyword_spotting", labels=labels,
        input=InputSpec(kind="audio", shape=classifier.input_shape, quantization=classifier.input_quantization,
                        frontend=frontend.spec()),
        output=OutputSpec(shape=classifier.output_shape, quantization=classifier.output_quantization,
                          activation="logits"),
        files=build.described(), metrics={"float": float_metrics, **int8_metrics}, targets=build.targets,
        dataset=dataset_ref, recipe=recipe, created=datetime.now(timezone.utc),
        edgedistill_version=_edgedistill_version())
    say("writing the model card and report")
    build.write("README.md", "model_card", model_card_markdown(manifest).encode())
    build.write("report.html", "report", report_html(manifest).encode())
    manifest = manifest.model_copy(update={"files": build.described()})
    write_manifest(build.root, manifest).chmod(0o644)  # write_atomic's temp file is private
    return manifest
