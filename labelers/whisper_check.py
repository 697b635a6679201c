"""Check that synthetic keyword clips say their keyword, with Whisper; centre each word with VAD.

Text-to-speech voices mispronounce some words (OFFLINE.md: Whisper tiny.en heard the intended
word in 18 of 27 engine/voice samples). A voice either says a keyword well or it does not, so
the check is per (voice, keyword) group: a few clips of each group are transcribed, and every
clip of a group that Whisper does not hear as the keyword is dropped.

Whisper pads every input to a 30 s window, so one 1 s clip per call wastes ~29 s of encoder
work. Clips are therefore packed, trimmed to their speech, into one window separated by short
silences; the words are split back into clips in order, guided by their timestamps (which
drift too far to use alone). A clip left without words is transcribed again on its own.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from edgedistill.audio import load_audio, wav_bytes
from edgedistill.dataset import AudioShape, Dataset, LabelSource, Sample
from edgedistill.labelling import Labeler, run_labeler
from edgedistill.recipe import SILENCE, UNKNOWN, WhisperCheckSettings
from edgedistill.shards import ShardOutput, run_shards
from labelers.vad import centre_on_speech
from labelers.whisper import WHISPER_RATE, heard_keyword, load_whisper, model_version, transcribe, whisper_language

LABELER = "whisper_check"
WINDOW_SECONDS = 30.0  # Whisper's fixed input window
PACK_GAP_SECONDS = 0.4  # silence between packed clips: Whisper then writes them as separate words
SPEECH_MARGIN_SECONDS = 0.1  # audio kept either side of the VAD span when a clip is transcribed
MAX_CLIPS_PER_WINDOW = 20
CENTRE_SHARD_SIZE = 64  # clips per resumable centring shard
MAX_WORDS_PER_CLIP = 8  # more than this in one clip's share of a window: a hallucination loop
EMPTY_RUN_SECONDS = 1.0  # what a clip left without words costs, in seconds of word drift

Windowing = Literal["packed", "single"]


@dataclass
class HeardClip:
    """What Whisper heard in one clip: its words joined, and their mean probability."""

    text: str
    probability: float


@dataclass
class CheckResult:
    kept: list[Sample]
    dropped: list[Sample]
    voices: dict[str, dict[str, int]]  # {voice: {"checked", "heard_right", "dropped_clips"}}
    engines_dropped: dict[str, int]  # clips dropped per speech engine
    clips_per_second: float  # clips transcribed per second of Whisper time (0 when none)
    failed_groups: list[tuple[str, str]] = field(default_factory=list)  # (voice, keyword)


def heard_from_words(words) -> HeardClip:
    if not words:
        return HeardClip("", 0.0)
    return HeardClip("".join(w.word for w in words).strip(), float(np.mean([w.probability for w in words])))


def transcribe_single(model, clip: np.ndarray) -> HeardClip:
    return heard_from_words(transcribe(model, clip, whisper_language(model)))


def pack_windows(seconds: list[float], max_clips: int = MAX_CLIPS_PER_WINDOW) -> list[list[int]]:
    """Indices of clips per window: as many as fit in 30 s with a gap before each and after the last."""
    windows: list[list[int]] = [[]]
    used = PACK_GAP_SECONDS
    for index, length in enumerate(seconds):
        if windows[-1] and (used + length + PACK_GAP_SECONDS > WINDOW_SECONDS or len(windows[-1]) >= max_clips):
            windows.append([])
            used = PACK_GAP_SECONDS
        windows[-1].append(index)
        used += length + PACK_GAP_SECONDS
    return [w for w in windows if w]


def distance_to(span: tuple[float, float], word) -> float:
    """Seconds between a word's middle and a clip's share of the window (its speech and half of each gap)."""
    middle = (word.start + word.end) / 2
    return max(0.0, span[0] - PACK_GAP_SECONDS / 2 - middle, middle - span[1] - PACK_GAP_SECONDS / 2)


def assign_words(words, spans: list[tuple[float, float]]) -> list[list] | None:
    """Split Whisper's words, in order, into one run per clip; None when no split fits.

    Word timestamps of tiny.en drift late by up to ~0.7 s over a window, so the nearest clip is
    often the next one. The split kept is the one in order that moves words the fewest seconds,
    where leaving a clip without words costs as much as moving a word by EMPTY_RUN_SECONDS: a
    drifted word goes back to its own clip rather than emptying it. The clips' labels play no
    part, so a clip can never pass by taking a neighbour's word that happens to be its keyword.
    """
    n, m = len(spans), len(words)
    best = [[float("inf")] * (m + 1) for _ in range(n + 1)]
    choice = [[0] * (m + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for i in range(n):
        for j in range(m + 1):
            if best[i][j] == float("inf"):
                continue
            for k in range(j, min(m, j + MAX_WORDS_PER_CLIP) + 1):
                moved = sum(distance_to(spans[i], w) for w in words[j:k]) if k > j else EMPTY_RUN_SECONDS
                if best[i][j] + moved < best[i + 1][k]:
                    best[i + 1][k], choice[i + 1][k] = best[i][j] + moved, j
    if best[n][m] == float("inf"):
        return None
    runs, k = [], m
    for i in range(n, 0, -1):
        j = choice[i][k]
        runs.append(words[j:k])
        k = j
    return runs[::-1]


def transcribe_packed(model, clips: list[np.ndarray]) -> list[HeardClip | None]:
    """Transcribe clips packed into one window; None for a clip that got no words of its own."""
    gap = np.zeros(round(PACK_GAP_SECONDS * WHISPER_RATE), dtype=np.float32)
    spans, pieces, position = [], [gap], gap.size
    for clip in clips:
        spans.append((position / WHISPER_RATE, (position + clip.size) / WHISPER_RATE))
        pieces += [clip, gap]
        position += clip.size + gap.size
    runs = assign_words(transcribe(model, np.concatenate(pieces), whisper_language(model)), spans)
    if runs is None:  # a hallucinated loop of words: fall back to one clip per window
        return [None] * len(clips)
    # A clip with no words may be one Whisper skipped in a run of repeats: it is asked again alone.
    return [heard_from_words(run) if run else None for run in runs]


def transcribe_clips(model, clips: list[np.ndarray], windowing: Windowing = "packed") -> list[HeardClip]:
    """What Whisper hears in each clip (16 kHz speech, trimmed), packed or one clip per window."""
    if windowing == "single":
        return [transcribe_single(model, clip) for clip in clips]
    heard: list[HeardClip] = []
    for window in pack_windows([c.size / WHISPER_RATE for c in clips]):
        packed = transcribe_packed(model, [clips[i] for i in window])
        heard += [h if h is not None else transcribe_single(model, clips[i]) for h, i in zip(packed, window)]
    return heard


# -- the dataset stage ------------------------------------------------------------------------
def is_keyword_sample(sample: Sample) -> bool:
    return sample.kind == "audio" and sample.class_name not in (None, UNKNOWN, SILENCE)


def voice_of(sample: Sample) -> str:
    return sample.provenance.group or sample.provenance.source


def engine_of(sample: Sample) -> str:
    return str(sample.provenance.params.get("engine", sample.provenance.source))


def centred(dataset: Dataset, sample: Sample) -> Sample:
    """The clip centred on its speech (new media only when the clip changed); its span says where
    the speech is, None when there is none."""
    rate = sample.shape.sample_rate if isinstance(sample.shape, AudioShape) else WHISPER_RATE
    audio = load_audio(dataset.media_path(sample), rate)
    clip_seconds = dataset.info.media.clip_seconds
    clip, span = centre_on_speech(audio, rate, round(clip_seconds * rate) if clip_seconds else audio.size)
    media = sample.media
    if span is not None and not np.array_equal(clip, audio):
        _, media = dataset.add_media(wav_bytes(clip, rate), "wav")
    label = sample.labels[0].model_copy(update={"span": tuple(span) if span is not None else None})
    return sample.model_copy(update={"media": media, "labels": [label, *sample.labels[1:]],
                                     "shape": AudioShape(duration=clip.size / rate, sample_rate=rate)})


def centre_shard(location: str, samples: list[Sample]) -> ShardOutput:
    dataset = Dataset.open(location)
    return ShardOutput([centred(dataset, sample) for sample in samples])


def speech_seconds(sample: Sample) -> float:
    span = sample.labels[0].span
    return span[1] - span[0] + 2 * SPEECH_MARGIN_SECONDS


def speech_at_16k(dataset: Dataset, sample: Sample) -> np.ndarray:
    """The clip's speech with a margin either side, at Whisper's rate."""
    span = sample.labels[0].span
    audio = load_audio(dataset.media_path(sample), WHISPER_RATE)
    start = max(0, round((span[0] - SPEECH_MARGIN_SECONDS) * WHISPER_RATE))
    return audio[start:round((span[1] + SPEECH_MARGIN_SECONDS) * WHISPER_RATE)]


class WhisperLabeler(Labeler):
    """Writes what Whisper hears into each keyword clip's label (run by edgedistill.labelling): the
    transcript, and as score the words' probability when they are the keyword, else 0."""

    def __init__(self, settings: WhisperCheckSettings):
        self.settings = settings

    def load(self) -> None:
        self.model = load_whisper(self.settings.model)
        self.source = LabelSource(labeler=LABELER, model=self.settings.model, version=model_version())

    def wants(self, sample: Sample) -> bool:
        return is_keyword_sample(sample) and sample.labels[0].span is not None

    def plan(self, samples: list[Sample]) -> list[list[Sample]]:
        """One shard per Whisper window. A predictable order ("one, two, three...") lets Whisper's
        language model guess the next word; a fixed pseudo-random order removes that help."""
        samples = sorted(samples, key=lambda s: hashlib.sha256(s.id.encode()).hexdigest())
        if self.settings.windowing == "single":
            return [[sample] for sample in samples]
        return [[samples[i] for i in window] for window in pack_windows([speech_seconds(s) for s in samples])]

    def label(self, dataset: Dataset, samples: list[Sample]) -> list[Sample]:
        heard = transcribe_clips(self.model, [speech_at_16k(dataset, s) for s in samples], self.settings.windowing)
        done = []
        for sample, clip in zip(samples, heard):
            right = heard_keyword(clip.text, sample.class_name)
            label = sample.labels[0].model_copy(update={
                "transcript": clip.text, "score": round(clip.probability, 4) if right else 0.0, "source": self.source})
            done.append(sample.model_copy(update={"labels": [label, *sample.labels[1:]]}))
        return done


def check_speech(dataset: Dataset, samples: list[Sample], settings: WhisperCheckSettings, work_dir: Path,
                 progress: Callable[[int, int], None] | None = None) -> CheckResult:
    """Centre keyword clips on their speech and drop (voice, keyword) groups Whisper does not hear right.

    Negative clips (`_unknown_`, `_silence_`) pass through untouched; keyword clips with no
    speech at all are dropped. With `settings.enabled` False only the centring is done. Both the
    centring and the transcripts run in shards kept in `work_dir` (a rerun resumes).
    """
    keyword = [s for s in samples if is_keyword_sample(s)]
    per_group = settings.clips_per_voice if settings.enabled else 0
    sizes = Counter((voice_of(s), s.class_name) for s in keyword)
    total = len(keyword) + sum(min(per_group, size) for size in sizes.values())  # centred, then heard
    centring = run_shards(keyword, functools.partial(centre_shard, dataset.location), Path(work_dir) / "centre",
                          CENTRE_SHARD_SIZE, 1, progress and (lambda done, _: progress(done, total)))
    groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for sample in sorted((s for output in centring.outputs for s in output.samples), key=lambda s: s.id):
        groups[(voice_of(sample), sample.class_name)].append(sample)
    chosen = [s for members in groups.values() for s in [m for m in members if m.labels[0].span][:per_group]]
    heard = run_labeler(WhisperLabeler(settings), dataset, chosen, Path(work_dir) / "whisper",
                        progress and (lambda done, _: progress(len(keyword) + done, total)))
    result = verdicts(groups, {s.id: s for s in heard.samples}, settings,
                      [s for s in samples if not is_keyword_sample(s)])
    result.clips_per_second = heard.per_second
    order = {s.id: i for i, s in enumerate(samples)}  # callers see samples in the order they gave
    result.kept.sort(key=lambda s: order[s.id])
    result.dropped.sort(key=lambda s: order[s.id])
    if progress:
        progress(total, total)
    return result


def verdicts(groups: dict[tuple[str, str], list[Sample]], heard: dict[str, Sample], settings: WhisperCheckSettings,
             passing: list[Sample]) -> CheckResult:
    """Keep groups whose checked clips were heard as the keyword often enough (clips without speech
    are dropped); report per voice and engine."""
    kept, dropped, failed = list(passing), [], []
    voices: dict[str, dict[str, int]] = defaultdict(lambda: {"checked": 0, "heard_right": 0, "dropped_clips": 0})
    for (voice, keyword), members in groups.items():
        silent = [s for s in members if s.labels[0].span is None]
        speaking = [heard.get(s.id, s) for s in members if s.labels[0].span is not None]
        checked = [s.id for s in speaking if s.id in heard]
        right = sum(heard_keyword(heard[i].labels[0].transcript, keyword) for i in checked)
        group_passes = not checked or right / len(checked) >= settings.min_pass_share
        (kept if group_passes else dropped).extend(speaking)
        dropped += silent
        voices[voice]["checked"] += len(checked)
        voices[voice]["heard_right"] += right
        voices[voice]["dropped_clips"] += len(silent) + (0 if group_passes else len(speaking))
        if not group_passes:
            failed.append((voice, keyword))
    engines = Counter(engine_of(sample) for sample in dropped)
    return CheckResult(kept, dropped, dict(voices), dict(engines), 0.0, failed)
