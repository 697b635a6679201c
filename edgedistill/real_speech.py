"""Real recordings a team labelled: read them, and measure a keyword model on them as a device would use it.

Synthetic held-out figures flatter a model trained on synthetic voices; these are the figures that say
how it does on people. A set is read from a CSV of `file,word[,speaker]` (paths relative to the CSV), a
folder holding such a `labels.csv`, or a folder of sub-folders named by word (the Speech Commands layout,
where a file name's part before `_nohash_` names the speaker). Words that are not keywords are the
non-keyword speech the model must reject (recordings of noise too, under any word such as `_silence_`).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.audio import AUDIO_SUFFIXES, fit_to_length, load_audio
from edgedistill.errors import EdgedistillError
from edgedistill.frontend import MfccFrontEnd
from edgedistill.inference import loudest_window
from edgedistill.recipe import is_keyword
from edgedistill.streaming import StreamingSpec, clip_peaks, detect, smoothed_track


@dataclass(frozen=True)
class LabelledClip:
    path: Path
    word: str  # what is said, as the team wrote it (case and spaces folded when compared)
    speaker: str


def _folded(word: str) -> str:
    return " ".join(word.casefold().split())


def read_labelled_clips(location: str | Path, decode: bool = False) -> list[LabelledClip]:
    """Every clip of a labelled set; an error that says what is wrong for a missing, empty or malformed one.
    `decode` also reads every clip, so an unreadable file is an error now rather than at the end of a run."""
    path = Path(location).expanduser()
    if not path.exists():
        raise EdgedistillError(f"real recordings at {path} do not exist",
                               "point evaluate.real at a folder of labelled clips or a CSV of file,word[,speaker]")
    if path.is_dir() and (path / "labels.csv").is_file():
        path = path / "labels.csv"
    clips = _read_csv(path) if path.is_file() else _read_word_folders(path)
    if not clips:
        raise EdgedistillError(f"{path} holds no labelled clips",
                               "give a CSV with file and word columns, or sub-folders of audio named by word")
    missing = [str(c.path) for c in clips if not c.path.is_file()]
    if missing:
        raise EdgedistillError(f"{len(missing)} clip(s) listed in {path} do not exist, e.g. {missing[0]}",
                               "fix the paths (relative to the CSV's folder) or remove those rows")
    for clip in clips if decode else ():
        load_audio(clip.path, 16000)  # raises an error naming the file
    return clips


def _read_csv(path: Path) -> list[LabelledClip]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise EdgedistillError(f"{path} is not a readable CSV: {error}", "save it as UTF-8 CSV") from None
    columns = {c.strip().lower() for c in (rows[0].keys() if rows else [])}
    word_column = "word" if "word" in columns else "label" if "label" in columns else None
    if "file" not in columns or word_column is None:
        raise EdgedistillError(f"{path} needs a header with `file` and `word` (or `label`) columns, "
                               f"found {sorted(columns) or 'none'}", "add the header line: file,word,speaker")
    clips = []
    for number, row in enumerate(rows, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        if not row["file"] or not row[word_column]:
            raise EdgedistillError(f"{path} line {number} has no file or no word", "fill it in or remove the line")
        file = path.parent / row["file"]
        clips.append(LabelledClip(file, row[word_column], row.get("speaker") or _speaker_of(file)))
    return clips


def _read_word_folders(path: Path) -> list[LabelledClip]:
    return [LabelledClip(file, folder.name, _speaker_of(file))
            for folder in sorted(p for p in path.iterdir() if p.is_dir())
            for file in sorted(folder.iterdir()) if file.suffix.lower() in AUDIO_SUFFIXES]


def _speaker_of(file: Path) -> str:
    return file.stem.split("_nohash_")[0] if "_nohash_" in file.stem else file.stem


# -- measuring ------------------------------------------------------------------------------------
@dataclass
class _Heard:
    clip: LabelledClip
    audio: np.ndarray
    probabilities: np.ndarray  # of the loudest clip-long window, as `edgedistill predict` takes it


def evaluate_on_real(clips: list[LabelledClip], labels: list[str], frontend: MfccFrontEnd,
                     probabilities: Callable[[np.ndarray], np.ndarray], spec: StreamingSpec | None) -> dict:
    """Keyword accuracy, non-keyword rejection and (with `spec`) the streaming operating point, on real clips.

    - clip figures take each clip's loudest window, as `predict` does: a keyword clip is right when the top
      class is its keyword; a non-keyword clip is rejected when the top class is `_unknown_` or `_silence_`;
    - with a `spec`, streaming joins the non-keyword clips into one recording for false accepts per hour,
      and the keyword clips into another for false rejects, as the device's loop (thresholds and all) hears them.
    """
    keywords = {_folded(label): label for label in labels if is_keyword(label)}
    heard = []
    for clip in clips:
        audio = load_audio(clip.path, frontend.sample_rate)
        window = frontend(loudest_window(audio, frontend.clip_samples))[None]
        heard.append(_Heard(clip, audio, probabilities(window)[0]))
    positives = [h for h in heard if _folded(h.clip.word) in keywords]
    negatives = [h for h in heard if _folded(h.clip.word) not in keywords]
    heard_as = lambda h: labels[int(np.argmax(h.probabilities))]  # noqa: E731
    right = lambda h: heard_as(h) == keywords[_folded(h.clip.word)]  # noqa: E731

    def share(items: list, test: Callable) -> float | None:
        return float(np.mean([bool(test(x)) for x in items])) if items else None

    per_word = Counter(_folded(h.clip.word) for h in negatives)
    accepted_words = Counter(_folded(h.clip.word) for h in negatives if is_keyword(heard_as(h)))
    result = {
        "clips": len(heard), "keyword_clips": len(positives), "non_keyword_clips": len(negatives),
        "speakers": len({h.clip.speaker for h in heard}),
        "keyword_speakers": len({h.clip.speaker for h in positives}),
        "keyword_accuracy": share(positives, right),
        "non_keyword_rejected": share(negatives, lambda h: not is_keyword(heard_as(h))),
        "per_keyword_accuracy": {label: share([h for h in positives if keywords[_folded(h.clip.word)] == label],
                                              right) for label in keywords.values()},
        "false_accepts_by_word": {word: [accepted_words[word], per_word[word]]
                                  for word, _ in accepted_words.most_common()},
    }
    if spec is not None:
        result["streaming"] = _streaming_on_real(positives, negatives, labels, frontend, probabilities, spec)
    return result


def _streaming_on_real(positives: list[_Heard], negatives: list[_Heard], labels: list[str], frontend: MfccFrontEnd,
                       probabilities: Callable[[np.ndarray], np.ndarray], spec: StreamingSpec) -> dict:
    """Each group of clips joined into one recording, every clip at least a window long (a shorter one is
    centred in silence, as a device hears a short word between pauses)."""
    clip_seconds = frontend.clip_samples / frontend.sample_rate
    at_least_a_window = lambda audio: fit_to_length(audio, max(audio.size, frontend.clip_samples))  # noqa: E731
    result: dict = {}
    if negatives:
        recording = np.concatenate([at_least_a_window(h.audio) for h in negatives])
        hours = recording.size / frontend.sample_rate / 3600
        track = smoothed_track(recording, frontend, spec.stride_frames, spec.smoothing_windows, probabilities)
        false_accepts = len(detect(track, labels, spec, clip_seconds))
        result |= {"non_keyword_hours": round(hours, 4), "false_accepts": false_accepts,
                   "false_accepts_per_hour": false_accepts / hours}
    if positives:
        padded = [at_least_a_window(h.audio) for h in positives]
        starts = np.cumsum([0, *[a.size for a in padded[:-1]]]) / frontend.sample_rate
        track = smoothed_track(np.concatenate(padded), frontend, spec.stride_frames, spec.smoothing_windows,
                               probabilities)
        thresholds = spec.threshold_vector(labels)
        missed = 0
        for h, start, audio in zip(positives, starts, padded):
            column = labels.index(next(x for x in labels if _folded(x) == _folded(h.clip.word)))
            peak = clip_peaks(track, np.array([start + (audio.size / frontend.sample_rate - clip_seconds) / 2]),
                              spec.stride_seconds, clip_seconds, column)
            missed += bool(peak[0] < thresholds[column])
        result["false_reject_rate"] = missed / len(positives)
    return result
