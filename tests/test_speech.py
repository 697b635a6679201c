"""Speech synthesis with the real offline engines of this machine (espeak-ng, mbrola, flite,
festival, pico, Piper); an engine that is not installed is skipped, not faked."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edgedistill.dataset import Dataset, OntologyClass
from edgedistill.errors import EdgedistillError
from edgedistill.recipe import SILENCE, UNKNOWN, KeywordSpottingRecipe, SpeechSettings
from edgedistill.registry import load_plugin, plugin_names
from generators.speech_engines import SpeechEngine, SynthesisFailed
from generators import synthesis
from generators.synthesis import (SpeechJob, cut_after_carrier, plan_speech, resolve_engines,
                                  synthesize_speech, trim_silence)

ENGINES = [name for name in plugin_names("speech_engines") if name != "openai"]  # its tests: test_api_speech.py
HOSTILE_TEXT = '-v "x"; rm -rf $HOME `ls` <b>&amp;</b>'  # must stay text: no shell, no options, no markup


def _engine(name: str) -> SpeechEngine:
    engine = load_plugin("speech_engines", name)()
    if not engine.available():
        pytest.skip(f"{name} is not installed here ({engine.install_hint})")
    return engine


def _speech_seconds(audio: np.ndarray, rate: int) -> float:
    return trim_silence(audio, rate).size / rate


@pytest.mark.parametrize("name", ENGINES)
def test_every_engine_says_a_word_and_a_phrase(name: str) -> None:
    engine = _engine(name)
    voice = engine.voices()[0]
    assert voice.id == f"{name}/{voice.name}"
    word, rate = engine.synthesize("seven", voice, 1.0, 1.0)
    phrase, phrase_rate = engine.synthesize("zéro, hey robot", voice, 1.0, 1.0)
    odd, _ = engine.synthesize(HOSTILE_TEXT, voice, 1.0, 1.0)
    assert word.dtype == np.float32 and word.ndim == 1 and rate >= 16000 and phrase_rate == rate
    assert 0.2 < _speech_seconds(word, rate) < 1.5
    assert _speech_seconds(phrase, rate) > _speech_seconds(word, rate) + 0.3  # several words came out
    assert _speech_seconds(odd, rate) > 0.5


@pytest.mark.parametrize("name", ENGINES)
def test_rate_changes_the_length(name: str) -> None:
    engine = _engine(name)
    voice = engine.voices()[-1]
    slow = _speech_seconds(*engine.synthesize("seventeen", voice, 0.75, 1.0))
    fast = _speech_seconds(*engine.synthesize("seventeen", voice, 1.3, 1.0))
    assert slow > fast * 1.2


def test_mbrola_audio_is_16_khz_although_espeak_says_22050() -> None:
    engine = _engine("mbrola")
    audio, rate = engine.synthesize("seven", engine.voices()[0], 1.0, 1.0)
    espeak_audio, espeak_rate = _engine("espeak-ng").synthesize("seven", _engine("espeak-ng").voices()[0], 1.0, 1.0)
    assert (rate, espeak_rate) == (16000, 22050)
    assert 0.25 < _speech_seconds(audio, rate) < 0.9  # at a wrong rate it would be 27% shorter or longer


def test_an_engine_failure_is_a_clear_error() -> None:
    engine = _engine("espeak-ng")
    with pytest.raises(SynthesisFailed, match="espeak-ng"):
        engine.synthesize("seven", type(engine.voices()[0])("espeak-ng", "nosuchvoice"), 1.0, 1.0)


def test_a_recipe_naming_a_missing_engine_fails_with_the_package(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # flite's program cannot be found: as if not installed
    with pytest.raises(EdgedistillError) as error:
        resolve_engines(SpeechSettings(engines=["flite"]), str(tmp_path))
    assert "flite" in error.value.problem and "apt-get install flite" in error.value.hint
    with pytest.raises(EdgedistillError, match="no speech engine called 'nope'"):
        resolve_engines(SpeechSettings(engines=["nope"]), str(tmp_path))


def test_every_found_engine_is_used_and_missing_ones_skipped(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no program is found: only Piper (a Python package) remains
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # nor the API engine's key
    assert [engine.name for engine in resolve_engines(SpeechSettings(), str(tmp_path))] == ["piper"]


def test_carrier_phrase_is_cut_back_to_the_word() -> None:
    engine = _engine("espeak-ng")
    voice = engine.voices()[0]
    full, rate = engine.synthesize("the word seven", voice, 1.0, 1.0)
    prefix, _ = engine.synthesize("the word", voice, 1.0, 1.0)
    alone, _ = engine.synthesize("seven", voice, 1.0, 1.0)
    word = trim_silence(cut_after_carrier(full, prefix, rate), rate)
    assert abs(word.size - trim_silence(alone, rate).size) / rate < 0.2


# -- the synthesis stage ---------------------------------------------------------------------

def _tiny_recipe(workers: int) -> KeywordSpottingRecipe:
    return KeywordSpottingRecipe(
        task="keyword_spotting", name="t", keywords=["zéro", "hey robot"],
        speech=SpeechSettings(engines=["espeak-ng", "pico"], voices_per_engine=2, variants_per_voice=1,
                              unknown_share=1.0, silence_share=1.0, workers=workers))


def _dataset(root: Path, recipe: KeywordSpottingRecipe) -> Dataset:
    return Dataset.create(root, recipe.name, "keyword_spotting", [OntologyClass(name=c) for c in recipe.classes])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    recipe = _tiny_recipe(workers=1)
    dataset = _dataset(root / "dataset", recipe)
    calls: list[tuple[int, int]] = []
    result = synthesize_speech(dataset, recipe, root / "work", progress=lambda done, total: calls.append((done, total)))
    return root, recipe, dataset, result, calls


def test_tiny_recipe_gives_every_class_with_spans_groups_and_media(tiny_run) -> None:
    _, recipe, dataset, result, calls = tiny_run
    assert not result.failures
    counts = Counter(s.class_name for s in result.samples)
    voices = 4  # 2 espeak-ng + 2 pico
    assert counts == {"zéro": voices, "hey robot": voices, UNKNOWN: voices, SILENCE: voices}
    assert result.engine_counts == {"espeak-ng": 6, "pico": 6, "noise": 4}
    # one shard of all 16 jobs: none done before it, all after
    assert calls == [(0, 16), (16, 16)] and result.clips_per_second > 0
    for sample in result.samples:
        path = dataset.media_path(sample)
        assert sample.id == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        audio, rate = soundfile.read(path, dtype="float32")
        assert rate == 16000 and audio.size == 16000 and sample.split is None
        label = sample.labels[0]
        start, end = label.span
        assert 0 <= start < end <= 1.0 and label.source.labeler == "synthesis"
        if sample.class_name == SILENCE:
            assert sample.provenance.group.startswith("noise/") and np.sqrt(np.mean(audio**2)) < 0.05
            continue
        voice = sample.provenance.params["voice"]
        assert sample.provenance.group == voice == label.source.model
        assert sample.provenance.source == "speech:" + voice.split("/")[0]
        inside = audio[int(start * rate):int(end * rate)]
        outside = np.concatenate([audio[:int(start * rate)], audio[int(end * rate):]])
        assert np.abs(inside).max() > 0.2 and (outside.size == 0 or np.abs(outside).max() < 0.05)
        assert end - start > 0.15


def test_same_recipe_gives_same_ids_in_parallel_too(tiny_run, tmp_path: Path, monkeypatch) -> None:
    _, _, _, first, _ = tiny_run
    monkeypatch.setattr(synthesis, "SHARD_SIZE", 5)  # several shards, so that two processes share them
    recipe = _tiny_recipe(workers=2)  # spawned processes must make the very same clips
    again = synthesize_speech(_dataset(tmp_path / "dataset", recipe), recipe, tmp_path / "work")
    assert [s.id for s in again.samples] == [s.id for s in first.samples]


def test_a_deleted_shard_is_the_only_one_redone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(synthesis, "SHARD_SIZE", 8)
    recipe = _tiny_recipe(workers=1).model_copy(update={"speech": SpeechSettings(
        engines=["espeak-ng"], voices_per_engine=3, variants_per_voice=2, unknown_share=1.0, workers=1)})
    jobs = plan_speech(recipe, resolve_engines(recipe.speech, str(tmp_path)))
    assert len(jobs) == 24  # three full shards of 8
    dataset, work = _dataset(tmp_path / "dataset", recipe), tmp_path / "work"
    first = synthesize_speech(dataset, recipe, work)
    shards = sorted(work.glob("shard-*.jsonl"))
    stamps = {path: path.stat().st_mtime_ns for path in shards}
    shards[1].unlink()
    calls: list[tuple[int, int]] = []
    second = synthesize_speech(dataset, recipe, work, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (len(jobs) - 8, len(jobs))  # everything but shard 1 came from disk
    assert second.resumed_shards == len(shards) - 1
    assert [p for p in shards if p.stat().st_mtime_ns != stamps[p]] == [shards[1]]
    assert [s.id for s in second.samples] == [s.id for s in first.samples]


def test_plan_is_deterministic_and_spreads_voices() -> None:
    recipe = _tiny_recipe(workers=1)
    engines = resolve_engines(SpeechSettings(engines=["espeak-ng"]), "unused")
    first, second = plan_speech(recipe, engines), plan_speech(recipe, engines)
    assert first == second
    accents = {job.voice.name.split("+")[0] for job in first if job.voice}
    assert len(accents) == 2  # two voices picked from different accents, not two variants of one
    other_seed = plan_speech(recipe.model_copy(update={"seed": 1}), engines)
    assert [j.rate for j in other_seed] != [j.rate for j in first]


@pytest.mark.slow
def test_carrier_and_every_engine_in_one_run(tmp_path: Path) -> None:
    recipe = KeywordSpottingRecipe(task="keyword_spotting", name="t", keywords=["seven"],
                                   speech=SpeechSettings(voices_per_engine=2, variants_per_voice=3, workers=2))
    result = synthesize_speech(_dataset(tmp_path / "dataset", recipe), recipe, tmp_path / "work")
    # every engine found here spoke, and each clip holds the carrier phrase its job was planned with
    engines = resolve_engines(recipe.speech, str(tmp_path))
    assert set(result.engine_counts) == {engine.name for engine in engines} | {"noise"}
    planned = {job.seed: job.carrier for job in plan_speech(recipe, engines)}
    spoken = [s for s in result.samples if s.class_name != SILENCE]
    assert all(s.provenance.params["carrier"] == planned[s.provenance.seed] for s in spoken)
    assert sum(1 for s in spoken if s.provenance.params["carrier"]) >= 1


def test_one_speaker_voiced_by_two_engines_is_one_split_group():
    from generators.speech_engines import Voice

    assert Voice("festival", "kal_diphone").speaker == Voice("flite", "kal16").speaker
    assert Voice("festival", "cmu_us_slt_arctic_hts").speaker == Voice("flite", "slt").speaker
    assert Voice("flite", "awb").speaker != Voice("flite", "rms").speaker


def test_unknown_clips_mix_sound_alikes_parts_of_keywords_running_speech_and_everyday_words(tmp_path) -> None:
    recipe = KeywordSpottingRecipe(
        task="keyword_spotting", name="d", keywords=["six", "seven"],
        speech=SpeechSettings(engines=["espeak-ng"], voices_per_engine=2, variants_per_voice=10, unknown_share=5.0,
                              silence_share=0.0, carrier_phrases=False, workers=1))
    jobs = [j for j in plan_speech(recipe, resolve_engines(recipe.speech, str(tmp_path))) if j.class_name == UNKNOWN]
    kinds = Counter(j.negative for j in jobs)
    assert len(jobs) == 100 and kinds == {"confusable": 40, "partial": 10, "phrase": 20, "everyday": 30}
    texts = {kind: [j.text for j in jobs if j.negative == kind] for kind in kinds}
    assert {"fix", "heaven"} & set(texts["confusable"]) and not {"six", "seven"} & set(texts["everyday"])
    assert len(set(texts["everyday"])) == 30  # no word twice before every word was said once
    assert set(texts["partial"]) <= {"six", "seven"} and all(len(t.split()) >= 3 for t in texts["phrase"])
    partial = next(j for j in jobs if j.negative == "partial" and j.portion[0] == 0.0)
    whole = SpeechJob(**{**partial.__dict__, "class_name": "six", "negative": None, "portion": (0.0, 1.0)})
    dataset = _dataset(tmp_path / "dataset", recipe)
    settings = synthesis._ClipSettings(dataset.location, 16000, 1.0, recipe.speech)
    made = synthesis.synthesize_shard(settings, [partial, whole]).samples
    spans = [s.labels[0].span for s in made]
    assert spans[0][1] - spans[0][0] < 0.7 * (spans[1][1] - spans[1][0])  # only the head of the word is kept
    assert made[0].provenance.params["negative"] == "partial"
