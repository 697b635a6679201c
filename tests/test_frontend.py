import cmsisdsp as dsp
import numpy as np
import pytest

from edgedistill.frontend import MfccFrontEnd


def _cmsis_mfcc(frontend: MfccFrontEnd, clip: np.ndarray) -> np.ndarray:
    """The C implementation the microcontroller runs (arm_mfcc_f32), frame by frame."""
    instance = dsp.arm_mfcc_instance_f32()
    lengths, positions, packed = frontend.packed_mel_filters
    status = dsp.arm_mfcc_init_f32(instance, frontend.frame_length, frontend.mel_filters, frontend.mfcc,
                                   frontend.dct_matrix.flatten(), positions, lengths, packed, frontend.window)
    assert status == 0
    scratch = np.zeros(frontend.frame_length + 2, np.float32)
    return np.stack([dsp.arm_mfcc_f32(instance, frame.copy(), scratch) for frame in frontend.frame(clip[None])[0]])


@pytest.mark.parametrize("frontend", [MfccFrontEnd(), MfccFrontEnd(frame_length=256, hop_length=160, mfcc=13)])
def test_numpy_front_end_matches_cmsis_dsp(frontend):
    rng = np.random.default_rng(0)
    t = np.arange(frontend.clip_samples) / frontend.sample_rate
    clip = (0.2 * np.sin(2 * np.pi * 700 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    clip[:2000] = 0.0  # digital silence takes the log offset path
    ours = frontend(clip)
    reference = _cmsis_mfcc(frontend, clip)
    assert ours.shape == reference.shape == frontend.feature_shape
    assert np.abs(ours - reference).max() < 1e-3


def test_spec_round_trips_and_batches_agree():
    frontend = MfccFrontEnd()
    assert MfccFrontEnd.from_spec(frontend.spec()) == frontend
    clips = np.random.default_rng(1).standard_normal((3, frontend.clip_samples)).astype(np.float32) * 0.1
    assert np.allclose(frontend(clips)[1], frontend(clips[1]), atol=1e-5)
    with pytest.raises(ValueError, match="power of two"):
        MfccFrontEnd(frame_length=500)
