"""The keyword-spotting audio front end: CMSIS-DSP's MFCC (`arm_mfcc_f32`), computed in NumPy.

Training, `predict` and the microcontroller must see the same features, so this module does
exactly what `arm_mfcc_f32` does on a Cortex-M, with the filter bank, DCT matrix and window
that CMSIS-DSP's own Python helpers generate (tests check it against the `cmsisdsp` build of
the C code). Per frame: window, real FFT, magnitude, mel filter bank, log(x + 1e-6), DCT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

LOG_OFFSET = 1e-6  # arm_mfcc_f32 adds this before the log


@dataclass(frozen=True)
class MfccFrontEnd:
    sample_rate: int = 16000
    clip_samples: int = 16000
    frame_length: int = 512  # also the FFT length: CMSIS-DSP's RFFT needs a power of two
    hop_length: int = 320
    mel_filters: int = 40
    mfcc: int = 10
    f_min: float = 20.0
    f_max: float = 4000.0

    kind = "cmsis_dsp_mfcc_f32"

    def __post_init__(self) -> None:
        if self.frame_length not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
            raise ValueError("frame_length must be a power of two from 32 to 4096 (the CMSIS-DSP RFFT sizes)")
        if self.clip_samples < self.frame_length:
            raise ValueError("a clip must be at least one frame long")

    @property
    def frames(self) -> int:
        return 1 + (self.clip_samples - self.frame_length) // self.hop_length

    @property
    def feature_shape(self) -> tuple[int, int]:
        return (self.frames, self.mfcc)

    def spec(self) -> dict:
        """What a device needs to reproduce the features: goes into the bundle manifest."""
        return {"type": self.kind, **asdict(self), "window": "hamming (periodic)", "log_offset": LOG_OFFSET,
                "frames": self.frames, "feature_shape": list(self.feature_shape)}

    @classmethod
    def from_spec(cls, spec: dict) -> "MfccFrontEnd":
        if spec.get("type") != cls.kind:
            raise ValueError(f"unknown front end type {spec.get('type')!r}")
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in spec.items() if k in fields})

    # -- constants, as CMSIS-DSP's helpers make them ------------------------------------------
    @cached_property
    def window(self) -> np.ndarray:
        return np.hamming(self.frame_length + 1)[:-1].astype(np.float32)  # periodic, like sym=False

    @cached_property
    def mel_matrix(self) -> np.ndarray:
        """Dense (mel_filters, frame_length) matrix, expanded from CMSIS-DSP's packed filters."""
        lengths, positions, packed = self.packed_mel_filters
        dense = np.zeros((self.mel_filters, self.frame_length), dtype=np.float32)
        offset = 0
        for row, (start, length) in enumerate(zip(positions, lengths)):
            dense[row, start:start + length] = packed[offset:offset + length]
            offset += length
        return dense

    @cached_property
    def packed_mel_filters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from cmsisdsp.datatype import F32
        from cmsisdsp.mfcc import melFilterMatrix

        lengths, positions, packed = melFilterMatrix(
            F32, self.f_min, self.f_max, self.mel_filters, self.sample_rate, self.frame_length)
        return np.asarray(lengths, np.uint32), np.asarray(positions, np.uint32), np.asarray(packed, np.float32)

    @cached_property
    def dct_matrix(self) -> np.ndarray:
        from cmsisdsp.datatype import F32
        from cmsisdsp.mfcc import dctMatrix

        return np.asarray(dctMatrix(F32, self.mfcc, self.mel_filters), np.float32).reshape(
            self.mfcc, self.mel_filters)

    # -- features --------------------------------------------------------------------------
    def frame(self, clips: np.ndarray) -> np.ndarray:
        """(batch, clip_samples) -> (batch, frames, frame_length)."""
        starts = np.arange(self.frames) * self.hop_length
        index = starts[:, None] + np.arange(self.frame_length)[None, :]
        return clips[:, index]

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        """Clips (batch, clip_samples) or one clip -> MFCC features (batch, frames, mfcc) float32."""
        clips = np.asarray(clips, dtype=np.float32)
        single = clips.ndim == 1
        clips = clips[None] if single else clips
        if clips.shape[1] != self.clip_samples:
            raise ValueError(f"expected clips of {self.clip_samples} samples, got {clips.shape[1]}")
        features = self._mfcc(self.frame(clips))
        return features[0] if single else features

    def stream_features(self, audio: np.ndarray) -> np.ndarray:
        """MFCC rows of every frame of a recording of any length (at least one frame): row k is the frame
        starting at sample k * hop_length, so any `frames` consecutive rows are the features of that clip."""
        audio = np.asarray(audio, dtype=np.float32)
        count = 1 + (audio.size - self.frame_length) // self.hop_length
        index = (np.arange(count) * self.hop_length)[:, None] + np.arange(self.frame_length)[None, :]
        return self._mfcc(audio[index])

    def _mfcc(self, frames: np.ndarray) -> np.ndarray:
        magnitude = np.abs(np.fft.rfft(frames * self.window, axis=-1))[..., : self.frame_length]
        # rfft gives frame_length/2+1 bins; the mel matrix is zero above Nyquist, as on the MCU
        mel = magnitude @ self.mel_matrix[:, : magnitude.shape[-1]].T
        return (np.log(mel + LOG_OFFSET) @ self.dct_matrix.T).astype(np.float32)
