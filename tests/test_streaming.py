"""Streaming detection as the device runs it, the thresholds set at export, and figures on real recordings."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edgedistill.audio import audio_blocks
from edgedistill.bundle import load_bundle
from edgedistill.errors import EdgedistillError
from edgedistill.frontend import MfccFrontEnd
from edgedistill.inference import stream_file
from edgedistill.real_speech import read_labelled_clips
from edgedistill.recipe import StreamingSettings, parse_recipe
from edgedistill.streaming import (THRESHOLD_GRID, OperatingPoint, StreamingSpec, allocate_thresholds, count_firings,
                                   detect, posterior_track, smooth)
from tones import LABELS, RATE, export_tones_bundle, tone_clip

ROOT = Path(__file__).parents[1]
KEYWORD_TIMES = [(4.0, "low"), (11.5, "high"), (19.3, "low"), (27.0, "high")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_tones_bundle(tmp_path_factory.mktemp("streaming") / "tones",
                               StreamingSettings(max_false_accepts_per_hour=2.0, refractory_seconds=1.5))


def _recording(path: Path, seconds: float, keywords: list[tuple[float, str]], seed: int = 5) -> Path:
    """Faint noise with chirps (the non-keyword sound) every few seconds and tones where `keywords` say."""
    rng = np.random.default_rng(seed)
    audio = 0.01 * rng.standard_normal(int(seconds * RATE)).astype(np.float32)
    for start in np.arange(1.5, seconds - 1, 3.7):
        if all(abs(start - t) > 1.5 for t, _ in keywords):
            audio[int(start * RATE):int(start * RATE) + RATE] += tone_clip("_unknown_", RATE, 1.0, rng)
    for start, label in keywords:
        audio[int(start * RATE):int(start * RATE) + RATE] += tone_clip(label, RATE, 1.0, rng)
    soundfile.write(path, audio, RATE)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_stream_finds_each_keyword_at_its_time(bundle, tmp_path):
    recording = _recording(tmp_path / "long.wav", 32.0, KEYWORD_TIMES)
    done = _cli("predict", str(bundle), str(recording), "--stream", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert [d["label"] for d in found] == [label for _, label in KEYWORD_TIMES]
    for detection, (start, _) in zip(found, KEYWORD_TIMES):
        assert set(detection) == {"file", "label", "start", "end", "score"}
        # the window that fires holds the tone: it starts less than a window before the tone, and at most
        # half a window after its start
        assert start - 1.0 < detection["start"] <= start + 0.5
        assert detection["end"] == pytest.approx(detection["start"] + 1.0)
        manifest = load_bundle(bundle)
        assert detection["score"] >= manifest.streaming.thresholds[detection["label"]]


def test_non_keyword_sound_gives_the_false_accepts_the_bundle_states(bundle, tmp_path):
    manifest = load_bundle(bundle)
    stated = manifest.metrics["streaming"]
    hours = 120 / 3600  # tones.export_tones_bundle: 60 chirps and 60 noise clips of a second
    assert stated["negative_hours"] == round(hours, 4) and stated["keyword_clips"] == 24  # the test tones
    assert stated["false_accepts_per_hour"] == stated["false_accepts"] / hours <= 2.0
    assert set(stated["det"]) == {"low", "high"}
    assert set(manifest.streaming.thresholds) == {"low", "high"}
    assert all(t in THRESHOLD_GRID for t in manifest.streaming.thresholds.values())  # calibrated on the grid
    assert 'alt="DET curves"' in (bundle / "report.html").read_text()
    assert "Listening to a stream" in (bundle / "README.md").read_text()
    found, _ = stream_file(bundle, _recording(tmp_path / "chirps.wav", 120.0, []))
    assert len(found) / (120 / 3600) <= max(stated["false_accepts_per_hour"], 2.0)


def test_short_silent_and_long_inputs(bundle, tmp_path):
    short = tmp_path / "short.wav"
    soundfile.write(short, tone_clip("high", RATE, 0.6, np.random.default_rng(1)).astype(np.float32), RATE)
    found, notes = stream_file(bundle, short)
    assert [d["label"] for d in found] == ["high"] and "padded" in notes[0]
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(3 * RATE, np.float32), RATE)
    found, notes = stream_file(bundle, silent)
    assert found == [] and any("silent" in note for note in notes)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), RATE)
    with pytest.raises(EdgedistillError, match="no audio"):
        stream_file(bundle, empty)
    # a 44.1 kHz file streams block by block (bounded memory) and hears the same as the whole file at once
    recording = _recording(tmp_path / "long.wav", 32.0, KEYWORD_TIMES)
    audio, _ = soundfile.read(recording, dtype="float32")
    soundfile.write(tmp_path / "long44.wav", __import__("soxr").resample(audio, RATE, 44100), 44100)
    seen = []
    found, _ = stream_file(bundle, tmp_path / "long44.wav", seen.append)
    assert [d["label"] for d in found] == [label for _, label in KEYWORD_TIMES]
    # progress after each block read, in seconds of audio heard so far: all 32 s by the last
    blocks = [block.size for block in audio_blocks(tmp_path / "long44.wav", RATE)]
    assert len(blocks) == 3 and seen == pytest.approx(list(np.cumsum(blocks) / RATE), abs=1e-9)
    assert seen[-1] == pytest.approx(32.0, abs=1e-9)


def test_posteriors_do_not_depend_on_how_the_audio_is_cut():
    frontend = MfccFrontEnd()
    audio = np.random.default_rng(0).standard_normal(5 * RATE + 1234).astype(np.float32)
    energy = lambda f: np.stack([f.mean(axis=(1, 2)), f.std(axis=(1, 2))], axis=1)  # noqa: E731
    whole = posterior_track([audio], frontend, 5, energy)
    pieces = posterior_track((audio[i:i + 7001] for i in range(0, audio.size, 7001)), frontend, 5, energy)
    assert whole.shape == (1 + (audio.size - RATE) // 1600, 2)
    np.testing.assert_allclose(pieces, whole, rtol=1e-5)
    window = frontend(audio[3 * 1600:3 * 1600 + RATE])  # window 3 is exactly the clip starting at 3 strides
    np.testing.assert_allclose(whole[3], [window.mean(), window.std()], rtol=1e-4)
    assert posterior_track([audio[:RATE - 1]], frontend, 5, energy).size == 0


def test_smoothing_detection_and_refractory_period():
    track = np.zeros((20, 4))
    track[:, 3] = 1.0
    track[5:8] = [0.9, 0.0, 0.1, 0.0]  # "low" for three windows
    track[9] = [0.0, 0.95, 0.05, 0.0]  # "high" one window later: inside the refractory period
    track[16:18] = [0.0, 0.97, 0.03, 0.0]
    smoothed = smooth(track, 2)
    np.testing.assert_allclose(smoothed[6], (track[5] + track[6]) / 2)
    spec = StreamingSpec(stride_frames=5, stride_seconds=0.1, smoothing_windows=2, refractory_seconds=0.6,
                         thresholds={"low": 0.8, "high": 0.9})
    found = detect(smoothed, LABELS, spec, clip_seconds=1.0)
    assert [(d.label, d.start) for d in found] == [("low", 0.6), ("high", 1.7)]
    assert count_firings(smoothed[:, 0], 0.8, refractory_windows=1) == 2  # windows 6 and 7
    assert count_firings(smoothed[:, 0], 0.8, refractory_windows=2) == 1
    assert count_firings(np.array([1, 0, 1, 0, 1.0]), 0.5, refractory_windows=2) == 3


def test_thresholds_spend_the_false_accept_budget_where_it_buys_most_recall():
    curves = {  # (threshold, false accepts per hour, false reject rate), strictest last
        "easy": [OperatingPoint(0.5, 0.0, 0.02), OperatingPoint(0.9, 0.0, 0.1), OperatingPoint(0.99, 0.0, 0.3)],
        "hard": [OperatingPoint(0.5, 9.0, 0.05), OperatingPoint(0.9, 0.4, 0.2), OperatingPoint(0.99, 0.0, 0.6)],
        "fussy": [OperatingPoint(0.5, 3.0, 0.1), OperatingPoint(0.9, 0.3, 0.15), OperatingPoint(0.99, 0.0, 0.16)],
    }
    # free steps first ("easy" all the way down); then 0.4/h buys "hard" 40 points, 0.3/h buys "fussy" 1
    assert allocate_thresholds(curves, 0.5) == {"easy": 0.5, "hard": 0.9, "fussy": 0.99}
    assert allocate_thresholds(curves, 0.7) == {"easy": 0.5, "hard": 0.9, "fussy": 0.9}
    assert allocate_thresholds(curves, 0.0) == {"easy": 0.5, "hard": 0.99, "fussy": 0.99}


def test_real_clips_are_measured_into_the_bundle(tmp_path):
    rng = np.random.default_rng(9)
    rows = ["file,word,speaker"]
    for index, word in enumerate(["low", "high", "low", "high", "whistle", "whistle"]):
        sound = "_unknown_" if word == "whistle" else word
        soundfile.write(tmp_path / f"{index}.wav", tone_clip(sound, 22050, 1.2, rng).astype(np.float32), 22050)
        rows.append(f"{index}.wav,{word},speaker{index % 3}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    clips = read_labelled_clips(tmp_path)
    assert len(clips) == 6 and clips[0].speaker == "speaker0"
    manifest = load_bundle(export_tones_bundle(tmp_path / "bundle", real_clips=clips))
    real = manifest.metrics["real"]
    assert (real["keyword_clips"], real["non_keyword_clips"], real["speakers"]) == (4, 2, 3)
    assert real["keyword_accuracy"] == 1.0 and real["non_keyword_rejected"] == 1.0
    assert real["streaming"]["false_accepts"] == 0 and real["streaming"]["false_reject_rate"] == 0.0
    card = (tmp_path / "bundle" / "README.md").read_text()
    assert "real recordings" in card and "3 speakers" in card
    header = next((tmp_path / "bundle").glob("*_model.h")).read_text()
    assert "TONES_STRIDE_FRAMES 5" in header and "tones_thresholds[4]" in header


def test_bad_real_sets_and_streaming_settings_are_clear_errors(tmp_path):
    with pytest.raises(EdgedistillError, match="do not exist"):
        read_labelled_clips(tmp_path / "nowhere")
    (tmp_path / "labels.csv").write_text("path,text\na.wav,low\n")
    with pytest.raises(EdgedistillError, match="`file` and `word`"):
        read_labelled_clips(tmp_path)
    (tmp_path / "labels.csv").write_text("file,word\na.wav,low\n")
    with pytest.raises(EdgedistillError, match="1 clip"):
        read_labelled_clips(tmp_path / "labels.csv")
    (tmp_path / "a.wav").write_bytes(b"RIFF not really a wave file")
    assert len(read_labelled_clips(tmp_path)) == 1
    with pytest.raises(EdgedistillError, match="a.wav"):
        read_labelled_clips(tmp_path, decode=True)
    base = {"task": "keyword_spotting", "name": "x", "keywords": ["low"]}
    with pytest.raises(EdgedistillError, match="from 0 to 1"):
        parse_recipe(base | {"detect": {"thresholds": {"low": 1.5}}})
    with pytest.raises(EdgedistillError, match="not keywords"):
        parse_recipe(base | {"detect": {"thresholds": {"high": 0.5}}})
    with pytest.raises(EdgedistillError, match="whole number of front-end hops"):
        parse_recipe(base | {"detect": {"stride_seconds": 0.03}})
