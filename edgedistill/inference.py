"""Run a bundle's int8 model on audio or image files, with exactly the preprocessing its manifest declares.

The exporter uses the same `Int8Classifier` to measure int8 accuracy, so what `predict` does
and what the bundle's metrics describe are one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from edgedistill.audio import audio_blocks, fit_to_length, load_audio
from edgedistill.bundle import Manifest, Quantization, load_bundle
from edgedistill.errors import EdgedistillError
from edgedistill.frontend import MfccFrontEnd
from edgedistill.boxes import Detections
from edgedistill.image_frontend import HeatmapDecoding, ImageFrontEnd
from edgedistill.images import load_image
from edgedistill.runtimes import TfliteModel, dequantize, quantize
from edgedistill.streaming import detect, posterior_track, smooth

SILENT_PEAK = 10 ** (-80 / 20)  # below -80 dBFS nothing was recorded (16-bit audio's floor is -96 dBFS)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class Int8Classifier:
    """A full-int8 .tflite classifier run with ai-edge-litert (XNNPACK/reference int8 kernels)."""

    def __init__(self, model: Path | bytes) -> None:
        self.model = TfliteModel(model)
        self._input, self._output = self.model.input, self.model.outputs[0]

    @staticmethod
    def _quantization(details: dict) -> Quantization:
        scale, zero_point = details["quantization"]
        return Quantization(scale=float(scale), zero_point=int(zero_point), dtype=np.dtype(details["dtype"]).name)

    @property
    def input_quantization(self) -> Quantization:
        return self._quantization(self._input)

    @property
    def output_quantization(self) -> Quantization:
        return self._quantization(self._output)

    @property
    def input_shape(self) -> list[int]:
        return [int(d) for d in self._input["shape"]]

    @property
    def output_shape(self) -> list[int]:
        return [int(d) for d in self._output["shape"]]

    def run_int8(self, inputs: np.ndarray) -> np.ndarray:
        """int8 inputs (N, ...) -> raw int8 outputs (N, ..., classes), one invoke per sample (batch is 1)."""
        outputs = [self.model.run(row)[0][0] for row in inputs]
        return np.stack(outputs) if outputs else np.zeros((0, *self.output_shape[1:]), np.int8)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Float model inputs (N, ...) -> dequantised outputs (N, ..., classes)."""
        quant_in, quant_out = self.input_quantization, self.output_quantization
        raw = self.run_int8(quantize(features, quant_in.scale, quant_in.zero_point))
        return dequantize(raw, quant_out.scale, quant_out.zero_point)


def loudest_window(audio: np.ndarray, length: int) -> np.ndarray:
    """The `length`-sample window with the most energy; shorter audio is centred and zero-padded.

    A recording may be longer than the model's clip; the keyword is most likely where it is loudest.
    """
    if audio.size <= length:
        return fit_to_length(audio, length)
    energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    start = int(np.argmax(energy[length:] - energy[:-length]))
    return audio[start:start + length].astype(np.float32)


def _classify_file(path: Path, manifest: Manifest, frontend: MfccFrontEnd, classifier: Int8Classifier) -> dict:
    audio = load_audio(path, frontend.sample_rate)
    features = frontend(loudest_window(audio, frontend.clip_samples))[None]
    probabilities = softmax(classifier.logits(features))[0]
    best = int(np.argmax(probabilities))
    return {"file": str(path), "label": manifest.labels[best], "score": float(probabilities[best]),
            "scores": {label: float(p) for label, p in zip(manifest.labels, probabilities)}}


def detect_centroids(classifier: Int8Classifier, frontend: ImageFrontEnd, decoding: HeatmapDecoding,
                     image: np.ndarray) -> Detections:
    """A heat-map model's objects in one RGB image, in that image's pixels (their centres are the centroids)."""
    inputs, placement = frontend(image)
    return decoding.decode(softmax(classifier.logits(inputs[None]))[0], placement)


def _detect_file(path: Path, manifest: Manifest, frontend: ImageFrontEnd, decoding: HeatmapDecoding,
                 classifier: Int8Classifier) -> dict:
    classes = [label for index, label in enumerate(manifest.labels) if index != decoding.background_index]
    found = detect_centroids(classifier, frontend, decoding, load_image(path))
    objects = [{"label": classes[class_id], "score": float(score), "x": float(x), "y": float(y)}
               for class_id, score, (x, y) in zip(found.class_ids, found.scores, found.centres)]
    return {"file": str(path), "objects": objects}


def _image_predictor(manifest: Manifest) -> tuple[ImageFrontEnd, HeatmapDecoding]:
    try:
        return (ImageFrontEnd.from_spec(manifest.input.frontend),
                HeatmapDecoding.from_spec(manifest.input.frontend["heatmap"]))
    except (ValueError, TypeError, KeyError) as error:
        raise EdgedistillError(f"bundle {manifest.name} declares an image front end this version cannot run: "
                               f"{error!r}", "upgrade edgedistill or re-export the bundle") from None


def _checked_stream(blocks: Iterable[np.ndarray], frontend: MfccFrontEnd, notes: list[str],
                    name: str) -> Iterator[np.ndarray]:
    """The recording's blocks, padded with silence to one window when shorter; odd input leaves a note."""
    seen, peak = 0, 0.0
    for block in blocks:
        seen += block.size
        peak = max(peak, float(np.abs(block).max(initial=0.0)))
        yield block
    if seen == 0:
        raise EdgedistillError(f"{name} holds no audio samples", "pass a file with sound in it")
    if seen < frontend.clip_samples:
        notes.append(f"{name} lasts {seen / frontend.sample_rate:.2f} s, less than the model's "
                     f"{frontend.clip_samples / frontend.sample_rate:g} s window: padded with silence to one window")
        yield np.zeros(frontend.clip_samples - seen, np.float32)
    if peak < SILENT_PEAK:
        notes.append(f"{name} is silent (peak {peak:.1e}): nothing to detect")


def stream_file(bundle_dir: Path, file: Path,
                progress: Callable[[float], None] | None = None) -> tuple[list[dict], list[str]]:
    """Listen to a recording of any length as the device does (the manifest's stride, smoothing, thresholds and
    refractory period): one {"file", "label", "start", "end", "score"} per detection, times in seconds, and
    notes on what was odd about the input. Memory stays bounded by a block of audio."""
    manifest, classifier = _open_bundle(bundle_dir)
    if manifest.input.kind != "audio" or manifest.streaming is None:
        raise EdgedistillError(f"bundle {manifest.name} declares no streaming detection",
                               "--stream needs a keyword bundle exported by this version; re-export it")
    frontend = _audio_frontend(manifest)
    spec = manifest.streaming
    notes: list[str] = []
    blocks = _checked_stream(audio_blocks(file, frontend.sample_rate), frontend, notes, str(file))
    track = posterior_track(blocks, frontend, spec.stride_frames,
                            lambda features: softmax(classifier.logits(features)), progress)
    detections = detect(smooth(track, spec.smoothing_windows), manifest.labels, spec,
                        frontend.clip_samples / frontend.sample_rate)
    return [{"file": str(file), "label": d.label, "start": d.start, "end": d.end, "score": round(d.score, 4)}
            for d in detections], notes


def _open_bundle(bundle_dir: Path) -> tuple[Manifest, Int8Classifier]:
    bundle_dir = Path(bundle_dir)
    manifest = load_bundle(bundle_dir)
    classifier = Int8Classifier(bundle_dir / manifest.file("model_int8").path)
    _check_manifest_matches_model(manifest, classifier)
    return manifest, classifier


def _audio_frontend(manifest: Manifest) -> MfccFrontEnd:
    try:
        return MfccFrontEnd.from_spec(manifest.input.frontend)
    except (ValueError, TypeError) as error:
        raise EdgedistillError(f"bundle {manifest.name} declares a front end this version cannot run: {error}",
                               "upgrade edgedistill or re-export the bundle") from None


def predict_files(bundle_dir: Path, files: list[Path]) -> list[dict]:
    """Run a bundle on each file: audio (any format soundfile/ffmpeg reads, any sample rate) for a keyword
    bundle -> {"file", "label", "score", "scores"}; images (any format Pillow reads) for a detection
    bundle -> {"file", "objects": [{"label", "score", "x", "y"}]}, x and y in the image's own pixels.

    Raises EdgedistillError naming the file for missing, empty or corrupt input.
    """
    manifest, classifier = _open_bundle(bundle_dir)
    if manifest.input.kind == "image":
        frontend, decoding = _image_predictor(manifest)
        return [_detect_file(Path(file), manifest, frontend, decoding, classifier) for file in files]
    audio_frontend = _audio_frontend(manifest)
    return [_classify_file(Path(file), manifest, audio_frontend, classifier) for file in files]


def _check_manifest_matches_model(manifest: Manifest, classifier: Int8Classifier) -> None:
    """The manifest is what a device team codes against: refuse a model that disagrees with it."""
    declared = manifest.input.quantization
    actual = classifier.input_quantization
    if declared is None or not np.isclose(declared.scale, actual.scale) or declared.zero_point != actual.zero_point:
        raise EdgedistillError(f"bundle {manifest.name}: the manifest's input quantisation {declared} does not match "
                               f"the model's ({actual})", "re-export the bundle")
    if classifier.output_shape[-1] != len(manifest.labels):
        raise EdgedistillError(f"bundle {manifest.name}: the model has {classifier.output_shape[-1]} outputs but the "
                               f"manifest lists {len(manifest.labels)} labels", "re-export the bundle")
