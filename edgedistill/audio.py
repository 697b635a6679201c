"""Audio in and out: any common format and sample rate in, mono float32 at the rate asked out."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import soxr

from edgedistill.errors import EdgedistillError


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate, target_rate).astype(np.float32)


def decode_audio(data: bytes, target_rate: int, name: str = "audio") -> np.ndarray:
    """Decode bytes of any format soundfile or ffmpeg reads into mono float32 at `target_rate`."""
    if not data:
        raise EdgedistillError(f"{name} is empty (0 bytes)", "pass a WAV, FLAC, OGG or MP3 file with sound in it")
    try:
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        audio, rate = _decode_with_ffmpeg(data, name)
    audio = audio.mean(axis=1) if audio.ndim == 2 else audio
    if audio.size == 0:
        raise EdgedistillError(f"{name} holds no audio samples", "pass a file with sound in it")
    if not np.all(np.isfinite(audio)):
        raise EdgedistillError(f"{name} holds NaN or infinite samples", "re-export the file")
    return resample(audio, rate, target_rate)


def _decode_with_ffmpeg(data: bytes, name: str) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None:
        raise EdgedistillError(f"{name} is not audio that libsndfile can read",
                               "convert it to WAV or FLAC, or install ffmpeg for other formats")
    rate = 48000
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-ac", "1", "-ar", str(rate), "-f", "f32le", "pipe:1"],
        input=data, capture_output=True, check=False,
    )
    if result.returncode != 0 or not result.stdout:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no audio stream"]
        raise EdgedistillError(f"{name} is not a readable audio file ({reason[0]})",
                               "check that the file is complete and is audio")
    return np.frombuffer(result.stdout, dtype=np.float32)[:, None], rate


def load_audio(path: str | Path, target_rate: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise EdgedistillError(f"audio file {path} does not exist", "check the path")
    return decode_audio(path.read_bytes(), target_rate, name=str(path))


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV: the storage format of every clip in a dataset."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def fit_to_length(audio: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """Centre `audio` in a clip of `length` samples (cropping or zero-padding), shifted by `offset`."""
    out = np.zeros(length, dtype=np.float32)
    start = (length - audio.size) // 2 + offset
    src_from = max(0, -start)
    dst_from = max(0, start)
    count = min(audio.size - src_from, length - dst_from)
    if count > 0:
        out[dst_from:dst_from + count] = audio[src_from:src_from + count]
    return out


def audio_blocks(path: str | Path, target_rate: int, block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """A recording of any length as consecutive mono float32 blocks at `target_rate`, so memory stays bounded.

    libsndfile formats stream from disk; others (MP3 and the like, through ffmpeg) are decoded whole first.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgedistillError(f"audio file {path} does not exist", "check the path")
    try:
        source = soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        audio = load_audio(path, target_rate)
        step = max(1, int(block_seconds * target_rate))
        yield from (audio[i:i + step] for i in range(0, audio.size, step))
        return
    with source:
        stream = None if source.samplerate == target_rate else soxr.ResampleStream(source.samplerate, target_rate, 1)
        for block in source.blocks(blocksize=max(1, int(block_seconds * source.samplerate)), dtype="float32",
                                   always_2d=True):
            mono = block.mean(axis=1)
            if not np.all(np.isfinite(mono)):
                raise EdgedistillError(f"{path} holds NaN or infinite samples", "re-export the file")
            yield mono if stream is None else stream.resample_chunk(mono).astype(np.float32)
        if stream is not None:
            yield stream.resample_chunk(np.zeros(0, np.float32), last=True).astype(np.float32)
