"""The Whisper check and VAD centring, on real espeak-ng/flite speech and the packaged tiny.en."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgedistill.audio import load_audio, wav_bytes
from edgedistill.dataset import (
    AudioShape, Dataset, Label, LabelSource, MediaPolicy, OntologyClass, Provenance, Sample,
)
from edgedistill.errors import EdgedistillError
from edgedistill.recipe import SILENCE, UNKNOWN, WhisperCheckSettings
from labelers.vad import centre_on_speech, find_speech
from labelers.whisper import heard_keyword, normalise_transcript, resolve_whisper_model
from labelers.whisper_check import assign_words, check_speech

RATE = 16000
pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")),
                                reason="needs the espeak-ng and flite command-line tools")


def synthesise(folder: Path, engine: str, word: str, stretch: float = 1.0) -> np.ndarray:
    """A word spoken by espeak-ng (en-us) or flite (slt), as 16 kHz float audio."""
    out = folder / f"{engine}-{word}-{stretch}.wav"
    if engine == "espeak-ng":
        command = ["espeak-ng", "-v", "en-us", "-s", str(round(160 / stretch)), "-w", str(out), word]
    else:
        command = ["flite", "-voice", "slt", "--setf", f"duration_stretch={stretch}", "-t", word, "-o", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    return load_audio(out, RATE)


def off_centre_clip(audio: np.ndarray) -> np.ndarray:
    """One second with the speech pushed to the start, so centring has to move it."""
    start, end = find_speech(audio, RATE)
    speech = audio[round(start * RATE):round(end * RATE)]
    clip = np.zeros(RATE, dtype=np.float32)
    clip[800:800 + min(speech.size, RATE - 800)] = speech[:RATE - 800]
    return clip


def add_clip(dataset: Dataset, audio: np.ndarray, sample_id: str, class_name: str,
             engine: str, voice: str) -> Sample:
    _, media = dataset.add_media(wav_bytes(audio, RATE), "wav")
    return Sample(
        id=sample_id, media=media, kind="audio", shape=AudioShape(duration=audio.size / RATE, sample_rate=RATE),
        provenance=Provenance(source="tts", params={"engine": engine}, group=voice),
        labels=[Label(class_name=class_name, source=LabelSource(labeler="tts"))],
    )


@pytest.fixture(scope="module")
def speech_dataset(tmp_path_factory) -> tuple[Dataset, list[Sample]]:
    """Two honest groups, one group whose clips say "seven" but are labelled "three", negatives."""
    root = tmp_path_factory.mktemp("kws")
    wavs = tmp_path_factory.mktemp("wavs")
    ontology = [OntologyClass(name=n) for n in ("seven", "three", "stop", UNKNOWN, SILENCE)]
    dataset = Dataset.create(root, "kws", "keyword_spotting", ontology, MediaPolicy(sample_rate=RATE, clip_seconds=1.0))
    samples = []
    for stretch in (1.0, 1.2):
        for engine, voice, word, label in [("flite", "slt", "seven", "seven"), ("flite", "slt", "stop", "stop"),
                                           ("espeak-ng", "en-us", "seven", "three")]:
            audio = off_centre_clip(synthesise(wavs, engine, word, stretch))
            samples.append(add_clip(dataset, audio, f"{voice}-{label}-{stretch}", label, engine, voice))
    unknown = synthesise(wavs, "flite", "banana")[:RATE]
    samples.append(add_clip(dataset, np.pad(unknown, (0, RATE - unknown.size)), "unknown-1", UNKNOWN, "flite", "slt"))
    samples.append(add_clip(dataset, np.zeros(RATE, np.float32), "silence-1", SILENCE, "noise", "noise"))
    samples.append(add_clip(dataset, np.zeros(RATE, np.float32), "mute-seven", "seven", "flite", "mute"))
    return dataset, samples


def ids(samples: list[Sample]) -> set[str]:
    return {s.id for s in samples}


@pytest.fixture(scope="module")
def packed_result(speech_dataset, tmp_path_factory):
    dataset, samples = speech_dataset
    work = tmp_path_factory.mktemp("work-packed")
    return check_speech(dataset, samples, WhisperCheckSettings(clips_per_voice=2), work), work


def test_check_drops_the_group_that_says_another_word(speech_dataset, packed_result):
    dataset, samples = speech_dataset
    result, _ = packed_result
    assert ids(result.dropped) == {"en-us-three-1.0", "en-us-three-1.2", "mute-seven"}
    assert ids(result.kept) == ids(samples) - ids(result.dropped)
    assert result.voices["en-us"] == {"checked": 2, "heard_right": 0, "dropped_clips": 2}
    assert result.voices["slt"] == {"checked": 4, "heard_right": 4, "dropped_clips": 0}
    assert result.engines_dropped == {"espeak-ng": 2, "flite": 1}
    assert result.failed_groups == [("en-us", "three")]
    assert result.clips_per_second > 0


def test_checked_clips_record_transcript_score_and_centred_span(speech_dataset, packed_result):
    dataset, samples = speech_dataset
    result, work = packed_result
    by_id = {s.id: s for s in result.kept + result.dropped}
    kept = by_id["slt-seven-1.0"].labels[0]
    assert normalise_transcript(kept.transcript) == "seven"
    assert kept.source.labeler == "whisper_check" and kept.source.model == "tiny.en"
    # heard right, so its score is the probability Whisper gave the word: the label its Whisper shard stored
    stored = {item["id"]: item["labels"][0] for shard in (work / "whisper").glob("shard-*.jsonl")
              for item in map(json.loads, shard.read_text().splitlines())}
    assert kept.model_dump(mode="json") == stored["slt-seven-1.0"] and 0 < kept.score <= 1
    wrong = by_id["en-us-three-1.0"].labels[0]
    assert heard_keyword(wrong.transcript, "seven") and wrong.score == 0.0
    start, end = kept.span
    assert abs((start + end) / 2 - 0.5) < 0.02  # the word now sits in the middle of its second
    moved = by_id["slt-seven-1.0"]
    assert moved.media != next(s for s in samples if s.id == moved.id).media
    assert find_speech(load_audio(dataset.media_path(moved), RATE), RATE) == pytest.approx(kept.span, abs=0.05)
    negatives = [s for s in samples if s.class_name in (UNKNOWN, SILENCE)]
    assert all(by_id[s.id] == s for s in negatives)  # passed through untouched


def test_packed_and_single_windows_give_the_same_verdicts(speech_dataset, packed_result, tmp_path):
    dataset, samples = speech_dataset
    packed, _ = packed_result
    single = check_speech(dataset, samples, WhisperCheckSettings(clips_per_voice=2, windowing="single"), tmp_path)
    assert ids(single.kept) == ids(packed.kept)
    assert single.voices == packed.voices


def test_rerun_reuses_the_shards(speech_dataset, packed_result):
    dataset, samples = speech_dataset
    first, work = packed_result
    assert list((work / "whisper").glob("shard-*.jsonl"))
    seen = []
    again = check_speech(dataset, samples, WhisperCheckSettings(clips_per_voice=2), work,
                         progress=lambda done, total: seen.append((done, total)))
    assert again.clips_per_second == 0.0  # no Whisper time spent: every shard was read back
    assert ids(again.kept) == ids(first.kept)
    assert [s.labels for s in again.kept] == [s.labels for s in first.kept]
    # 14 steps: the 7 keyword clips centred (read back as one shard), then up to 2 clips per group heard
    # (read back: 6, as the mute group has no speech to hear), then the end
    assert seen == [(7, 14), (13, 14), (14, 14)]


def test_disabled_check_only_centres(speech_dataset, packed_result, tmp_path):
    dataset, samples = speech_dataset
    result = check_speech(dataset, samples, WhisperCheckSettings(enabled=False), tmp_path)
    assert ids(result.dropped) == {"mute-seven"}  # no speech at all
    assert not list(tmp_path.glob("whisper/shard-*"))  # Whisper never ran
    wrong = next(s for s in result.kept if s.id == "en-us-three-1.0").labels[0]
    assert wrong.transcript is None and wrong.source.labeler == "tts"
    checked = next(s for s in packed_result[0].dropped if s.id == "en-us-three-1.0").labels[0]
    assert wrong.span == checked.span  # centred just as when Whisper checks


@pytest.mark.parametrize("heard, keyword, expected", [
    ("7,", "seven", True),
    ("Seven.", "seven", True),
    ("21", "twenty-one", True),
    ("He came 2nd.", "second", True),
    ("Free.", "three", False),
    ("someone", "one", False),
    ("Hey, Edge!", "hey edge", True),
    ("hey", "hey edge", False),
    ("Goodnight.", "good night", True),
    ("Café!", "cafe", True),
    ("STRASSE", "Straße", True),
    ("Ça va?", "ca va", True),
    ("Don't.", "dont", True),
])
def test_transcripts_are_normalised_before_comparing(heard, keyword, expected):
    assert heard_keyword(heard, keyword) is expected


def test_packed_words_are_split_by_order_not_by_drifting_timestamps():
    from faster_whisper.transcribe import Word

    spans = [(0.4, 0.9), (1.3, 1.8), (2.2, 2.7)]
    # tiny.en placed "no" late, in the share of the next clip: order puts it back.
    words = [Word(0.4, 0.9, " yes,", 0.9), Word(2.0, 2.2, " no", 0.9), Word(2.2, 2.7, " up.", 0.9)]
    assert [[w.word for w in run] for run in assign_words(words, spans)] == [[" yes,"], [" no"], [" up."]]
    # A skipped clip stays empty (to be asked again alone) rather than pulling words across.
    words = [Word(0.4, 0.9, " yes,", 0.9), Word(2.2, 2.7, " up.", 0.9)]
    assert [[w.word for w in run] for run in assign_words(words, spans)] == [[" yes,"], [], [" up."]]
    assert assign_words([Word(0.5, 0.6, " la", 0.5)] * 30, spans) is None  # a hallucination loop


def test_digits_are_written_as_words():
    assert normalise_transcript("7, 3 and 1,000!") == "seven three and one thousand"


def test_resolve_packaged_and_local_models(tmp_path):
    packaged = Path(resolve_whisper_model("tiny.en"))
    assert (packaged / "model.bin").is_file()
    assert resolve_whisper_model(str(packaged)) == str(packaged)
    with pytest.raises(EdgedistillError, match="does not exist"):
        resolve_whisper_model(str(tmp_path / "no-such-model"))
    with pytest.raises(EdgedistillError, match="model.bin"):
        resolve_whisper_model(str(tmp_path))


def test_hub_id_offline_names_the_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(EdgedistillError) as error:
        resolve_whisper_model("Systran/faster-whisper-base.en")
    assert "Systran/faster-whisper-base.en" in error.value.problem and "HF_HUB_OFFLINE" in error.value.hint
    with pytest.raises(EdgedistillError, match="faster-whisper-small"):
        resolve_whisper_model("small")


def test_vad_centres_an_off_centre_word(tmp_path):
    audio = off_centre_clip(synthesise(tmp_path, "flite", "seven"))
    before = find_speech(audio, RATE)
    assert (before[0] + before[1]) / 2 < 0.4
    clip, span = centre_on_speech(audio, RATE, RATE)
    assert clip.size == RATE and abs((span[0] + span[1]) / 2 - 0.5) < 0.02
    after = find_speech(clip, RATE)
    assert abs((after[0] + after[1]) / 2 - 0.5) < 0.05
    again, _ = centre_on_speech(clip, RATE, RATE)
    assert abs(find_speech(again, RATE)[0] - after[0]) < 0.05  # centring a centred clip barely moves it


def test_vad_finds_no_speech_in_silence_and_handles_other_rates():
    clip, span = centre_on_speech(np.zeros(8000, np.float32), RATE, RATE)
    assert span is None and clip.size == RATE
    tone = np.zeros(22050, np.float32)
    assert centre_on_speech(tone, 22050, 11025)[0].size == 11025
