"""The API speech engine (`openai` among speech.engines) against an OpenAI-compatible server on loopback
(tests/openai_server.py), through the real `openai` client: every voice speaks at the planned speed,
each clip is asked for once (a rerun is served from the dataset's cache), the budget is checked before
any request, and a missing key skips the engine unless the recipe names it."""

import logging

import numpy as np
import pytest

from edgedistill.audio import load_audio
from edgedistill.dataset import Dataset, OntologyClass
from edgedistill.errors import EdgedistillError
from edgedistill.recipe import SILENCE, KeywordSpottingRecipe, SpeechSettings
from generators.synthesis import resolve_engines, synthesize_speech
from openai_server import KEY, OpenAiServer, speech_pitch


def _recipe(server, **api) -> KeywordSpottingRecipe:
    return KeywordSpottingRecipe(
        task="keyword_spotting", name="t", keywords=["yes"],
        speech=SpeechSettings(engines=["openai"], variants_per_voice=2, unknown_share=1.0, silence_share=0.0,
                              carrier_phrases=False, workers=1,
                              api={"base_url": server.url, "voices": ["alloy", "echo"], "retries": 1, **api}))


def _dataset(root, recipe) -> Dataset:
    return Dataset.create(root, recipe.name, "keyword_spotting", [OntologyClass(name=c) for c in recipe.classes])


def _speed(request) -> float:
    return request["body"]["speed"]


def test_every_voice_speaks_at_the_planned_speed_once_and_a_rerun_asks_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAiServer() as server:
        recipe = _recipe(server)
        dataset = _dataset(tmp_path / "dataset", recipe)
        result = synthesize_speech(dataset, recipe, tmp_path / "work")
        asked = [r for r in server.requests if r["path"].endswith("/audio/speech")]
        again = synthesize_speech(dataset, recipe, tmp_path / "again")
        assert len(server.requests) == len(asked)  # every clip came from the dataset's cache
    spoken = [s for s in result.samples if s.class_name != SILENCE]
    assert len(asked) == len(spoken) == 8  # 2 voices x 2 variants of "yes", and as many unknown clips
    assert {r["body"]["voice"] for r in asked} == {"alloy", "echo"}
    assert {r["body"]["model"] for r in asked} == {"gpt-4o-mini-tts"}
    assert all(r["body"]["response_format"] == "wav" for r in asked)
    assert sorted(_speed(r) for r in asked) == sorted(round(s.provenance.params["rate"], 4) for s in spoken)
    # the clip holds the voice's tone (pitch shifts move it a little): the server's audio, not another engine's
    for sample in spoken[:4]:
        audio = load_audio(dataset.media_path(sample), 16000)
        peak = np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / len(audio)
        voice = sample.provenance.params["voice"].split("/")[1]
        assert abs(peak / speech_pitch(voice) - 1) < 0.25
    characters = sum(len(r["body"]["input"]) for r in asked)
    assert result.api_usage == {"openai": {"asked": 8, "from_cache": 0, "input_tokens": 0, "output_tokens": 0,
                                           "characters": characters, "cost": pytest.approx(characters * 15 / 1e6)}}
    assert again.api_usage["openai"]["asked"] == 0 and again.api_usage["openai"]["from_cache"] == 8
    assert [s.id for s in again.samples] == [s.id for s in result.samples]


def test_a_plan_over_budget_is_refused_before_any_request(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAiServer() as server:
        recipe = _recipe(server, max_requests=5)
        with pytest.raises(EdgedistillError, match="asks gpt-4o-mini-tts for 8 clips not made before") as raised:
            synthesize_speech(_dataset(tmp_path / "dataset", recipe), recipe, tmp_path / "work")
        assert "nothing was asked yet" in raised.value.hint and server.requests == []
        cheap = _recipe(server, max_cost=1e-6)  # less than one clip's characters cost
        with pytest.raises(EdgedistillError, match="max_cost"):
            synthesize_speech(_dataset(tmp_path / "cheap", cheap), cheap, tmp_path / "cheap-work")
        assert server.requests == []


def test_a_refused_key_or_garbage_audio_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with OpenAiServer() as server:
        recipe = _recipe(server)
        with pytest.raises(EdgedistillError, match="refused the API key in OPENAI_API_KEY"):
            synthesize_speech(_dataset(tmp_path / "dataset", recipe), recipe, tmp_path / "work")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        server.faults.extend(["garbage"])
        result = synthesize_speech(_dataset(tmp_path / "other", recipe), recipe, tmp_path / "other-work")
    # the clip whose audio was not audio is recorded as a failure; the others are made
    assert len(result.failures) == 1 and "is not a WAV file" in result.failures[0].error
    assert len([s for s in result.samples if s.class_name != SILENCE]) == 7


def test_without_a_key_the_engine_is_skipped_unless_the_recipe_names_it(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    caplog.set_level(logging.WARNING)
    found = resolve_engines(SpeechSettings(), str(tmp_path))
    assert "openai" not in [engine.name for engine in found]
    assert "speech engine openai is not installed; skipped (set OPENAI_API_KEY" in caplog.text
    with pytest.raises(EdgedistillError, match="speech engine 'openai' is not installed") as raised:
        resolve_engines(SpeechSettings(engines=["openai"]), str(tmp_path))
    assert "OPENAI_API_KEY" in raised.value.hint
