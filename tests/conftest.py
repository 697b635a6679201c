import os

import pytest
import torch

# Small CNNs train faster on one thread on these CPUs, and tests share two cores.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture
def audio_sample_factory():
    """Make a stored audio Sample of a sine tone, for tests that need real media."""
    import numpy as np

    from edgedistill.audio import wav_bytes
    from edgedistill.dataset import AudioShape, Label, LabelSource, Provenance, Sample

    def make(dataset, class_name: str, group: str, frequency: float = 440.0, rate: int = 16000) -> Sample:
        t = np.arange(rate) / rate
        audio = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
        digest, media = dataset.add_media(wav_bytes(audio, rate), "wav")
        return Sample(id=digest[:16], media=media, kind="audio", shape=AudioShape(duration=1.0, sample_rate=rate),
                      provenance=Provenance(source="test", group=group),
                      labels=[Label(class_name=class_name, source=LabelSource(labeler="test"))])

    return make
