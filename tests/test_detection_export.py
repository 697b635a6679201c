"""A trained FOMO detector through the whole bundle (real litert-torch, TFLite Micro, gcc, Vela) and predict."""

import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest
import torch

from edgedistill.bundle import MANIFEST, load_bundle
from edgedistill.errors import EdgedistillError
from edgedistill.image_frontend import BACKGROUND, ImageFrontEnd
from edgedistill.inference import Int8Classifier, predict_files
from edgedistill.recipe import DetectorTrainSettings, ExportSettings
from exporters.bundle import export_detection_bundle
from bundle_checks import tflite_micro_runs, vela_figures_of_its_report
from shapes import synthetic_shapes
from trainers.fomo import train_fomo

LABELS = ["square", "circle"]
ROLES = {"model_int8", "model_float_onnx", "c_header", "vela_report", "model_card", "report"}
SETTINGS = DetectorTrainSettings(epochs=8, batch_size=16, patience=8, learning_rate=5e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train = synthetic_shapes(160, 0)
    result = train_fomo(train, synthetic_shapes(40, 1), LABELS, SETTINGS, tmp_path_factory.mktemp("fomo"))
    calibration = np.stack([result.frontend(image)[0] for image in train.images[:64]])
    return result, calibration, synthetic_shapes(40, 2)


def _export(trained, out_dir, progress=None, **settings):
    result, calibration, test = trained
    return export_detection_bundle(
        result.model, out_dir=out_dir, name="shapes", labels=LABELS, frontend=result.frontend,
        decoding=result.decoding, calibration=calibration, test_images=test.images, test_objects=test.objects,
        centroid_distance=SETTINGS.centroid_distance, settings=ExportSettings(**settings),
        dataset_ref={"path": "datasets/shapes", "version": "def456"},
        recipe={"task": "detection", "name": "shapes"}, progress=progress)


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("export") / "shapes"
    messages = []
    manifest = _export(trained, out_dir, progress=messages.append)
    return out_dir, manifest, messages


def test_bundle_holds_every_file_and_the_image_spec(bundle, trained):
    out_dir, manifest, messages = bundle
    assert load_bundle(out_dir) == manifest  # checks every sha256
    assert ROLES <= {entry.role for entry in manifest.files}
    assert {p.name for p in out_dir.iterdir()} == {entry.path for entry in manifest.files} | {MANIFEST}
    assert [p.name for p in out_dir.parent.iterdir()] == ["shapes"]
    assert manifest.task == "detection" and manifest.labels == [BACKGROUND, *LABELS]
    assert manifest.input.kind == "image"
    frontend = manifest.input.frontend
    assert ImageFrontEnd.from_spec(frontend) == trained[0].frontend
    assert frontend["resize"] == "letterbox" and frontend["size"] == 96 and frontend["channels"] == 3
    assert frontend["heatmap"] == trained[0].decoding.spec()
    assert manifest.output.shape == [1, 12, 12, 3] and manifest.output.activation == "logits"
    assert any("Vela" in message for message in messages)


def test_int8_model_has_int8_io_fits_the_mcu_and_keeps_f1(bundle):
    out_dir, manifest, _ = bundle
    classifier = Int8Classifier(out_dir / manifest.file("model_int8").path)
    assert (classifier.input_quantization.dtype, classifier.output_quantization.dtype) == ("int8", "int8")
    assert classifier.input_shape == manifest.input.shape == [1, 96, 96, 3]
    assert manifest.file("model_int8").bytes <= 100 * 1024
    micro = manifest.targets["tflite_micro"]
    # half the 256 KB budget: blocks that halve the resolution pool before they expand (trainers/mobilenet.py);
    # with MobileNet's stride-2 depthwise convs the converter's explicit PAD made it 235 KiB
    assert micro["arena_bytes"] <= 128 * 1024 and micro["checked_inputs"] == 8  # TFLM_CHECK_IMAGES of the 40
    # the arena stated is exactly what the model needs on the device: enough, and 16 bytes less is not
    model = out_dir / manifest.file("model_int8").path
    assert tflite_micro_runs(model, micro["arena_bytes"], manifest.input.shape)
    assert not tflite_micro_runs(model, micro["arena_bytes"] - 16, manifest.input.shape)
    # TFLite Micro's kernels round a little differently from LiteRT's; per heat-map cell they agree
    assert micro["top1_agreement"] >= 0.98 and micro["max_abs_difference_steps"] <= 16
    float_f1, int8_f1 = manifest.metrics["float"]["f1"], manifest.metrics["int8"]["f1"]
    assert float_f1 > 0.8 and float_f1 - int8_f1 <= ExportSettings().max_int8_accuracy_drop
    assert set(manifest.metrics["int8"]["per_class"]) == set(LABELS)
    assert manifest.metrics["int8_vs_float"]["cell_agreement"] >= 0.95


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_c_header_compiles_and_holds_the_exact_model(bundle, tmp_path):
    out_dir, manifest, _ = bundle
    header = out_dir / manifest.file("c_header").path
    source = tmp_path / "use_model.c"
    source.write_text(f'#include "{header}"\n#include <stddef.h>\n'
                      "_Static_assert(_Alignof(shapes_model) >= 16, \"model must be 16-byte aligned\");\n"
                      "_Static_assert(SHAPES_IMAGE_SIZE == 96 && SHAPES_IMAGE_CHANNELS == 3, \"input\");\n"
                      "_Static_assert(SHAPES_GRID_SIZE == 12 && SHAPES_LABEL_COUNT == 3, \"output\");\n"
                      "size_t use(void) { return shapes_model_len + SHAPES_ARENA_BYTES + SHAPES_OUTPUT_DIM3\n"
                      "  + (size_t)(SHAPES_PIXEL_SCALE + SHAPES_THRESHOLD + SHAPES_INPUT_SCALE) + SHAPES_LETTERBOX\n"
                      "  + (size_t)shapes_labels[SHAPES_BACKGROUND_INDEX][0];\n}\n")
    result = subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", str(source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = header.read_text()
    body = text[text.index("shapes_model[") :].split("{", 1)[1].split("}", 1)[0]
    model_bytes = bytes(int(token, 16) for token in body.replace("\n", "").split(",") if token.strip())
    assert model_bytes == (out_dir / manifest.file("model_int8").path).read_bytes()
    assert "FOMO detection" in text and "MFCC" not in text


def test_vela_compiles_the_detector_onto_the_npu(bundle):
    out_dir, manifest, _ = bundle
    vela = manifest.targets["vela"]
    assert vela["status"] == "ok" and vela["accelerator"] == "Ethos_U55_128"
    assert vela_figures_of_its_report(out_dir / manifest.file("vela_report").path, vela)
    assert vela["npu_operator_share"] == 1.0 and vela["cpu_operators"] == 0


def test_onnx_matches_torch(bundle, trained):
    import onnxruntime

    out_dir, manifest, _ = bundle
    result, calibration, _ = trained
    session = onnxruntime.InferenceSession(str(out_dir / manifest.file("model_float_onnx").path))
    with torch.no_grad():
        expected = result.model(torch.from_numpy(calibration[:4])).numpy()
    np.testing.assert_allclose(session.run(None, {"features": calibration[:4]})[0], expected, atol=1e-4)


def test_model_card_and_report_show_the_detector(bundle):
    out_dir, manifest, _ = bundle
    card = (out_dir / "README.md").read_text()
    assert "FOMO" in card and all(f"`{label}`" in card for label in LABELS)
    assert "letterbox" in card and str(manifest.input.quantization.scale) in card
    report = (out_dir / "report.html").read_text()
    assert report.count("data:image/jpeg;base64,") == 6  # sample test images with boxes and centroids
    assert len(report) < 300_000
    assert "http://" not in report and "https://" not in report
    assert "Ethos_U55_128" in report and "Centroid F1" in report


def test_predict_finds_objects_in_png_and_jpeg_files(bundle, tmp_path):
    out_dir, manifest, _ = bundle
    threshold = manifest.input.frontend["heatmap"]["threshold"]
    # twice the training size, so the letterbox scales it; objects far apart (FOMO merges touching cells)
    image = np.random.default_rng(9).integers(0, 120, (192, 256, 3), dtype=np.uint8)
    cv2.rectangle(image, (30, 40), (65, 75), (230, 40, 40), -1)
    cv2.circle(image, (190, 130), 17, (40, 80, 230), -1)
    cv2.circle(image, (80, 150), 14, (40, 80, 230), -1)
    boxes = np.array([(30, 40, 36, 36), (173, 113, 35, 35), (66, 136, 29, 29)], np.float64)
    classes = np.array([0, 1, 1])
    files = [tmp_path / "scene.png", tmp_path / "scene.jpg"]
    cv2.imwrite(str(files[0]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(files[1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    for result in predict_files(out_dir, files):
        assert set(result) == {"file", "objects"}
        json.dumps(result)  # what `edgedistill predict --json` prints
        found = result["objects"]
        assert len(found) == len(boxes), (result, boxes, classes)
        for (x, y), class_index in zip(centres, classes):
            nearest = min(found, key=lambda o: np.hypot(o["x"] - x, o["y"] - y))
            assert nearest["label"] == LABELS[class_index]
            assert np.hypot(nearest["x"] - x, nearest["y"] - y) < 0.1 * 256  # within the F1 radius, in image pixels
            assert threshold <= nearest["score"] <= 1.0  # reported because its cell reached the threshold


def test_predict_on_an_image_without_objects_and_a_broken_file(bundle, tmp_path):
    out_dir, _, _ = bundle
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.random.default_rng(0).integers(0, 120, (96, 128, 3), dtype=np.uint8))
    assert predict_files(out_dir, [empty])[0]["objects"] == []
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(empty.read_bytes()[:100])
    with pytest.raises(EdgedistillError, match="broken.jpg"):
        predict_files(out_dir, [broken])


def test_too_large_int8_drop_raises_and_writes_nothing(trained, tmp_path):
    result, calibration, test = trained
    # F1 lies in [0, 1], so float minus int8 F1 is never below -1: an allowance of -1.01 (past
    # validation) refuses every model, however its int8 F1 compares with its float F1
    settings = ExportSettings.model_construct(**{**ExportSettings().model_dump(), "formats": ["tflite"],
                                                 "max_int8_accuracy_drop": -1.01})
    with pytest.raises(EdgedistillError, match="centroid F1") as raised:
        export_detection_bundle(
            result.model, out_dir=tmp_path / "shapes", name="shapes", labels=LABELS, frontend=result.frontend,
            decoding=result.decoding, calibration=calibration, test_images=test.images, test_objects=test.objects,
            centroid_distance=SETTINGS.centroid_distance, settings=settings,
            dataset_ref={}, recipe={})
    assert "max_int8_accuracy_drop" in raised.value.hint and "images" in raised.value.hint
    assert list(tmp_path.iterdir()) == []
