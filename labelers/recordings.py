"""Keyword clips mined from a team's long real recordings, where Whisper hears the words.

A recording of any length and format is cut into windows (`mining.window_minutes`). Each window is one
shard on the shard driver (edgedistill/shards.py), named by the recording's fingerprint and the window,
so a rerun redoes only the windows not yet done, a changed file never reuses old work, and windows run
wherever the flow sends shards (a process pool, Dask). Windows part in the longest pause near their
nominal edge, so no word straddles two; each is read alone, block by block, with a margin of context
either side: memory is bounded by a window, never by the recording.

In a window, faster-whisper (behind its Silero VAD, so long silences cost nothing) gives every word with
its time and probability; Silero VAD's speech regions then pull word edges that Whisper let run into
silence back onto the speech. From the words:
- each keyword Whisper hears becomes a clip centred on it, scored by the word's probability, so that
  doubtful ones go to people (review routes a label scoring below `review.threshold`);
- other words, spaced out to `unknown_per_minute`, become `_unknown_` clips that hold no keyword;
- stretches with neither words nor speech, spaced out to `silence_per_minute`, become `_silence_` clips.
Each clip records its recording as its group (a recording never sits in two splits), the file, the
word's start and end in the recording, what Whisper heard in the clip, and the word's probability.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from edgedistill.audio import AUDIO_SUFFIXES, audio_blocks, audio_duration, resample, wav_bytes
from edgedistill.dataset import AudioShape, Dataset, Label, LabelSource, Provenance, Sample, Store, cache_dir
from edgedistill.errors import EdgedistillError
from edgedistill.labelling import Labeler, label_in_shards
from edgedistill.recipe import SILENCE, UNKNOWN, MiningSettings
from labelers.vad import speech_regions, window_around
from labelers.whisper import WHISPER_RATE, load_whisper, model_version, normalise_transcript, transcribe, \
    whisper_language

LABELER = "whisper_mining"
SOURCE = "recording"  # provenance.source of a mined clip
MARGIN_SECONDS = 3.0  # read either side of a window: the words near its edges are heard with context
EDGE_SEARCH_SECONDS = 2.0  # a window's edge moves into the longest pause this near it
SPEECH_PAUSE_MS = 100  # a pause this long ends a VAD speech region, so word edges can be moved onto speech
QUIET_PADDING_SECONDS = 0.2  # a `_silence_` clip keeps this far from the nearest speech
KEYWORD_CLEARANCE_SECONDS = 0.2  # Whisper's word edges are off by up to ~0.2 s: `_unknown_` clips keep this far
NOTHING_RECORDED = 1e-4  # a peak below this is digital silence, not a room: no `_silence_` clip from it


@dataclass(frozen=True)
class Recording:
    location: str  # a local path or an fsspec URL
    fingerprint: str  # size and modification time (or ETag): a changed file is mined again


@dataclass(frozen=True)
class RecordingWindow:
    """One shard's work: the clips centred in [start, end) seconds of one recording."""

    recording: Recording
    start: float
    end: float | None  # None: to the end of the recording, however long its header said it was


@dataclass(frozen=True)
class HeardWord:
    text: str  # as Whisper wrote it
    start: float  # seconds in the recording
    end: float
    probability: float


@dataclass(frozen=True)
class Cut:
    """A clip to cut: its class, and the stretch of the recording it is centred on (the word, or quiet)."""

    class_name: str
    start: float
    end: float
    probability: float | None = None

    @property
    def centre(self) -> float:
        return (self.start + self.end) / 2


@dataclass
class MinedRecordings:
    samples: list[Sample]
    recordings: list[dict]  # per readable recording: file, minutes, clips per class, a note when odd
    unreadable: list[dict]  # {"file", "reason"}: recordings skipped
    audio_hours_per_hour: float  # this run's pace (0 when every window was already done)


# -- finding the recordings ------------------------------------------------------------------------
def find_recordings(locations: list[str]) -> list[Recording]:
    """Every audio file named, or under a named folder (local or an fsspec URL such as s3://...), in a
    stable order. A location that does not exist is an error (a typo); unreadable audio is noted later."""
    found: dict[str, str] = {}
    for location in locations:
        store = Store(location)
        details = store.details()
        if details is not None:
            found[store.location] = _fingerprint(details)
        elif store.is_folder():
            found |= {f"{store.location}/{relative}": _fingerprint(info)
                      for relative, info in sorted(store.files().items())
                      if PurePosixPath(relative).suffix.lower() in AUDIO_SUFFIXES}
        else:
            raise EdgedistillError(f"the recording {location} does not exist",
                                   "check `recordings:` in the recipe, or the paths given")
    return [Recording(location, fingerprint) for location, fingerprint in found.items()]


def _fingerprint(details: dict) -> str:
    return f"{details.get('size')}:{details.get('ETag') or details.get('mtime')}"


def local_file(recording: Recording) -> Path:
    """The recording as a local file: one in object storage is copied once into this machine's cache."""
    store = Store(recording.location)
    if store.is_local:
        return Path(store.base)
    key = hashlib.sha256(f"{recording.location}|{recording.fingerprint}".encode()).hexdigest()[:24]
    cached = cache_dir() / "recordings" / f"{key}{PurePosixPath(store.base).suffix}"
    if not cached.exists():
        store.fetch(cached)
    return cached


def plan_windows(recording: Recording, seconds: float, window_seconds: float) -> list[RecordingWindow]:
    starts = np.arange(0.0, max(seconds, 1e-9), window_seconds)
    return [RecordingWindow(recording, float(start), None if i == len(starts) - 1 else float(start + window_seconds))
            for i, start in enumerate(starts)]


def read(path: Path, sample_rate: int, start: float, end: float | None) -> np.ndarray:
    return np.concatenate([np.zeros(0, np.float32), *audio_blocks(path, sample_rate, start=start, end=end)])


def edge_in_pause(path: Path, edge: float) -> float:
    """Where the windows on either side of `edge` part: in the middle of the longest pause within
    EDGE_SEARCH_SECONDS of it, so that no word straddles two windows (`edge` itself where there is no pause).
    Both windows work it out from the same stretch of audio, so they agree."""
    first = max(0.0, edge - EDGE_SEARCH_SECONDS)
    audio = read(path, WHISPER_RATE, first, edge + EDGE_SEARCH_SECONDS)
    bounds = [0.0, *(t for region in speech_regions(audio, WHISPER_RATE, SPEECH_PAUSE_MS) for t in region),
              audio.size / WHISPER_RATE]
    pauses = [(quiet_end - quiet_start, quiet_start) for quiet_start, quiet_end in zip(bounds[::2], bounds[1::2])]
    length, quiet_start = max(pauses)
    return first + quiet_start + length / 2 if length > 0 else edge


# -- from words to cuts ----------------------------------------------------------------------------
def onto_speech(word: HeardWord, speech: list[tuple[float, float]]) -> HeardWord:
    """The word's edges moved onto the speech inside it: tiny.en starts a phrase's first word early and ends
    its last word late, in the silence around it. A word with no speech inside is left as heard."""
    inside = [(max(start, word.start), min(end, word.end)) for start, end in speech
              if start < word.end and end > word.start]
    return replace(word, start=inside[0][0], end=inside[-1][1]) if inside else word


def keyword_cuts(words: list[HeardWord], keywords: list[str], clip_seconds: float) -> list[Cut]:
    """One cut per keyword heard: the run of words that says it ("Marvin," or "good" "night" or
    "goodnight"), the longest keyword first; scored by its least sure word."""
    folded = [normalise_transcript(word.text).replace(" ", "") for word in words]
    wanted = {normalise_transcript(keyword).replace(" ", ""): keyword for keyword in keywords}
    longest = max(len(normalise_transcript(keyword).split()) for keyword in keywords)
    cuts, i = [], 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            run = words[i:i + n]
            if folded[i] and "".join(folded[i:i + n]) in wanted and run[-1].end - run[0].start <= clip_seconds:
                cuts.append(Cut(wanted["".join(folded[i:i + n])], run[0].start, run[-1].end,
                                min(word.probability for word in run)))
                i += n
                break
        else:
            i += 1
    return cuts


def unknown_cuts(words: list[HeardWord], keywords: list[Cut], clip_seconds: float, per_minute: float) -> list[Cut]:
    """Words centred in a clip that holds no keyword (clear of one by KEYWORD_CLEARANCE_SECONDS, so the words of
    a keyword are never among them), at least a clip apart and at most `per_minute` a minute."""
    reach = clip_seconds / 2 + KEYWORD_CLEARANCE_SECONDS
    candidates = [Cut(UNKNOWN, word.start, word.end, word.probability) for word in words
                  if normalise_transcript(word.text)]
    return spaced([cut for cut in candidates
                   if not any(k.start < cut.centre + reach and k.end > cut.centre - reach for k in keywords)],
                  clip_seconds, per_minute)


def silence_cuts(heard: list[tuple[float, float]], start: float, end: float, clip_seconds: float,
                 per_minute: float) -> list[Cut]:
    """Clips in the quiet between `heard` stretches (speech regions and words) of [start, end), kept
    QUIET_PADDING_SECONDS clear of them, at most `per_minute` a minute."""
    candidates, quiet_from = [], start - QUIET_PADDING_SECONDS
    for speech_start, speech_end in [*sorted(heard), (end + QUIET_PADDING_SECONDS, end)]:
        first, last = quiet_from + QUIET_PADDING_SECONDS, speech_start - QUIET_PADDING_SECONDS - clip_seconds
        candidates += [Cut(SILENCE, t, t + clip_seconds) for t in np.arange(first, last + 1e-9, clip_seconds)]
        quiet_from = max(quiet_from, speech_end)
    return spaced(candidates, clip_seconds, per_minute)


def spaced(cuts: list[Cut], clip_seconds: float, per_minute: float) -> list[Cut]:
    """The cuts in time order, each kept when it starts max(a clip, a minute / per_minute) after the last kept."""
    if per_minute <= 0:
        return []
    gap, kept = max(clip_seconds, 60.0 / per_minute), []
    for cut in sorted(cuts, key=lambda c: c.centre):
        if not kept or cut.centre - kept[-1].centre >= gap:
            kept.append(cut)
    return kept


# -- the labeler -----------------------------------------------------------------------------------
class RecordingMiner(Labeler):
    """Cuts labelled clips out of windows of recordings (the module's docstring says how)."""

    def __init__(self, keywords: list[str], settings: MiningSettings, sample_rate: int, clip_seconds: float):
        self.keywords, self.settings = keywords, settings
        self.sample_rate, self.clip_seconds = sample_rate, clip_seconds

    def load(self) -> None:
        self.model = load_whisper(self.settings.model, "mining.model")
        self.source = LabelSource(labeler=LABELER, model=self.settings.model, version=model_version())

    def plan(self, windows: list[RecordingWindow]) -> list[list[RecordingWindow]]:
        return [[window] for window in windows]

    def label(self, dataset: Dataset, windows: list[RecordingWindow]) -> list[Sample]:
        with dataset.parallel_media_writes():
            return [clip for window in windows for clip in self.mine(dataset, window)]

    def mine(self, dataset: Dataset, window: RecordingWindow) -> list[Sample]:
        path = local_file(window.recording)
        start = edge_in_pause(path, window.start) if window.start > 0 else 0.0
        end = None if window.end is None else edge_in_pause(path, window.end)
        offset = max(0.0, start - MARGIN_SECONDS)
        audio = read(path, self.sample_rate, offset, None if end is None else end + MARGIN_SECONDS)
        words, speech = self.hear(audio, offset)
        keywords = keyword_cuts(words, self.keywords, self.clip_seconds)
        heard = [*speech, *((w.start, w.end) for w in words)]
        cuts = [*keywords, *unknown_cuts(words, keywords, self.clip_seconds, self.settings.unknown_per_minute),
                *silence_cuts(heard, offset, offset + audio.size / self.sample_rate, self.clip_seconds,
                              self.settings.silence_per_minute)]
        owned = [cut for cut in cuts if start <= cut.centre and (end is None or cut.centre < end)]
        clips = [self.clip_sample(dataset, window.recording, audio, offset, cut, words) for cut in owned]
        return [clip for clip in clips if clip is not None]

    def hear(self, audio: np.ndarray, offset: float) -> tuple[list[HeardWord], list[tuple[float, float]]]:
        """Whisper's words and VAD's speech regions, in seconds of the recording (`audio` starts at `offset`)."""
        audio16 = resample(audio, self.sample_rate, WHISPER_RATE)
        speech = [(offset + start, offset + end)
                  for start, end in speech_regions(audio16, WHISPER_RATE, SPEECH_PAUSE_MS)]
        heard = transcribe(self.model, audio16, whisper_language(self.model), vad_filter=True)
        words = [HeardWord(word.word.strip(), offset + word.start, offset + word.end, float(word.probability))
                 for word in heard]
        return [onto_speech(word, speech) for word in words], speech

    def clip_sample(self, dataset: Dataset, recording: Recording, audio: np.ndarray, offset: float, cut: Cut,
                    words: list[HeardWord]) -> Sample | None:
        """The cut as a stored clip and its sample; None for a `_silence_` cut where nothing was recorded."""
        length = round(self.clip_seconds * self.sample_rate)
        clip = window_around(audio, round((cut.centre - offset) * self.sample_rate), length)
        if cut.class_name == SILENCE and np.abs(clip).max(initial=0.0) < NOTHING_RECORDED:
            return None
        _, media = dataset.add_media(wav_bytes(clip, self.sample_rate), "wav")
        clip_start = cut.centre - self.clip_seconds / 2
        transcript = " ".join(w.text for w in words
                              if clip_start <= (w.start + w.end) / 2 < clip_start + self.clip_seconds)
        probability = None if cut.probability is None else round(cut.probability, 4)
        span = (round(max(0.0, cut.start - clip_start), 4), round(min(self.clip_seconds, cut.end - clip_start), 4))
        params = {"file": recording.location, "start": round(float(cut.start), 3), "end": round(float(cut.end), 3),
                  "transcript": transcript, "probability": probability}
        if cut.class_name == UNKNOWN:
            params["negative"] = "recorded"  # the kind of negative, as the false-accept table names them
        key = f"{recording.location}|{recording.fingerprint}|{cut.class_name}|{cut.centre:.3f}"
        return Sample(id=hashlib.sha256(key.encode()).hexdigest()[:16], media=media, kind="audio",
                      shape=AudioShape(duration=length / self.sample_rate, sample_rate=self.sample_rate),
                      provenance=Provenance(source=SOURCE, params=params, group=recording.location),
                      labels=[Label(class_name=cut.class_name, span=None if cut.class_name == SILENCE else span,
                                    transcript=transcript, score=probability, source=self.source)])


# -- the stage -------------------------------------------------------------------------------------
def mine_recordings(dataset: Dataset, recordings: list[Recording], miner: RecordingMiner, work_dir: Path,
                    progress: Callable[[int, int], None] | None = None) -> MinedRecordings:
    """The clips `miner` cuts from every readable recording, window by window in shards kept in `work_dir`
    (a rerun resumes). A recording that cannot be read is skipped and reported, never half mined."""
    windows, unreadable, minutes = [], [], {}
    for recording in recordings:
        try:
            seconds = audio_duration(local_file(recording))
        except EdgedistillError as error:
            unreadable.append({"file": recording.location, "reason": error.problem})
            continue
        minutes[recording.location] = round(seconds / 60, 2)
        windows += plan_windows(recording, seconds, miner.settings.window_minutes * 60)
    started = time.perf_counter()
    run = label_in_shards(miner, dataset, miner.plan(windows), work_dir, progress)
    samples = [sample for output in run.outputs for sample in output.samples]
    mined_now = sum(_window_seconds(windows[i], minutes) for i in run.ran)
    pace = mined_now / (time.perf_counter() - started) if mined_now else 0.0
    return MinedRecordings(samples, recording_rows(samples, minutes, miner.settings), unreadable, pace)


def _window_seconds(window: RecordingWindow, minutes: dict[str, float]) -> float:
    end = window.end if window.end is not None else minutes[window.recording.location] * 60
    return max(0.0, end - window.start)


def recording_rows(samples: list[Sample], minutes: dict[str, float], settings: MiningSettings) -> list[dict]:
    """Per recording: its length, the clips cut of each kind, and a note when it gave no keyword."""
    counts = {location: Counter() for location in minutes}
    for sample in samples:
        kind = sample.class_name if sample.class_name in (UNKNOWN, SILENCE) else "keyword"
        counts[sample.provenance.group][kind] += 1
    rows = []
    for location, count in counts.items():
        note = ""
        if not count:
            note = "nothing cut: no speech heard and no sound recorded"
        elif not count["keyword"]:
            note = "no speech heard" if not count[UNKNOWN] and settings.unknown_per_minute else "no keyword heard"
        rows.append({"file": location, "minutes": minutes[location], "keyword": count["keyword"],
                     UNKNOWN: count[UNKNOWN], SILENCE: count[SILENCE], "note": note})
    return rows
