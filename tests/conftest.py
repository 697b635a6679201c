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


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's server) on 127.0.0.1, with test credentials in the environment."""
    import subprocess
    import sys
    import time

    import httpx

    from labelers.label_studio_server import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(endpoint)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    keys = {"AWS_ACCESS_KEY_ID": "edgedistill-test", "AWS_SECRET_ACCESS_KEY": "edgedistill-test",
            "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(keys)
    yield endpoint
    for key in keys:
        os.environ.pop(key, None)
    server.terminate()
    server.wait(10)


@pytest.fixture
def bucket(s3_endpoint, monkeypatch, tmp_path, request):
    """An empty bucket of its own for this test, reached the way users configure S3 (AWS_ENDPOINT_URL),
    and a fresh local media cache. Returns the bucket's s3:// URL."""
    import fsspec

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    name = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    fsspec.filesystem("s3", endpoint_url=s3_endpoint).mkdir(name)
    return f"s3://{name}"
