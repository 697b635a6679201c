"""A keyword bundle that hears tones, trained and exported in seconds: "low" (300 Hz) and "high" (2.5 kHz)
are the keywords, a rising chirp is `_unknown_`, faint noise `_silence_`. Real audio, real front end,
real int8 model, so predict and streaming run exactly as on speech."""

from pathlib import Path

import numpy as np
import torch

from edgedistill.frontend import MfccFrontEnd
from edgedistill.metrics import classification_metrics
from edgedistill.recipe import ExportSettings, StreamingSettings
from edgedistill.streaming import HeldOutAudio
from exporters.bundle import export_keyword_bundle
from tiny_dscnn import fit_tiny_dscnn

LABELS = ["low", "high", "_unknown_", "_silence_"]
TONES = {"low": 300.0, "high": 2500.0}
RATE = 16000


def tone_clip(label: str, rate: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    noise = 0.01 * rng.standard_normal(t.size)
    if label in TONES:
        return (rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * TONES[label] * rng.uniform(0.85, 1.15) * t) + noise)
    if label == "_unknown_":  # a chirp: sound that is neither keyword
        return 0.3 * np.sin(2 * np.pi * (900 + 1500 * t) * t) + noise
    return noise


def tone_clips(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(clips, class indices), `per_class` one-second clips of each label."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(LABELS)), per_class)
    return np.array([tone_clip(LABELS[i], RATE, 1.0, rng) for i in labels], np.float32), labels


def export_tones_bundle(out_dir: Path, streaming: StreamingSettings | None = None, real_clips=(),
                        test_origins=(), dataset_ref: dict | None = None, steps: int = 120,
                        promote_to: Path | None = None, settings: ExportSettings | None = None,
                        recipe: dict | None = None) -> Path:
    """`test_origins` and `dataset_ref` as export takes them (for figures by origin); the test set has 48 clips.
    `steps` of training: few make a worse model."""
    clips, labels = tone_clips(32, seed=0)
    test_clips, test_labels = tone_clips(12, seed=1)
    features, test_features = MfccFrontEnd()(clips), MfccFrontEnd()(test_clips)
    model = fit_tiny_dscnn(features, labels, len(LABELS), steps=steps)
    with torch.no_grad():
        float_metrics = classification_metrics(test_labels, model(torch.from_numpy(test_features)).argmax(1).numpy(),
                                               LABELS)
    negatives, _ = tone_clips(60, seed=2)  # chirps and noise: 2 minutes of audio without a keyword
    negative_audio = negatives[np.isin(np.repeat(np.arange(len(LABELS)), 60), [2, 3])]
    keyword = np.isin(test_labels, [0, 1])
    held_out = HeldOutAudio(negative=negative_audio.ravel(), positive=test_clips[keyword].ravel(),
                            positive_classes=test_labels[keyword])
    export_keyword_bundle(model, out_dir=out_dir, name="tones", labels=LABELS, frontend=MfccFrontEnd(),
                          calibration=features, test_features=test_features, test_labels=test_labels,
                          float_metrics=float_metrics,
                          settings=settings or ExportSettings(formats=["tflite", "c_header"]),
                          test_origins=test_origins, held_out_audio=held_out, streaming=streaming,
                          real_clips=real_clips, dataset_ref=dataset_ref or {}, recipe=recipe or {},
                          promote_to=promote_to)
    return out_dir
