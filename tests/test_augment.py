"""Augmentation on real clips spoken by espeak-ng (its C library: fast), stored in a real dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedistill.audio import fit_to_length, load_audio, resample, wav_bytes
from edgedistill.dataset import AudioShape, Dataset, Label, LabelSource, OntologyClass, Provenance, Sample
from edgedistill.recipe import SILENCE, AugmentSettings
from generators import augment
from generators.augment import (NOISE_COLOURS, augment_dataset_samples, augment_samples, coloured_noise,
                                plan_augment, rms)
from generators.speech_engines import EspeakEngine, Voice

RATE = 16000
QUIET = AugmentSettings(copies=1, snr_db=(10.0, 10.0), reverb_probability=0.0, channel_probability=0.0,
                        max_shift_seconds=0.0, speed_range=(1.0, 1.0))


def _clip_sample(dataset: Dataset, audio: np.ndarray, class_name: str, split: str, group: str,
                 span: tuple[float, float]) -> Sample:
    digest, relative = dataset.add_media(wav_bytes(audio, RATE), "wav")
    return Sample(id=digest[:16], media=relative, kind="audio", shape=AudioShape(duration=1.0, sample_rate=RATE),
                  split=split, provenance=Provenance(source="test", group=group),
                  labels=[Label(class_name=class_name, span=span, source=LabelSource(labeler="synthesis"))])


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Dataset, list[Sample]]:
    engine = EspeakEngine()
    if not engine.available():
        pytest.skip("espeak-ng is not installed")
    dataset = Dataset.create(tmp_path_factory.mktemp("aug") / "ds", "t", "keyword_spotting",
                             [OntologyClass(name=c) for c in ("seven", "one", SILENCE)])
    samples = []
    voices = [("en-us", "train"), ("en+f2", "train"), ("en-us+m3", "test"), ("en-gb-scotland", "test")]
    for voice, split in voices:
        for word in ("seven", "one"):
            audio, rate = engine.synthesize(word, Voice("espeak-ng", voice), 1.0, 1.0)
            audio = resample(audio[np.abs(audio) > 0.0][:RATE], rate, RATE)
            audio = 0.5 * audio / np.abs(audio).max()
            start = (RATE - audio.size) // 2
            samples.append(_clip_sample(dataset, fit_to_length(audio, RATE), word, split, f"espeak-ng/{voice}",
                                        (start / RATE, (start + audio.size) / RATE)))
    rng = np.random.default_rng(0)
    for index, split in enumerate(("train", "test")):
        noise = coloured_noise("pink", RATE, rng) * 0.01
        samples.append(_clip_sample(dataset, noise, SILENCE, split, f"noise/{index}", (0.0, 1.0)))
    return dataset, samples


def test_coloured_noise_has_unit_rms_and_its_colour() -> None:
    rng = np.random.default_rng(1)
    tilts = []
    for colour in NOISE_COLOURS:
        noise = coloured_noise(colour, RATE, rng)
        assert abs(rms(noise) - 1.0) < 1e-3
        power = np.abs(np.fft.rfft(noise)) ** 2
        tilts.append(power[50:500].mean() / power[5000:8000].mean())  # low band over high band
    assert tilts[0] < 2 < tilts[1] < tilts[2]


def test_same_seed_same_copies_and_each_input_kept(clean, tmp_path: Path, monkeypatch) -> None:
    dataset, samples = clean
    monkeypatch.setattr(augment, "SHARD_SIZE", 6)  # several shards: the second run spreads them over 2 processes
    settings = AugmentSettings(copies=2)
    first = augment_samples(dataset, samples, settings, RATE, seed=3, work_dir=tmp_path / "a")
    again = augment_dataset_samples(dataset, samples, settings, RATE, seed=3, work_dir=tmp_path / "b", workers=2)
    assert first[: len(samples)] == samples and len(first) == 3 * len(samples)
    assert [s.id for s in again.samples] == [s.id for s in first] and again.clips_per_second > 0
    other = augment_samples(dataset, samples, settings, RATE, seed=4, work_dir=tmp_path / "c")
    assert {s.id for s in other[len(samples):]}.isdisjoint({s.id for s in first[len(samples):]})


def test_copies_keep_split_group_and_labels(clean, tmp_path: Path) -> None:
    dataset, samples = clean
    settings = AugmentSettings(copies=3, reverb_probability=0.5, channel_probability=0.5, max_shift_seconds=0.1)
    result = augment_samples(dataset, samples, settings, RATE, seed=0, work_dir=tmp_path / "w")
    parents = {s.id: s for s in samples}
    steps = set()
    for copy in result[len(samples):]:
        parent = parents[copy.provenance.params["parent"]]
        assert copy.provenance.source == "augment" and copy.provenance.group == parent.provenance.group
        assert (copy.split, copy.class_name, copy.shape) == (parent.split, parent.class_name, parent.shape)
        (start, end), (parent_start, parent_end) = copy.labels[0].span, parent.labels[0].span
        assert 0.0 <= start < end <= 1.0
        assert (end - start) == pytest.approx(parent_end - parent_start, rel=0.15)
        chain = copy.provenance.params["chain"]
        steps |= {step["step"] for step in chain}
        shift = sum(step["seconds"] for step in chain if step["step"] == "shift")
        if all(step["step"] in ("shift", "noise", "gain", "reverb", "telephone", "low_rate", "pitch") for step in chain):
            assert start == pytest.approx(parent_start + shift, abs=2e-4)
        assert dataset.media_path(copy).exists()
    assert steps >= {"speed", "reverb", "shift", "noise", "gain"} and steps & {"telephone", "low_rate"}


def test_silence_gets_noise_and_gain_only(clean, tmp_path: Path) -> None:
    dataset, samples = clean
    settings = AugmentSettings(copies=4, reverb_probability=1.0, channel_probability=1.0)
    result = augment_samples(dataset, samples, settings, RATE, seed=0, work_dir=tmp_path / "w")
    silent = [s for s in result[len(samples):] if s.class_name == SILENCE]
    assert len(silent) == 8
    for copy in silent:
        assert [step["step"] for step in copy.provenance.params["chain"]] == ["noise", "gain"]
        assert copy.labels[0].span == (0.0, 1.0)


def test_noise_is_added_at_the_snr_asked(clean, tmp_path: Path) -> None:
    dataset, samples = clean
    speech = [s for s in samples if s.class_name != SILENCE]
    for snr in (3.0, 20.0):
        settings = QUIET.model_copy(update={"snr_db": (snr, snr), "copies": 2})
        result = augment_samples(dataset, speech, settings, RATE, seed=1, work_dir=tmp_path / f"snr{snr}")
        measured = []
        for copy in result[len(speech):]:
            chain = copy.provenance.params["chain"]
            if [step["step"] for step in chain] not in (["noise", "gain"], ["speed", "noise", "gain"]):
                continue  # a pitch step changes the speech itself; the rest is exact arithmetic
            parent = next(s for s in speech if s.id == copy.provenance.params["parent"])
            original = load_audio(dataset.media_path(parent), RATE)
            noisy = load_audio(dataset.media_path(copy), RATE) / 10 ** (chain[-1]["db"] / 20)
            start, end = (int(t * RATE) for t in parent.labels[0].span)
            measured.append(20 * np.log10(rms(original[start:end]) / rms(noisy - original)))
        assert len(measured) >= 4
        assert np.allclose(measured, snr, atol=1.0), measured


def test_babble_comes_from_the_same_split_and_other_voices(clean) -> None:
    _, samples = clean
    by_media = {s.media: s for s in samples}
    jobs = plan_augment(samples, copies=3, seed=0)
    assert len(jobs) == 3 * len(samples)
    for job in jobs:
        talkers = [by_media[path] for path in job.babble]
        assert talkers, "every split here has other voices to babble"
        assert all(t.split == job.parent.split and t.class_name != SILENCE for t in talkers)
        assert all(t.provenance.group != job.parent.provenance.group for t in talkers)


def test_real_noise_recordings_stay_in_their_split(clean, tmp_path: Path) -> None:
    import soundfile

    from generators.background_noise import find_noise, noise_split

    dataset, samples = clean
    folder = tmp_path / "noises"
    (folder / "kitchen").mkdir(parents=True)
    rng = np.random.default_rng(4)
    for index in range(12):  # "recordings" of 0.5 to 3 s at other rates; a text file is skipped
        rate = (8000, 22050, 44100)[index % 3]
        soundfile.write(folder / "kitchen" / f"tap{index}.ogg", rng.standard_normal(int(rate * (0.5 + index / 4))) * 0.1,
                        rate, format="OGG", subtype="VORBIS")
    (folder / "notes.txt").write_text("not audio")
    files = find_noise((str(folder),))
    assert len(files) == 12 and {f.source for f in files} == {str(folder)}
    split_of = {Path(f.path).name: noise_split(f, seed=0) for f in files}
    assert {"train", "test"} <= set(split_of.values())
    settings = QUIET.model_copy(update={"copies": 6, "real_noise_share": 1.0, "noise_folders": [str(folder)]})
    result = augment_samples(dataset, samples, settings, RATE, seed=0, work_dir=tmp_path / "w")
    used = 0
    for copy in result[len(samples):]:
        noise = next(step for step in copy.provenance.params["chain"] if step["step"] == "noise")
        if noise["kind"] == "real":
            used += 1
            assert split_of[noise["file"]] == copy.split  # held-out clips hear noises training never heard
            assert ("level_dbfs" in noise) == (copy.class_name == SILENCE)
        else:
            assert noise["kind"] == "babble"  # the only other choice with real_noise_share 1
    assert used > len(result[len(samples):]) / 2


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_vocal_tract_warp_moves_formants_and_keeps_timing(factor: float) -> None:
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t) * (t < 0.5)).astype(np.float32)  # a "formant" for half a second
    clip = augment._Clip(tone.copy(), None, RATE, [])
    augment._warp_vocal_tract(clip, QUIET.model_copy(update={"vocal_tract_range": (factor, factor)}),
                              np.random.default_rng(0))
    spectrum = np.abs(np.fft.rfft(clip.audio))
    assert abs(np.argmax(spectrum) - 1000 * factor) <= 31.25 and clip.audio.size == RATE  # one STFT bin
    assert rms(clip.audio[RATE // 2 + 800:]) < 0.05 * rms(clip.audio[:RATE // 2])  # the sound still ends at 0.5 s
    assert clip.chain == [{"step": "vocal_tract", "factor": factor}]
