"""Whisper check speed: one clip per 30 s window against clips packed into one window.

Synthesises words with espeak-ng and flite (both CLI), trims them to their speech with Silero
VAD, and transcribes them both ways with the packaged Whisper tiny.en. Prints clips/second and
how often the two ways agree (on the normalised transcript, and on the verdict "heard the word"),
and how often a wrong label (another clip's word) would pass.

    .venv/bin/python benchmarks/whisper_check.py [--words N] [--threads T]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edgedistill.audio import load_audio
from labelers.vad import find_speech
from labelers.whisper import WHISPER_RATE, heard_keyword, normalise_transcript, resolve_whisper_model
from labelers.whisper_check import HeardClip, transcribe_clips

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
VOICES = {
    "espeak-en-us": ["espeak-ng", "-v", "en-us", "-w", "{out}", "{word}"],
    "espeak-en+f3": ["espeak-ng", "-v", "en+f3", "-w", "{out}", "{word}"],
    "flite-slt": ["flite", "-voice", "slt", "-t", "{word}", "-o", "{out}"],
    "flite-kal": ["flite", "-voice", "kal", "-t", "{word}", "-o", "{out}"],
}


def synthesise(folder: Path, words: list[str]) -> list[tuple[str, str, np.ndarray]]:
    """(voice, word, speech at 16 kHz trimmed to its VAD span with 0.1 s either side)."""
    clips = []
    for voice, command in VOICES.items():
        for word in words:
            out = folder / f"{voice}_{word}.wav"
            subprocess.run([a.format(out=out, word=word) for a in command], check=True, capture_output=True)
            audio = load_audio(out, WHISPER_RATE)
            span = find_speech(audio, WHISPER_RATE) or (0.0, audio.size / WHISPER_RATE)
            start, end = max(0, round((span[0] - 0.1) * WHISPER_RATE)), round((span[1] + 0.1) * WHISPER_RATE)
            clips.append((voice, word, audio[start:end]))
    return clips


def measure(model, audio: list[np.ndarray]) -> dict[str, tuple[list[HeardClip], float]]:
    """{windowing: (what was heard in each clip, seconds)} for one clip per window and packed."""
    transcribe_clips(model, audio[:2], "single")  # warm up
    results = {}
    for windowing in ("single", "packed"):
        started = time.perf_counter()
        heard = transcribe_clips(model, audio, windowing)
        results[windowing] = (heard, time.perf_counter() - started)
    return results


def print_table(clips: list[tuple[str, str, np.ndarray]], results: dict, threads: int) -> None:
    words = [word for _, word, _ in clips]
    used = [w for w in WORDS if w in words]
    wrong = [used[(used.index(word) + 1) % len(used)] for word in words]  # each clip labelled with another word
    n = len(clips)
    (single, _), (packed, _) = results["single"], results["packed"]
    right = {w: [heard_keyword(h.text, word) for h, word in zip(results[w][0], words)] for w in results}
    print(f"{n} clips ({len(VOICES)} voices x {n // len(VOICES)} words), Whisper tiny.en int8, {threads} threads\n")
    print(f"{'windowing':<10} {'seconds':>8} {'clips/s':>8} {'heard right':>12} {'wrong label heard':>18}")
    for w, (heard, seconds) in results.items():
        false = sum(heard_keyword(h.text, label) for h, label in zip(heard, wrong))
        print(f"{w:<10} {seconds:>8.1f} {n / seconds:>8.2f} {sum(right[w]):>8}/{n} {false:>14}/{n}")
    same_text = sum(normalise_transcript(a.text) == normalise_transcript(b.text) for a, b in zip(single, packed))
    same_verdict = sum(a == b for a, b in zip(right["single"], right["packed"]))
    print(f"\nsame normalised transcript: {same_text}/{n}; same verdict: {same_verdict}/{n}")
    print("\nverdicts that differ (voice, word: single | packed):")
    for (voice, word, _), a, b, ra, rb in zip(clips, single, packed, right["single"], right["packed"]):
        if ra != rb:
            print(f"  {voice}, {word}: {a.text!r} | {b.text!r}")
    print("\nwrong labels heard right (voice, word, wrong label: single | packed):")
    for (voice, word, _), label, a, b in zip(clips, wrong, single, packed):
        if heard_keyword(a.text, label) or heard_keyword(b.text, label):
            print(f"  {voice}, {word}, {label}: {a.text!r} | {b.text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=len(WORDS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from faster_whisper import WhisperModel

    model = WhisperModel(resolve_whisper_model("tiny.en"), device="cpu", compute_type="int8", cpu_threads=args.threads)
    with tempfile.TemporaryDirectory() as folder:
        clips = synthesise(Path(folder), WORDS[:args.words])
    random.Random(0).shuffle(clips)  # as check_speech does: no counting order for Whisper to guess from
    print_table(clips, measure(model, [audio for _, _, audio in clips]), args.threads)


if __name__ == "__main__":
    main()
