"""Mining keyword clips from long recordings: how fast, and how close the cuts land to the words.

    .venv/bin/python benchmarks/mining.py [--minutes 10] [--real PATH [--keywords a,b] [--limit 300]]

Synthetic: a recording of espeak-ng sentences (several voices, pauses, noise) where every keyword's start and
end is known, mined with the packaged Whisper tiny.en as `edgedistill label recordings` does (one process, the
shard driver's windows). Real (--real, a labelled set of real clips as `evaluate.real` takes them: a CSV of
file,word[,speaker], a folder holding labels.csv, or word folders): the clips joined into one recording with
pauses, each word's time being its clip's VAD speech span; without it the script says it skipped. Prints
audio-hours mined per hour of wall time, keywords found, cuts on a wrong word, and the cut-boundary error
(start, end, centre) against the known times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgedistill.audio import load_audio
from edgedistill.dataset import Dataset, MediaPolicy, OntologyClass
from edgedistill.real_speech import read_labelled_clips
from edgedistill.recipe import SILENCE, UNKNOWN, MiningSettings, is_keyword
from labelers.recordings import RecordingMiner, find_recordings, mine_recordings
from labelers.vad import find_speech

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from spoken_recordings import RATE, SpokenWord, spoken_recording, write_recording  # noqa: E402

KEYWORDS = ["computer", "window", "marvin", "yellow", "elephant"]
BEFORE = ["the weather is fine and", "please tell", "I think the", "we saw the", "nobody knows if the",
          "it was a", "give me the", "after lunch the"]
AFTER = ["went home early", "is on the table", "about the new plan", "was very old", "likes green tea",
         "in the garden", "stopped working"]
OTHER = ["we bought some bread and milk at the shop", "it rained all day long", "the meeting starts at nine",
         "can you send me the report", "she walked to the station"]
VOICES = ["en-gb-x-rp+m3", "en+f3", "en-us", "en-gb-x-rp", "en+m3", "en-029"]
TOLERANCE = 0.1  # seconds: the bar for a cut


def synthetic_talk(minutes: float, seed: int) -> tuple[np.ndarray, list[SpokenWord]]:
    """Sentences by several voices in turn until `minutes` of audio; 70% of them hold a keyword."""
    rng = np.random.default_rng(seed)
    pieces, truth, seconds = [], [], 0.0
    while seconds < minutes * 60:
        sentences = [(str(rng.choice(BEFORE)), str(rng.choice(KEYWORDS)), str(rng.choice(AFTER)))
                     if rng.random() < 0.7 else (str(rng.choice(OTHER)), None, "") for _ in range(8)]
        audio, words = spoken_recording(sentences, voice=VOICES[len(pieces) % len(VOICES)],
                                        seed=int(rng.integers(1 << 30)))
        truth += [SpokenWord(w.word, w.start + seconds, w.end + seconds) for w in words]
        pieces.append(audio)
        seconds += audio.size / RATE
    return np.concatenate(pieces), truth


def joined_real_clips(location: Path, limit: int, seed: int) -> tuple[np.ndarray, list[SpokenWord]]:
    """Up to `limit` labelled real clips in a seeded order, joined with pauses; each word's time is the VAD
    speech span of its clip (the clip's whole length where VAD hears none)."""
    clips = read_labelled_clips(location)
    rng = np.random.default_rng(seed)
    chosen = [clips[i] for i in rng.permutation(len(clips))[:limit]]
    pieces, truth, position = [], [], 0
    for clip in chosen:
        audio = load_audio(clip.path, RATE)
        span = find_speech(audio, RATE) or (0.0, audio.size / RATE)
        truth.append(SpokenWord(" ".join(clip.word.casefold().split()), position / RATE + span[0],
                                position / RATE + span[1]))
        pause = np.zeros(round(rng.uniform(0.6, 1.2) * RATE), np.float32)
        pieces += [audio, pause]
        position += audio.size + pause.size
    return np.concatenate(pieces), truth


def mine_and_measure(audio: np.ndarray, truth: list[SpokenWord], keywords: list[str], folder: Path) -> dict:
    """Mine `audio` (written as a WAV) for `keywords` and compare the keyword cuts with `truth`."""
    folder.mkdir(parents=True)
    recording = write_recording(folder / "recording.wav", audio)
    dataset = Dataset.create(folder / "dataset", "bench", "keyword_spotting",
                             [OntologyClass(name=n) for n in [*keywords, UNKNOWN, SILENCE]],
                             MediaPolicy(sample_rate=RATE, clip_seconds=1.0))
    miner = RecordingMiner(keywords, MiningSettings(window_minutes=5), RATE, 1.0)
    started = time.perf_counter()
    mined = mine_recordings(dataset, find_recordings([str(recording)]), miner, folder / "work")
    seconds = time.perf_counter() - started
    said = [word for word in truth if word.word in keywords]
    errors, wrong, matched, inside = [], 0, set(), 0
    for sample in (s for s in mined.samples if is_keyword(s.class_name)):
        cut = sample.provenance.params
        centre = (cut["start"] + cut["end"]) / 2
        near = [i for i, w in enumerate(said)
                if w.word == sample.class_name and abs((w.start + w.end) / 2 - centre) < 0.5]
        if not near or near[0] in matched:
            wrong += 1
            continue
        word = said[near[0]]
        matched.add(near[0])
        errors.append((cut["start"] - word.start, cut["end"] - word.end, centre - (word.start + word.end) / 2))
        inside += centre - 0.5 <= word.start and word.end <= centre + 0.5
    return {"hours": audio.size / RATE / 3600, "seconds": seconds, "said": len(said), "found": len(matched),
            "wrong": wrong, "errors": np.array(errors).reshape(-1, 3), "inside": inside / max(1, len(errors)),
            "clips": Counter(s.class_name if s.class_name in (UNKNOWN, SILENCE) else "keyword" for s in mined.samples),
            "for_review": sum(1 for s in mined.samples if is_keyword(s.class_name) and s.labels[0].score < 0.5)}


def rows(name: str, result: dict) -> list[tuple[str, str]]:
    errors = np.abs(result["errors"]) * 1000

    def spread(column: int) -> str:
        if not len(errors):
            return "n/a"
        values = errors[:, column]
        return f"{np.median(values):.0f} / {np.percentile(values, 90):.0f} / {values.max():.0f} ms"

    signed = result["errors"].mean(axis=0) * 1000 if len(errors) else [np.nan] * 3
    clips = result["clips"]
    return [
        (f"{name}: audio mined", f"{result['hours'] * 60:.1f} min in {result['seconds']:.0f} s"),
        (f"{name}: audio-hours per hour", f"{result['hours'] * 3600 / result['seconds']:.1f}"),
        (f"{name}: keywords found / said", f"{result['found']} / {result['said']}"),
        (f"{name}: keyword cuts on no such word", str(result["wrong"])),
        (f"{name}: start error, median / p90 / max", f"{spread(0)} (mean {signed[0]:+.0f} ms)"),
        (f"{name}: end error, median / p90 / max", f"{spread(1)} (mean {signed[1]:+.0f} ms)"),
        (f"{name}: centre error, median / p90 / max", f"{spread(2)} (mean {signed[2]:+.0f} ms)"),
        (f"{name}: centres within {TOLERANCE * 1000:.0f} ms",
         f"{(errors[:, 2] <= TOLERANCE * 1000).mean():.0%}" if len(errors) else "n/a"),
        (f"{name}: whole keyword inside its 1 s clip", f"{result['inside']:.0%}" if len(errors) else "n/a"),
        (f"{name}: clips keyword / _unknown_ / _silence_",
         f"{clips['keyword']} / {clips[UNKNOWN]} / {clips[SILENCE]} ({result['for_review']} keyword for review)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the synthetic recording")
    parser.add_argument("--real", type=Path, help="a labelled set of real clips (file,word CSV or word folders)")
    parser.add_argument("--keywords", help="keywords to mine in the real set (default: its 5 most frequent words)")
    parser.add_argument("--limit", type=int, default=300, help="real clips joined at most")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = Table(title="mining keyword clips from recordings (Whisper tiny.en, CPU)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        audio, truth = synthetic_talk(args.minutes, args.seed)
        for row in rows("synthetic", mine_and_measure(audio, truth, KEYWORDS, Path(scratch) / "synthetic")):
            table.add_row(*row)
        if args.real is None or not args.real.exists():
            table.add_row("real", f"skipped: no real clips at {args.real} (pass --real PATH)" if args.real
                          else "skipped (pass --real PATH)")
        else:
            audio, truth = joined_real_clips(args.real, args.limit, args.seed)
            keywords = (args.keywords.split(",") if args.keywords
                        else [word for word, _ in Counter(w.word for w in truth).most_common(5)])
            for row in rows(f"real ({', '.join(keywords)})",
                            mine_and_measure(audio, truth, keywords, Path(scratch) / "real")):
                table.add_row(*row)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
