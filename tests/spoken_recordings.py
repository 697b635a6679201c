"""Long recordings made for the mining tests and benchmark: espeak-ng sentences in a row, with pauses and
noise. Each keyword is synthesised apart and placed between the rest of its sentence, so where it starts
and ends in the recording is known to the sample."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from edgedistill.audio import resample
from generators.speech_engines import espeak_say

RATE = 16000
WORD_GAP_SECONDS = 0.0  # between the pieces of one sentence: running speech, no pause
AUDIBLE = 0.02  # of a piece's peak (-34 dB), on a 10 ms envelope: quieter edges (some voices trail a breathy
#               tail of ~0.1 s) drown in the recording's noise, so the piece, and its word's time, ends there


@dataclass(frozen=True)
class SpokenWord:
    word: str
    start: float  # seconds in the recording
    end: float


# (before, keyword or None, after): the sentences of the tests' recordings
SENTENCES = [
    ("the weather is fine and", "computer", "went home early"),
    ("we bought some bread and milk at the shop", None, ""),
    ("please tell", "window", "about the new plan"),
    ("nobody knows if", "computer", "is on the table"),
    ("it rained all day long", None, ""),
    ("I think", "window", "likes green tea"),
]


def speak(text: str, voice: str, speed: float = 1.0) -> np.ndarray:
    """`text` said by espeak-ng at 16 kHz, cut to where it is audible."""
    audio, rate = espeak_say(text, voice, speed, 1.0)
    audio = resample(audio, rate, RATE)
    envelope = np.convolve(np.abs(audio), np.full(RATE // 100, 100 / RATE), mode="same")
    sound = np.flatnonzero(envelope > AUDIBLE * envelope.max(initial=0.0))
    return audio[sound[0]:sound[-1] + 1] if sound.size else audio[:0]


def spoken_recording(sentences: list[tuple[str, str | None, str]], voice: str = "en-us", seed: int = 0,
                     noise: float = 0.003, pause: tuple[float, float] = (0.8, 2.0),
                     lead_seconds: float = 1.0) -> tuple[np.ndarray, list[SpokenWord]]:
    """The sentences one after another with random pauses, over white noise; and each keyword's time."""
    rng = np.random.default_rng(seed)
    pieces, position, truth = [np.zeros(round(lead_seconds * RATE), np.float32)], round(lead_seconds * RATE), []
    gap = np.zeros(round(WORD_GAP_SECONDS * RATE), np.float32)
    for sentence in sentences:
        for index, text in enumerate(sentence):
            if not text:
                continue
            audio = speak(text, voice)
            if index == 1:
                truth.append(SpokenWord(text, position / RATE, (position + audio.size) / RATE))
            pieces += [audio, gap]
            position += audio.size + gap.size
        silence = np.zeros(round(rng.uniform(*pause) * RATE), np.float32)
        pieces.append(silence)
        position += silence.size
    recording = 0.5 * np.concatenate(pieces)  # espeak-ng speaks at full scale: leave room for the noise
    return recording + rng.normal(0.0, noise, recording.size).astype(np.float32), truth


def write_recording(path: Path, audio: np.ndarray) -> Path:
    """`audio` saved as WAV, or through ffmpeg in the format `path`'s suffix names (mp3, m4a...)."""
    if path.suffix == ".wav":
        soundfile.write(path, audio, RATE, subtype="PCM_16")
        return path
    wav = path.with_suffix(".source.wav")
    soundfile.write(wav, audio, RATE, subtype="PCM_16")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), str(path)], check=True)
    wav.unlink()
    return path
