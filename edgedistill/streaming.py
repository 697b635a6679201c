"""Streaming keyword detection, exactly as a device runs it, and the thresholds that set its operating point.

A device hears one long recording, not clips. Every `stride_frames` front-end hops it runs the model on
the newest clip of features, averages the last `smoothing_windows` posteriors, and reports a keyword
whose smoothed posterior reaches that keyword's threshold, then stays quiet for `refractory_seconds`.
`edgedistill predict --stream`, the threshold calibration at export, and the benchmarks all use the
functions here, so the figures a bundle states are the ones its device loop gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgedistill.frontend import MfccFrontEnd
from edgedistill.recipe import StreamingSettings, is_keyword

BLOCK_SECONDS = 60  # audio turned into features at a time: bounds memory on hours of audio
# the thresholds calibration tries, densest near 1 where low false-accept rates live
THRESHOLD_GRID = tuple(np.round(np.concatenate([np.arange(30, 90, 5) / 100, 1 - np.geomspace(0.1, 0.001, 21)]), 4))


class StreamingSpec(BaseModel):
    """How the device slides, smooths and thresholds the model; part of the bundle manifest."""

    model_config = ConfigDict(extra="forbid")

    stride_frames: int = Field(ge=1)  # the model runs every this many front-end hops
    stride_seconds: float
    smoothing_windows: int = Field(ge=1)  # posteriors averaged (the newest and the ones before it)
    refractory_seconds: float = Field(ge=0)  # after a detection, nothing is reported for this long
    thresholds: dict[str, float]  # keyword -> smoothed posterior needed to report it

    @property
    def refractory_runs(self) -> int:
        return int(np.ceil(self.refractory_seconds / self.stride_seconds - 1e-9))

    def threshold_vector(self, labels: list[str]) -> np.ndarray:
        """One threshold per model output; the negative classes are never reported (above 1)."""
        return np.array([self.thresholds.get(label, 2.0) for label in labels], np.float64)


@dataclass(frozen=True)
class Detection:
    label: str
    start: float  # seconds: the start of the window that fired
    end: float
    score: float  # its smoothed posterior


# -- posteriors over a long recording --------------------------------------------------------------
def posterior_track(blocks: Iterable[np.ndarray], frontend: MfccFrontEnd, stride_frames: int,
                    probabilities: Callable[[np.ndarray], np.ndarray],
                    progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Class posteriors (windows, classes) of every window, window j starting at j * stride_frames hops.

    `blocks` are consecutive pieces of one mono recording at the front end's rate; memory stays bounded
    by a block, whatever the recording's length. `probabilities` maps a batch of feature windows to
    class probabilities (the int8 model and a softmax). A recording shorter than one window gives none.
    """
    stride = stride_frames * frontend.hop_length
    pending = np.zeros(0, np.float32)  # audio from the next window's start on
    seen = 0.0
    tracks = []
    for block in blocks:
        pending = np.concatenate([pending, np.asarray(block, np.float32)])
        windows = 0 if pending.size < frontend.clip_samples else 1 + (pending.size - frontend.clip_samples) // stride
        if windows:
            used = (windows - 1) * stride + frontend.clip_samples
            features = frontend.stream_features(pending[:used])
            starts = np.arange(windows) * stride_frames
            tracks.append(probabilities(features[starts[:, None] + np.arange(frontend.frames)]))
            pending = pending[windows * stride:]
        seen += np.asarray(block).size / frontend.sample_rate
        if progress:
            progress(seen)
    return np.concatenate(tracks) if tracks else np.zeros((0, 0), np.float32)


def smooth(track: np.ndarray, windows: int) -> np.ndarray:
    """Causal moving average: row j is the mean of rows j-windows+1..j (fewer at the start)."""
    if len(track) == 0 or windows <= 1:
        return track.astype(np.float64)
    sums = np.cumsum(np.vstack([np.zeros((1, track.shape[1])), track.astype(np.float64)]), axis=0)
    counts = np.minimum(np.arange(1, len(track) + 1), windows)[:, None]
    return (sums[1:] - sums[np.maximum(np.arange(1, len(track) + 1) - windows, 0)]) / counts


def detect(smoothed: np.ndarray, labels: list[str], spec: StreamingSpec, clip_seconds: float) -> list[Detection]:
    """The device loop: at each window, the keyword furthest above its threshold fires, unless a detection
    happened less than `refractory_seconds` before."""
    if len(smoothed) == 0:
        return []
    margins = smoothed - spec.threshold_vector(labels)
    candidates = np.flatnonzero((margins >= 0).any(axis=1))
    detections: list[Detection] = []
    quiet_until = -1
    for window in candidates:
        if window < quiet_until:
            continue
        best = int(np.argmax(margins[window]))
        start = window * spec.stride_seconds
        detections.append(Detection(labels[best], round(start, 3), round(start + clip_seconds, 3),
                                    float(smoothed[window, best])))
        quiet_until = window + spec.refractory_runs
    return detections


# -- the operating point -------------------------------------------------------------------------
def count_firings(scores: np.ndarray, threshold: float, refractory_windows: int) -> int:
    """How often one keyword's smoothed score reaches `threshold`, with a refractory gap after each."""
    count, quiet_until = 0, -1
    for window in np.flatnonzero(scores >= threshold):
        if window >= quiet_until:
            count += 1
            quiet_until = window + refractory_windows
    return count


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    false_accepts_per_hour: float
    false_reject_rate: float | None  # None: no positive clip of this keyword to measure it on


def det_curve(negative: np.ndarray, positive_peaks: np.ndarray, hours: float, refractory_windows: int,
              grid: Iterable[float] = THRESHOLD_GRID) -> list[OperatingPoint]:
    """False accepts per hour on negative audio against false rejects of positive clips, per threshold.

    negative: one keyword's smoothed scores over the negative recording. positive_peaks: that keyword's
    highest smoothed score around each of its own clips.
    """
    return [OperatingPoint(float(t), count_firings(negative, t, refractory_windows) / hours,
                           float((positive_peaks < t).mean()) if len(positive_peaks) else None) for t in grid]


def allocate_thresholds(curves: dict[str, list[OperatingPoint]], max_false_accepts_per_hour: float) -> dict[str, float]:
    """A threshold per keyword, so that their false accepts add up to at most the target with the fewest false
    rejects: from the strictest thresholds, lower step by step the one that buys the most recall per false
    accept it adds (those that add none first). A keyword whose curve never meets the target keeps its strictest."""
    points = {k: sorted(curve, key=lambda p: -p.threshold) for k, curve in curves.items()}
    at = dict.fromkeys(points, 0)
    spent = sum(curve[0].false_accepts_per_hour for curve in points.values())
    while True:
        steps = []
        for keyword, curve in points.items():
            if at[keyword] + 1 < len(curve):
                here, lower = curve[at[keyword]], curve[at[keyword] + 1]
                cost = lower.false_accepts_per_hour - here.false_accepts_per_hour
                gain = (here.false_reject_rate or 0.0) - (lower.false_reject_rate or 0.0)
                if spent + cost <= max_false_accepts_per_hour + 1e-9:
                    steps.append((gain / cost if cost > 0 else np.inf, keyword, cost))
        if not steps:
            return {keyword: curve[at[keyword]].threshold for keyword, curve in points.items()}
        _, keyword, cost = max(steps)
        at[keyword] += 1
        spent += cost


def clip_peaks(smoothed: np.ndarray, clip_starts: np.ndarray, stride_seconds: float, clip_seconds: float,
               column: int) -> np.ndarray:
    """For clips laid end to end in a recording: each clip's highest smoothed score in `column`, over the
    windows that start within half a clip of the clip's own start (the windows that hold most of it)."""
    starts = np.arange(len(smoothed)) * stride_seconds
    peaks = []
    for clip_start in clip_starts:
        near = np.flatnonzero(np.abs(starts - clip_start) <= clip_seconds / 2 + 1e-9)
        peaks.append(float(smoothed[near, column].max()) if near.size else 0.0)
    return np.asarray(peaks)


def smoothed_track(audio: np.ndarray, frontend: MfccFrontEnd, stride_frames: int, smoothing_windows: int,
                   probabilities: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The smoothed posteriors of a recording held in memory, turned into features a block at a time."""
    step = BLOCK_SECONDS * frontend.sample_rate
    blocks = (audio[start:start + step] for start in range(0, len(audio), step))
    return smooth(posterior_track(blocks, frontend, stride_frames, probabilities), smoothing_windows)


@dataclass
class HeldOutAudio:
    """Held-out synthetic audio to set the operating point on: the negative clips joined into one recording,
    and the keyword clips joined into another (each clip `clip_seconds` long, in order)."""

    negative: np.ndarray
    positive: np.ndarray
    positive_classes: np.ndarray  # the class index of each keyword clip


def calibrate(audio: HeldOutAudio, labels: list[str], frontend: MfccFrontEnd, settings: StreamingSettings,
              probabilities: Callable[[np.ndarray], np.ndarray]) -> tuple[StreamingSpec, dict]:
    """Thresholds for the keywords that `settings.thresholds` does not fix, whose false accepts on the negative
    recording add up to at most `settings.max_false_accepts_per_hour` with the fewest false rejects of the keyword
    clips; and the figures of the device loop there: {"false_accepts_per_hour", "false_reject_rate", per keyword,
    "det" curves}."""
    clip_seconds = frontend.clip_samples / frontend.sample_rate
    stride_frames = round(settings.stride_seconds * frontend.sample_rate / frontend.hop_length)
    loop = StreamingSpec(stride_frames=stride_frames,
                         stride_seconds=stride_frames * frontend.hop_length / frontend.sample_rate,
                         smoothing_windows=settings.smoothing_windows, refractory_seconds=settings.refractory_seconds,
                         thresholds={})
    stride_seconds, fixed = loop.stride_seconds, settings.thresholds
    hours = audio.negative.size / frontend.sample_rate / 3600
    negative = smoothed_track(audio.negative, frontend, stride_frames, loop.smoothing_windows, probabilities)
    positive = smoothed_track(audio.positive, frontend, stride_frames, loop.smoothing_windows, probabilities)
    starts = np.arange(len(audio.positive_classes)) * clip_seconds
    keywords = [label for label in labels if is_keyword(label)]
    peaks = {k: clip_peaks(positive, starts[audio.positive_classes == labels.index(k)], stride_seconds, clip_seconds,
                           labels.index(k)) for k in keywords}
    curves = {k: det_curve(negative[:, labels.index(k)], peaks[k], hours, loop.refractory_runs) for k in keywords}
    thresholds = allocate_thresholds({k: c for k, c in curves.items() if k not in fixed},
                                     settings.max_false_accepts_per_hour)
    spec = loop.model_copy(update={"thresholds": {k: fixed.get(k, thresholds.get(k)) for k in keywords}})
    rejects = {k: float((p < spec.thresholds[k]).mean()) if len(p) else None for k, p in peaks.items()}
    measured = [r for r in rejects.values() if r is not None]
    false_accepts = len(detect(negative, labels, spec, clip_seconds))
    return spec, {"negative_hours": round(hours, 4), "keyword_clips": int(len(audio.positive_classes)),
                  "false_accepts": false_accepts, "false_accepts_per_hour": false_accepts / hours if hours else None,
                  "target_false_accepts_per_hour": settings.max_false_accepts_per_hour,
                  "false_reject_rate": float(np.mean(measured)) if measured else None,
                  "false_reject_rate_per_keyword": rejects,
                  "det": {k: [[p.threshold, p.false_accepts_per_hour, p.false_reject_rate] for p in curve]
                          for k, curve in curves.items()}}
