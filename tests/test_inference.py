"""predict_files: real audio files of any rate and format through a real exported bundle."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edgedistill.errors import EdgedistillError
from edgedistill.inference import loudest_window, predict_files
from edgedistill.runtimes import quantize
from tones import LABELS, export_tones_bundle, tone_clip


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return export_tones_bundle(tmp_path_factory.mktemp("predict") / "tones")


def _write(path, label: str, rate: int, seconds: float = 1.0, seed: int = 7, **options):
    soundfile.write(path, tone_clip(label, rate, seconds, np.random.default_rng(seed)).astype(np.float32), rate,
                    **options)
    return path


def test_predicts_wav_at_other_sample_rates(bundle_dir, tmp_path):
    files = [_write(tmp_path / "low_8k.wav", "low", 8000), _write(tmp_path / "high_44k.wav", "high", 44100),
             _write(tmp_path / "low_16k.wav", "low", 16000, subtype="PCM_16"),
             _write(tmp_path / "quiet_22k.wav", "_silence_", 22050)]
    results = predict_files(bundle_dir, files)
    assert [r["label"] for r in results] == ["low", "high", "low", "_silence_"]
    for result, file in zip(results, files):
        assert result["file"] == str(file)
        assert set(result["scores"]) == set(LABELS)
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["score"] == max(result["scores"].values())


def test_predicts_flac_and_ogg_and_long_recordings(bundle_dir, tmp_path):
    flac = _write(tmp_path / "high.flac", "high", 48000)
    ogg = _write(tmp_path / "low.ogg", "low", 16000, format="OGG", subtype="VORBIS")
    # 3 s of near-silence with the tone in the middle: the loudest second is the one to classify
    rng = np.random.default_rng(3)
    long = 0.005 * rng.standard_normal(48000)
    long[16000:32000] += tone_clip("high", 16000, 1.0, rng)
    soundfile.write(tmp_path / "long.wav", long.astype(np.float32), 16000)
    results = predict_files(bundle_dir, [flac, ogg, tmp_path / "long.wav"])
    assert [r["label"] for r in results] == ["high", "low", "high"]


def test_corrupt_and_empty_files_name_the_file(bundle_dir, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(EdgedistillError, match="empty.wav"):
        predict_files(bundle_dir, [empty])
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    with pytest.raises(EdgedistillError, match="corrupt.wav"):
        predict_files(bundle_dir, [corrupt])
    with pytest.raises(EdgedistillError, match="missing.wav"):
        predict_files(bundle_dir, [tmp_path / "missing.wav"])


def test_tampered_bundle_fails_its_hash(bundle_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    model = next(copy.glob("*_int8.tflite"))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(EdgedistillError, match="sha256"):
        predict_files(copy, [_write(tmp_path / "low.wav", "low", 16000)])


def test_a_tampered_manifest_is_refused(bundle_dir, tmp_path):
    """The manifest is what a device team codes against: edited so it no longer describes its model, or
    broken, or naming a file that is gone, the bundle is refused, saying what is wrong."""
    clip = _write(tmp_path / "low.wav", "low", 16000)
    original = json.loads((bundle_dir / "manifest.json").read_text())

    def tampered(name: str, change) -> Path:
        copy = tmp_path / name
        shutil.copytree(bundle_dir, copy)
        manifest = json.loads(json.dumps(original))
        change(manifest, copy)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        return copy

    assert predict_files(tampered("same", lambda m, folder: None), [clip])[0]["label"] == "low"
    rescaled = tampered("rescaled", lambda m, folder: m["input"]["quantization"].update(
        scale=m["input"]["quantization"]["scale"] * 2))
    with pytest.raises(EdgedistillError, match="input quantisation .* does not match the model's"):
        predict_files(rescaled, [clip])
    relabelled = tampered("relabelled", lambda m, folder: m["labels"].pop())
    with pytest.raises(EdgedistillError, match="the model has 4 outputs but the manifest lists 3 labels"):
        predict_files(relabelled, [clip])
    unlabelled = tampered("unlabelled", lambda m, folder: m.pop("labels"))
    with pytest.raises(EdgedistillError, match=r"not a valid bundle manifest:\n  labels: Field required"):
        predict_files(unlabelled, [clip])
    header = next(f["path"] for f in original["files"] if f["role"] == "c_header")
    incomplete = tampered("incomplete", lambda m, folder: (folder / header).unlink())
    with pytest.raises(EdgedistillError, match=f"bundle file {header} is missing"):
        predict_files(incomplete, [clip])


def test_not_a_bundle(tmp_path):
    with pytest.raises(EdgedistillError, match="not a bundle"):
        predict_files(tmp_path, [])


def test_loudest_window_finds_the_sound_and_pads_short_audio():
    audio = np.zeros(5000, np.float32)
    audio[3000:3100] = 1.0
    window = loudest_window(audio, 1000)
    assert window.size == 1000 and window.sum() == 100
    short = loudest_window(np.ones(10, np.float32), 100)
    assert short.size == 100 and short[45:55].sum() == 10


def test_quantize_saturates_like_tflite():
    values = np.array([-100.0, -0.26, 0.0, 0.24, 100.0], np.float32)
    np.testing.assert_array_equal(quantize(values, 0.5, 3), np.array([-128, 2, 3, 3, 127], np.int8))
