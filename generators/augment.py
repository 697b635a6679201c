"""Audio augmentation: noisy, reverberant, shifted, band-limited copies of clean clips.

Each clean clip gets `settings.copies` copies, each through a random chain drawn from its own
seed: speed/pitch, room reverb (pyroomacoustics), time shift, a telephone or low-rate channel,
noise at an SNR measured on the word itself (coloured noise, or babble made from other clips of
the same split so nothing leaks across splits), and gain. `_silence_` clips get noise and gain
only. Copies keep the parent's split, group and labels (spans moved with the audio).
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soxr
from scipy.signal import butter, fftconvolve, istft, sosfiltfilt, stft

from edgedistill.audio import fit_to_length, load_audio, wav_bytes
from edgedistill.dataset import Dataset, Provenance, SPLITS, Sample
from edgedistill.recipe import SILENCE, AugmentSettings
from generators.background_noise import NoiseFile, find_noise, noise_excerpt, noise_split
from edgedistill.shards import ShardOutput, run_shards

NOISE_COLOURS = ("white", "pink", "brown")
_COLOUR_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power falls as 1/f^exponent
RIRS_PER_SEED = 32
VTLP_BOUNDARY_HZ = 4800.0
BABBLE_TALKERS = (3, 6)
BABBLE_SHARE = 0.3  # of noisy copies, how many get babble rather than coloured or real noise
SILENCE_NOISE_DBFS = (-60.0, -15.0)  # RMS level of real noise in a `_silence_` copy: a quiet room to a loud one
GAIN_DB = (-12.0, 6.0)
TELEPHONE_BAND = (300.0, 3400.0)
LOW_RATES = (8000, 6000, 11025)
SHARD_SIZE = 128  # copies per shard: a Prefect task each in a flow, so not too many


def coloured_noise(colour: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise of unit RMS, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length)
    frequencies[0] = frequencies[1] if length > 1 else 1.0  # no infinite DC gain
    spectrum *= frequencies ** (-_COLOUR_EXPONENT[colour] / 2)
    noise = np.fft.irfft(spectrum, n=length)
    return (noise / (np.sqrt(np.mean(noise**2)) or 1.0)).astype(np.float32)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


# -- rooms -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def room_impulse_responses(seed: int, sample_rate: int, count: int = RIRS_PER_SEED) -> tuple[np.ndarray, ...]:
    """A few dozen simulated rooms per seed: small to large, dry to echoing (image source method)."""
    import pyroomacoustics as pra

    responses = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        size = rng.uniform([2.5, 2.5, 2.3], [9.0, 8.0, 4.0])
        absorption, max_order = pra.inverse_sabine(float(rng.uniform(0.15, 0.9)), size)
        room = pra.ShoeBox(size, fs=sample_rate, materials=pra.Material(absorption),
                           max_order=min(max_order, 20))  # higher orders add little but cost a lot
        room.add_source(rng.uniform([0.4, 0.4, 0.8], size - 0.4))
        room.add_microphone(rng.uniform([0.4, 0.4, 0.8], size - 0.4))
        room.compute_rir()
        response = np.asarray(room.rir[0][0], dtype=np.float32)
        responses.append(response / np.abs(response).max())
    return tuple(responses)


# -- the chain ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AugmentJob:
    parent: Sample
    copy: int
    seed: int
    babble: tuple[str, ...]  # media paths of other clips of the same split


@dataclass(frozen=True)
class _AugmentContext:
    dataset: str  # its location
    settings: AugmentSettings
    sample_rate: int
    rir_seed: int
    noise: dict[str | None, tuple[NoiseFile, ...]]  # real noise recordings by split (None: unsplit clips)


@dataclass
class _Clip:
    audio: np.ndarray
    span: tuple[float, float] | None
    rate: int
    chain: list[dict[str, Any]]

    def speech_part(self) -> np.ndarray:
        """The samples of the word, for SNR: padding silence must not count as signal."""
        if self.span is None:
            return self.audio
        start, end = (int(round(t * self.rate)) for t in self.span)
        part = self.audio[max(0, start):max(start + 1, end)]
        return part if rms(part) > 0 else self.audio


def _change_speed(clip: _Clip, settings: AugmentSettings, rng: np.random.Generator) -> None:
    """Faster or slower (pitch follows, as on a tape), re-centred in the clip; the span follows."""
    factor = float(rng.uniform(*settings.speed_range))
    length = clip.audio.size
    changed = soxr.resample(clip.audio, clip.rate, max(1, round(clip.rate / factor))).astype(np.float32)
    # soxr keeps the rate label: `changed` played at clip.rate is `factor` times faster
    clip.audio = fit_to_length(changed, length)
    shift = (length - changed.size) // 2
    if clip.span is not None:
        clip.span = tuple(max(0.0, min(length / clip.rate, t / factor + shift / clip.rate)) for t in clip.span)
    clip.chain.append({"step": "speed", "factor": round(factor, 4)})


def _shift_pitch(clip: _Clip, settings: AugmentSettings, rng: np.random.Generator) -> None:
    from audiomentations import PitchShift

    low, high = settings.speed_range
    semitones = float(rng.uniform(12 * math.log2(low), 12 * math.log2(high)))
    shifter = PitchShift(min_semitones=semitones, max_semitones=semitones, p=1.0)
    clip.audio = shifter(samples=clip.audio, sample_rate=clip.rate).astype(np.float32)
    clip.chain.append({"step": "pitch", "semitones": round(semitones, 3)})


def _warp_vocal_tract(clip: _Clip, settings: AugmentSettings, rng: np.random.Generator) -> None:
    """Vocal tract length perturbation (Jaitly and Hinton, 2013): stretch the spectrum's frequency axis by a
    factor, as a longer or shorter vocal tract moves the formants, keeping pitch and timing. From one
    synthetic voice it makes many speakers."""
    factor = float(rng.uniform(*settings.vocal_tract_range))
    nyquist = clip.rate / 2
    boundary = min(VTLP_BOUNDARY_HZ * min(factor, 1.0), 0.9 * nyquist)  # output frequency where scaling stops
    frequencies, _, spectrum = stft(clip.audio, fs=clip.rate, nperseg=512, noverlap=384)
    # each output frequency's source: the inverse of the warp, f * factor below the boundary and a straight
    # line from there to Nyquist above it, so no energy leaves the band
    source = np.where(frequencies <= boundary, frequencies / factor,
                      nyquist - (nyquist - frequencies) * (nyquist - boundary / factor) / (nyquist - boundary))
    # magnitudes are interpolated; each output bin's phase turns as its source bin's does, sped up by the
    # ratio of the two frequencies (a phase vocoder's rule), so that a moved partial sounds at its new pitch
    nearest = np.clip(np.round(source / frequencies[1]).astype(int), 1, len(frequencies) - 1)
    magnitude = np.stack([np.interp(source, frequencies, column) for column in np.abs(spectrum).T], axis=1)
    ratio = (frequencies / frequencies[nearest])[:, None]
    warped = magnitude * np.exp(1j * np.unwrap(np.angle(spectrum[nearest]), axis=1) * ratio)
    _, audio = istft(warped, fs=clip.rate, nperseg=512, noverlap=384)
    clip.audio = fit_to_length(audio[: clip.audio.size].astype(np.float32), clip.audio.size, 0)
    clip.chain.append({"step": "vocal_tract", "factor": round(factor, 4)})


def _reverb(clip: _Clip, rir_seed: int, rng: np.random.Generator) -> None:
    responses = room_impulse_responses(rir_seed, clip.rate)
    index = int(rng.integers(len(responses)))
    peak = float(np.abs(clip.audio).max()) or 1.0
    wet = fftconvolve(clip.audio, responses[index])[: clip.audio.size]  # the tail past the clip is cut
    clip.audio = (wet * (peak / (float(np.abs(wet).max()) or 1.0))).astype(np.float32)
    clip.chain.append({"step": "reverb", "room": index, "rir_seed": rir_seed})


def _shift(clip: _Clip, settings: AugmentSettings, rng: np.random.Generator) -> None:
    """Move the audio in time, never pushing the word out of the clip."""
    duration = clip.audio.size / clip.rate
    low, high = -settings.max_shift_seconds, settings.max_shift_seconds
    if clip.span is not None:
        low, high = max(low, -clip.span[0]), min(high, duration - clip.span[1])
    seconds = float(rng.uniform(low, high)) if high > low else 0.0
    samples = int(round(seconds * clip.rate))
    shifted = np.zeros_like(clip.audio)
    if samples >= 0:
        shifted[samples:] = clip.audio[: clip.audio.size - samples]
    else:
        shifted[:samples] = clip.audio[-samples:]
    clip.audio = shifted
    if clip.span is not None:
        clip.span = (clip.span[0] + samples / clip.rate, clip.span[1] + samples / clip.rate)
    clip.chain.append({"step": "shift", "seconds": round(samples / clip.rate, 4)})


def _channel(clip: _Clip, rng: np.random.Generator) -> None:
    if rng.random() < 0.5 and clip.rate > 2 * TELEPHONE_BAND[1]:
        sos = butter(4, TELEPHONE_BAND, btype="bandpass", fs=clip.rate, output="sos")
        clip.audio = sosfiltfilt(sos, clip.audio).astype(np.float32)
        clip.chain.append({"step": "telephone"})
        return
    low_rate = int(rng.choice([r for r in LOW_RATES if r < clip.rate] or [clip.rate]))
    down = soxr.resample(clip.audio, clip.rate, low_rate)
    clip.audio = fit_to_length(soxr.resample(down, low_rate, clip.rate).astype(np.float32), clip.audio.size, 0)
    clip.chain.append({"step": "low_rate", "rate": low_rate})


def _babble(paths: tuple[Path, ...], length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    count = int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1))
    picks = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
    mix = np.zeros(length, dtype=np.float32)
    for pick in picks:
        talker = load_audio(paths[int(pick)], rate)
        mix += np.roll(np.resize(talker, length), int(rng.integers(length))) / (rms(talker) or 1.0)
    return mix / (rms(mix) or 1.0)


def _add_noise(clip: _Clip, silence: bool, context: _AugmentContext, babble: tuple[Path, ...], split: str | None,
               rng: np.random.Generator) -> None:
    """Babble, a real recording or coloured noise, at an SNR drawn from settings against the word's own RMS.
    A `_silence_` clip gets a real recording at a room's level instead, when there is one."""
    snr = float(rng.uniform(*context.settings.snr_db))
    recordings = context.noise.get(split, ())
    draw = rng.random()
    step: dict[str, Any] = {"step": "noise"}
    if babble and draw < BABBLE_SHARE:
        noise, step["kind"] = _babble(babble, clip.audio.size, clip.rate, rng), "babble"
    elif recordings and (silence or draw < BABBLE_SHARE + (1 - BABBLE_SHARE) * context.settings.real_noise_share):
        recording = recordings[int(rng.integers(len(recordings)))]
        noise, step["kind"], step["file"] = noise_excerpt(recording, clip.audio.size, clip.rate, rng), "real", \
            Path(recording.path).name
        if silence:
            level = float(rng.uniform(*SILENCE_NOISE_DBFS))
            clip.audio = (clip.audio + noise * 10 ** (level / 20)).astype(np.float32)
            clip.chain.append(step | {"level_dbfs": round(level, 2)})
            return
    else:
        step["kind"] = str(rng.choice(NOISE_COLOURS))
        noise = coloured_noise(step["kind"], clip.audio.size, rng)
    signal = rms(clip.speech_part()) or 10 ** (-60 / 20)
    clip.audio = (clip.audio + noise * (signal / 10 ** (snr / 20))).astype(np.float32)
    clip.chain.append(step | {"snr_db": round(snr, 2)})


def _gain(clip: _Clip, rng: np.random.Generator) -> None:
    gain_db = float(rng.uniform(*GAIN_DB))
    clip.audio = clip.audio * 10 ** (gain_db / 20)
    peak = float(np.abs(clip.audio).max())
    if peak > 0.99:  # a limiter, not clipping: clipped copies would teach the model distortion
        gain_db -= 20 * math.log10(peak / 0.99)
        clip.audio = clip.audio * (0.99 / peak)
    clip.chain.append({"step": "gain", "db": round(gain_db, 2)})


def augment_clip(audio: np.ndarray, span: tuple[float, float] | None, silence: bool, job_seed: int,
                 babble: tuple[Path, ...], context: _AugmentContext, split: str | None = None) -> _Clip:
    """One random chain over one clip; everything random comes from `job_seed`."""
    rng = np.random.default_rng(job_seed)
    settings = context.settings
    clip = _Clip(audio.astype(np.float32), span, context.sample_rate, [])
    if not silence:
        if rng.random() < 0.5:
            _change_speed(clip, settings, rng)
        elif rng.random() < 0.5:
            _shift_pitch(clip, settings, rng)
        if rng.random() < settings.vocal_tract_probability:
            _warp_vocal_tract(clip, settings, rng)
        if rng.random() < settings.reverb_probability:
            _reverb(clip, context.rir_seed, rng)
        if settings.max_shift_seconds > 0:
            _shift(clip, settings, rng)
        if rng.random() < settings.channel_probability:
            _channel(clip, rng)
    _add_noise(clip, silence, context, babble, split, rng)
    _gain(clip, rng)
    return clip


def _augmented_sample(dataset: Dataset, job: AugmentJob, clip: _Clip) -> Sample:
    digest, relative = dataset.add_media(wav_bytes(clip.audio, clip.rate), "wav")
    parent = job.parent
    labels = [label.model_copy(update={"span": _rounded(clip.span) if label.span is not None else None})
              for label in parent.labels]
    return parent.model_copy(update={
        "id": digest[:16], "media": relative, "labels": labels,
        "provenance": Provenance(source="augment", params={"parent": parent.id, "copy": job.copy, "chain": clip.chain,
                                                           **_kept_params(parent)},
                                 seed=job.seed, group=parent.provenance.group),
    })


def _kept_params(parent: Sample) -> dict:
    """What a copy says is what its parent said: the kind of negative travels with it."""
    return {key: parent.provenance.params[key] for key in ("negative",) if key in parent.provenance.params}


def _rounded(span: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if span is None else (round(span[0], 4), round(span[1], 4))


def augment_shard(context: _AugmentContext, jobs: list[AugmentJob]) -> ShardOutput:
    output = ShardOutput()
    with Dataset.open(context.dataset).parallel_media_writes() as dataset:
        for job in jobs:
            audio = load_audio(dataset.media_path(job.parent), context.sample_rate)
            span = job.parent.labels[0].span if job.parent.labels else None
            babble = tuple(dataset.media_file(media) for media in job.babble)
            clip = augment_clip(audio, span, job.parent.class_name == SILENCE, job.seed, babble, context,
                                job.parent.split)
            output.samples.append(_augmented_sample(dataset, job, clip))
    return output


# -- planning and the stage --------------------------------------------------------------------

def plan_augment(samples: list[Sample], copies: int, seed: int) -> list[AugmentJob]:
    """Copies of each sample, with babble talkers drawn from speech clips of the same split only
    (and of other voices, so a clip never babbles over itself)."""
    rng = np.random.default_rng(seed)
    talkers: dict[str | None, list[Sample]] = {}
    for sample in samples:
        if sample.class_name != SILENCE:
            talkers.setdefault(sample.split, []).append(sample)
    jobs = []
    for sample in samples:
        pool = talkers.get(sample.split, [])
        for copy in range(copies):
            candidates = (pool[int(i)] for i in rng.integers(len(pool), size=3 * BABBLE_TALKERS[1])) if pool else ()
            babble = [s.media for s in candidates if s.provenance.group != sample.provenance.group]
            jobs.append(AugmentJob(parent=sample, copy=copy, seed=int(rng.integers(2**31)),
                                   babble=tuple(dict.fromkeys(babble))[: BABBLE_TALKERS[1]]))
    return jobs


def noise_by_split(settings: AugmentSettings, seed: int) -> dict[str | None, tuple[NoiseFile, ...]]:
    """The real noise recordings each split may use; clips without a split may use any."""
    if settings.real_noise_share == 0:
        return {}
    files = find_noise(tuple(settings.noise_folders) if settings.noise_folders is not None else None)
    by_split: dict[str | None, tuple[NoiseFile, ...]] = {None: files}
    for split in SPLITS:
        by_split[split] = tuple(f for f in files if noise_split(f, seed) == split)
    return by_split


@dataclass
class AugmentResult:
    samples: list[Sample]  # the inputs, then the copies
    clips_per_second: float  # copies made in this run per second of wall time (0 if all resumed)
    seconds: float


def augment_dataset_samples(dataset: Dataset, samples: list[Sample], settings: AugmentSettings,
                            sample_rate: int, seed: int, work_dir: Path,
                            progress: Callable[[int, int], None] | None = None,
                            workers: int | None = None) -> AugmentResult:
    """`augment_samples` with its speed; `workers` processes (None: one per core)."""
    jobs = plan_augment(samples, settings.copies, seed)
    context = _AugmentContext(dataset.location, settings, sample_rate, seed, noise_by_split(settings, seed))
    started = time.perf_counter()
    run = run_shards(jobs, functools.partial(augment_shard, context), Path(work_dir), SHARD_SIZE,
                     workers or os.cpu_count() or 1, progress)
    seconds = time.perf_counter() - started
    made_now = sum(len(run.outputs[i].samples) for i in run.ran)
    seen = {s.id for s in samples}
    copies = []
    for sample in (s for output in run.outputs for s in output.samples):
        if sample.id not in seen:  # a copy byte-identical to a kept clip (digital silence, gain only)
            seen.add(sample.id)
            copies.append(sample)
    return AugmentResult([*samples, *copies], made_now / seconds if made_now else 0.0, seconds)


def augment_samples(dataset: Dataset, samples: list[Sample], settings: AugmentSettings,
                    sample_rate: int, seed: int, work_dir: Path,
                    progress: Callable[[int, int], None] | None = None) -> list[Sample]:
    """The input samples plus `settings.copies` augmented copies of each, in a fixed order."""
    return augment_dataset_samples(dataset, samples, settings, sample_rate, seed, work_dir, progress).samples
