"""Find the spoken word in a clip with Silero VAD and centre the clip on it.

Synthetic engines start speaking at different offsets and trail different amounts of silence;
a keyword model learns that position unless every clip holds its word in the same place.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from edgedistill.audio import resample

VAD_RATE = 16000  # Silero VAD runs at 16 kHz (or 8 kHz); other rates are resampled for detection
MIN_SPEECH_MS = 60  # short words ("one", "go") last well under Silero's default 250 ms
MIN_SILENCE_MS = 150  # a pause inside a multi-word keyword stays inside the span
CENTRED_TOLERANCE_S = 0.005  # closer than this to the middle counts as centred: no new media


@cache
def silero_vad_model():
    """The ONNX Silero VAD, loaded once per process (the model ships inside the silero-vad package)."""
    from silero_vad import load_silero_vad

    return load_silero_vad(onnx=True)


def speech_regions(audio: np.ndarray, sample_rate: int,
                   min_silence_ms: int = MIN_SILENCE_MS) -> list[tuple[float, float]]:
    """Every stretch of speech, as (start, end) in seconds, in order; pauses shorter than
    `min_silence_ms` stay inside a stretch."""
    from silero_vad import get_speech_timestamps

    audio16 = resample(np.asarray(audio, dtype=np.float32), sample_rate, VAD_RATE)
    if audio16.size == 0:
        return []
    with torch.inference_mode():
        chunks = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio16)), silero_vad_model(), sampling_rate=VAD_RATE,
            min_speech_duration_ms=MIN_SPEECH_MS, min_silence_duration_ms=min_silence_ms,
        )
    return [(chunk["start"] / VAD_RATE, chunk["end"] / VAD_RATE) for chunk in chunks]


def find_speech(audio: np.ndarray, sample_rate: int) -> tuple[float, float] | None:
    """The span from the first speech onset to the last speech offset, in seconds; None if silent."""
    regions = speech_regions(audio, sample_rate)
    return (regions[0][0], regions[-1][1]) if regions else None


def window_around(audio: np.ndarray, centre: int, length: int) -> np.ndarray:
    """`length` samples of `audio` centred on sample `centre`, zero-padded where it runs past an end."""
    out = np.zeros(length, dtype=np.float32)
    start = centre - length // 2
    src_from, src_to = max(0, start), min(audio.size, start + length)
    if src_to > src_from:
        out[src_from - start:src_to - start] = audio[src_from:src_to]
    return out


def centre_on_speech(audio: np.ndarray, sample_rate: int,
                     clip_samples: int) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Return a clip of `clip_samples` centred on the speech, and the speech span in that clip (s).

    The audio around the speech is kept (not zeroed), so soft onsets that VAD trims survive.
    When no speech is found the clip is only fitted to length (centred) and the span is None:
    the caller decides whether a silent clip is kept.
    """
    audio = np.asarray(audio, dtype=np.float32)
    span = find_speech(audio, sample_rate)
    if span is None:
        return window_around(audio, audio.size // 2, clip_samples), None
    start, end = round(span[0] * sample_rate), min(audio.size, round(span[1] * sample_rate))
    centre = (start + end) // 2
    if audio.size == clip_samples and abs(centre - clip_samples // 2) <= CENTRED_TOLERANCE_S * sample_rate:
        centre = clip_samples // 2  # already centred: return the clip untouched
    clip = window_around(audio, centre, clip_samples)
    offset = centre - clip_samples // 2  # where the new clip begins, in samples of the old one
    duration = clip_samples / sample_rate
    new_span = (max(0.0, (start - offset) / sample_rate), min(duration, (end - offset) / sample_rate))
    return clip, (round(new_span[0], 4), round(new_span[1], 4))
