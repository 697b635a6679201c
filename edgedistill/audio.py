"""Audio in and out: any common format and sample rate in, mono float32 at the rate asked out."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import soxr

from edgedistill.errors import EdgedistillError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".aiff", ".aif"}
FFMPEG_RATE = 48000  # what ffmpeg decodes to; soxr then resamples, as for every other file
FFMPEG_PREROLL_SECONDS = 0.1
# a header claiming a rate outside these is damaged: resampling 1 Hz "audio" to 16 kHz makes 16,000 samples of each
PLAUSIBLE_RATES = (1000, 768_000)


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
    _check_rate(rate, name)
    audio = audio.mean(axis=1) if audio.ndim == 2 else audio
    if audio.size == 0:
        raise EdgedistillError(f"{name} holds no audio samples", "pass a file with sound in it")
    if not np.all(np.isfinite(audio)):
        raise EdgedistillError(f"{name} holds NaN or infinite samples", "re-export the file")
    return resample(audio, rate, target_rate)


def _decode_with_ffmpeg(data: bytes, name: str) -> tuple[np.ndarray, int]:
    # through a file, not a pipe: ffmpeg must seek in an MP4/M4A, whose index may sit at its end
    with tempfile.NamedTemporaryFile(suffix=Path(name).suffix) as file:
        file.write(data)
        file.flush()
        audio = np.concatenate([np.zeros(0, np.float32), *_ffmpeg_blocks(Path(file.name), 60.0, 0.0, None, name)])
    return audio[:, None], FFMPEG_RATE


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


def audio_duration(path: str | Path) -> float:
    """Seconds of audio in a file, read from its header (libsndfile, else ffprobe) without decoding it;
    when neither header says, the file is decoded once, block by block, to count. An unreadable file is an
    EdgedistillError that names it."""
    path = _existing(path)
    try:
        return float(soundfile.info(str(path)).duration)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        pass
    _need_ffmpeg(path)
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "format=duration",
                             "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise _unreadable(str(path), result.stderr)
    try:
        return float(result.stdout.strip())
    except ValueError:  # "N/A": a stream without a duration in its header (raw AAC, some Ogg)
        return sum(block.size for block in audio_blocks(path, FFMPEG_RATE)) / FFMPEG_RATE


def audio_blocks(path: str | Path, target_rate: int, block_seconds: float = 30.0, start: float = 0.0,
                 end: float | None = None) -> Iterator[np.ndarray]:
    """A recording of any length and format, from `start` to `end` seconds (None: to its end), as
    consecutive mono float32 blocks at `target_rate`, so memory stays bounded by a block.

    libsndfile formats are read from disk with a seek; others (MP3, M4A/AAC, Opus...) stream out of ffmpeg,
    which seeks too. Both are resampled by the same streaming resampler.
    """
    path = _existing(path)
    try:
        source = soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        blocks, rate = _ffmpeg_blocks(path, block_seconds, start, end), FFMPEG_RATE
    else:
        blocks, rate = _soundfile_blocks(source, block_seconds, start, end), source.samplerate
    stream = None if rate == target_rate else soxr.ResampleStream(rate, target_rate, 1)
    for mono in blocks:
        if not np.all(np.isfinite(mono)):
            raise EdgedistillError(f"{path} holds NaN or infinite samples", "re-export the file")
        yield mono if stream is None else stream.resample_chunk(mono).astype(np.float32)
    if stream is not None:
        yield stream.resample_chunk(np.zeros(0, np.float32), last=True).astype(np.float32)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise EdgedistillError(f"audio file {path} does not exist", "check the path")
    return path


def _check_rate(rate: int, name: str) -> int:
    if not PLAUSIBLE_RATES[0] <= rate <= PLAUSIBLE_RATES[1]:
        raise EdgedistillError(f"{name} claims a sample rate of {rate} Hz, so its header is damaged",
                               f"check that the file is complete and is audio (rates from {PLAUSIBLE_RATES[0]} to "
                               f"{PLAUSIBLE_RATES[1]} Hz are read)")
    return rate


def _need_ffmpeg(path: Path) -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise EdgedistillError(f"{path} is not audio that libsndfile can read",
                               "convert it to WAV or FLAC, or install ffmpeg for other formats")


def _soundfile_blocks(source: soundfile.SoundFile, block_seconds: float, start: float,
                      end: float | None) -> Iterator[np.ndarray]:
    with source:
        _check_rate(source.samplerate, str(source.name))
        first = min(source.frames, max(0, round(start * source.samplerate)))
        last = source.frames if end is None else min(source.frames, max(first, round(end * source.samplerate)))
        read = 0
        try:
            source.seek(first)
            for block in source.blocks(blocksize=max(1, int(block_seconds * source.samplerate)), frames=last - first,
                                       dtype="float32", always_2d=True):
                read += block.size
                yield block.mean(axis=1)
        except soundfile.LibsndfileError as error:  # as with ffmpeg, a damaged tail after good audio is kept
            if not read:
                raise _unreadable(str(source.name), str(error)) from None


def _ffmpeg_blocks(path: Path, block_seconds: float, start: float, end: float | None,
                   name: str | None = None) -> Iterator[np.ndarray]:
    """ffmpeg's decode of [start, end) at FFMPEG_RATE, read from its pipe a block at a time; `name`: what
    errors call the file (default its path)."""
    name = name or str(path)
    _need_ffmpeg(Path(name))
    # decoding starts a little early and drops that part: an AAC decoder gives ~20 ms of near-silence after a seek
    preroll = min(start, FFMPEG_PREROLL_SECONDS)
    span = [] if end is None else ["-t", f"{max(0.0, end - start + preroll):.6f}"]
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-ss", f"{start - preroll:.6f}", *span, "-i", str(path),
            "-ac", "1", "-ar", str(FFMPEG_RATE), "-f", "f32le", "pipe:1"]
    block_bytes, skip = 4 * max(1, int(block_seconds * FFMPEG_RATE)), 4 * round(preroll * FFMPEG_RATE)
    with tempfile.TemporaryFile() as errors, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors) as ffmpeg:
        decoded = 0
        while data := ffmpeg.stdout.read(block_bytes):
            decoded += len(data)
            data, skip = data[skip:], max(0, skip - len(data))
            if data:
                yield np.frombuffer(data[:len(data) // 4 * 4], dtype=np.float32)
        if ffmpeg.wait() != 0 and decoded == 0:  # a damaged tail after good audio is kept, not fatal
            errors.seek(0)
            raise _unreadable(name, errors.read().decode(errors="replace"))


def _unreadable(name: str, ffmpeg_errors: str) -> EdgedistillError:
    reason = ffmpeg_errors.strip().splitlines()[-1:] or ["no audio stream"]
    return EdgedistillError(f"{name} is not a readable audio file ({reason[0]})",
                            "check that the file is complete and is audio")
