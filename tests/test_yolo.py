"""YOLO through ultralytics in .venv-torchvision (made by `make setup`), scored here on its exported ONNX,
and quantised here to full-int8 TFLite from its torch.export program."""

import json

import numpy as np
import pytest
import torch
import yaml

from edgedistill.boxes import Detections, xywh_to_xyxy
from edgedistill.dataset import Dataset, ImageShape, LabelSource, OntologyClass, Provenance, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.images import Placement, image_bytes, load_image
from edgedistill.recipe import DetectorTrainSettings, ExportSettings
from exporters.yolo_int8 import Int8Yolo, load_program, yolo_companions
from shapes import shape_labels, synthetic_shapes
from edgedistill.yolo import coco_map, decode, detect_all, letterbox, onnx_runner
from trainers.yolo import train_yolo, write_yolo_folder

LABELS = ["square", "circle"]
DRAWN = LabelSource(labeler="test")


def shapes_dataset(root, count: int = 48) -> tuple[Dataset, list[Sample]]:
    """Shapes images with exact boxes, split 60/20/20 in order."""
    arrays = synthetic_shapes(count, seed=5)
    dataset = Dataset.create(root, "shapes", "detection", [OntologyClass(name=name) for name in LABELS])
    samples = []
    for index, (image, objects) in enumerate(zip(arrays.images, arrays.objects)):
        digest, media = dataset.add_media(image_bytes(image), "png")
        split = "train" if index < count * 0.6 else "val" if index < count * 0.8 else "test"
        samples.append(Sample(id=digest[:16], media=media, kind="image", split=split,
                              labels=shape_labels(objects, LABELS, DRAWN),
                              shape=ImageShape(width=image.shape[1], height=image.shape[0]),
                              provenance=Provenance(source="test", seed=index)))
    dataset.commit(samples, None, "split", {})
    return dataset, samples


def test_yolo_folder_holds_linked_images_and_normalised_centre_boxes(tmp_path):
    dataset, samples = shapes_dataset(tmp_path / "shapes", count=10)
    data = write_yolo_folder(dataset, samples, LABELS, tmp_path / "yolo", link_images=True)  # as training writes it
    sample = samples[0]
    label_file = tmp_path / "yolo" / "labels" / sample.split / f"{sample.id}.txt"
    rows = [line.split() for line in label_file.read_text().splitlines()]
    assert len(rows) == len(sample.labels)
    x, y, w, h = sample.labels[0].box
    assert int(rows[0][0]) == LABELS.index(sample.labels[0].class_name)
    np.testing.assert_allclose([float(v) for v in rows[0][1:]],
                               [(x + w / 2) / 128, (y + h / 2) / 96, w / 128, h / 96], atol=1e-5)
    image = tmp_path / "yolo" / "images" / sample.split / f"{sample.id}.png"
    assert image.resolve() == dataset.media_path(sample).resolve()
    assert "names" in data.read_text() and len(list((tmp_path / "yolo" / "images" / "test").iterdir())) == 2
    assert "path" not in yaml.safe_load(data.read_text())  # its own folder is the root: the folder can move


def test_decode_undoes_the_letterbox_and_suppresses_duplicates():
    image = np.zeros((60, 120, 3), np.uint8)  # wide: padded above and below
    inputs, placement = letterbox(image, 64)
    scale = 64 / 120
    assert inputs.shape == (1, 3, 64, 64) and placement == Placement(scale, scale, 0, 16)
    assert inputs[0, :, 0, 0] == pytest.approx(114 / 255)  # the grey pad
    # one object at x 30-60, y 10-40 in the image, seen by two anchors, plus a faint one
    cx, cy, w, h = 45 * scale, 25 * scale + 16, 30 * scale, 30 * scale
    output = np.zeros((4 + 2, 3), np.float32)
    output[:, 0] = [cx, cy, w, h, 0.9, 0.1]
    output[:, 1] = [cx + 0.5, cy, w, h, 0.8, 0.1]
    output[:, 2] = [10, 30, 4, 4, 0.0001, 0.0]
    found = decode(output, placement, 120, 60)
    assert len(found) == 1
    assert (found.class_ids[0], found.scores[0]) == (0, pytest.approx(0.9))
    np.testing.assert_allclose(found.boxes[0], [30, 10, 60, 40], atol=1e-4)


def test_coco_map_is_one_for_the_truth_and_zero_for_nothing(tmp_path):
    dataset, samples = shapes_dataset(tmp_path / "shapes", count=6)
    truth = [Detections(xywh_to_xyxy([l.box for l in s.labels]), np.ones(len(s.labels)),
                        [LABELS.index(l.class_name) for l in s.labels]) for s in samples]
    assert coco_map(dataset, samples, LABELS, truth)["map50"] == pytest.approx(1.0)
    assert coco_map(dataset, samples, LABELS, truth)["map50_95"] == pytest.approx(1.0)
    assert coco_map(dataset, samples, LABELS, [Detections([], [], []) for _ in samples])["map50"] == 0.0


def test_missing_yolo_environment_is_a_clear_error(tmp_path, monkeypatch):
    dataset, samples = shapes_dataset(tmp_path / "shapes", count=10)
    monkeypatch.setenv("EDGEDISTILL_TORCHVISION_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(EdgedistillError, match="make torchvision-extras"):
        train_yolo(dataset, samples, LABELS, DetectorTrainSettings(yolo=True), tmp_path / "out")


@pytest.mark.slow
def test_ultralytics_trains_from_a_model_yaml_and_its_onnx_is_scored_here(tmp_path):
    import onnxruntime

    dataset, samples = shapes_dataset(tmp_path / "shapes")
    settings = DetectorTrainSettings(yolo=True, yolo_epochs=3, yolo_image_size=64, batch_size=8)
    out = tmp_path / "yolo"
    model = train_yolo(dataset, samples, LABELS, settings, out)
    session = onnxruntime.InferenceSession(str(model.onnx))
    assert session.get_inputs()[0].shape == [1, 3, 64, 64]
    assert session.get_outputs()[0].shape[:2] == [1, 4 + len(LABELS)]
    metrics = model.metrics
    test = [s for s in samples if s.split == "test"]
    assert (metrics["images"], metrics["model"]) == (len(test), "yolo11n.yaml")
    # its held-out figures are COCO mAP of its ONNX on the test split, and ultralytics' own from the worker
    found = detect_all(onnx_runner(model.onnx), dataset, test, 64)
    assert {k: metrics[k] for k in ("map50", "map50_95", "images", "boxes")} == coco_map(dataset, test, LABELS, found)
    assert metrics["boxes"] == sum(len(s.labels) for s in test)
    worker = json.loads((out / "result.json").read_text())
    assert metrics["ultralytics"] == {"map50": worker["ultralytics_map50"], "map50_95": worker["ultralytics_map50_95"]}
    # a rerun finds the finished model and does not train again
    stamp = (out / "result.json").stat().st_mtime_ns
    again = train_yolo(dataset, samples, LABELS, settings, out)
    assert again.onnx == model.onnx and (out / "result.json").stat().st_mtime_ns == stamp
    assert again.metrics == metrics

    # the torch.export program is the same model, and quantises to a full-int8 TFLite that Vela
    # puts wholly on the NPU (float islands from unannotated SiLU, add or sigmoid would not be)
    image = np.asarray(load_image(dataset.media_path(samples[-1])))
    inputs = letterbox(image, 64)[0]
    float_output = onnx_runner(model.onnx)(inputs)
    boxes, scores = load_program(model.program)(torch.from_numpy(inputs.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.concatenate([boxes[0], scores[0]]), float_output, atol=1e-3)
    companions = yolo_companions("shapes", model.onnx, model.program, metrics, dataset,
                                 [s for s in samples if s.split == "train"], test, LABELS, 64,
                                 ExportSettings(max_int8_accuracy_drop=1.0), tmp_path / "int8")
    assert [c.role for c in companions] == ["model_yolo_onnx", "model_yolo_int8", "model_yolo_int8_ethos_u"]
    int8 = companions[1]
    assert int8.metrics["vela"]["npu_operator_share"] == 1.0
    int8_model = Int8Yolo(int8.path.read_bytes())
    int8_found = coco_map(dataset, test, LABELS, detect_all(int8_model, dataset, test, 64))
    assert {k: int8.metrics[k] for k in int8_found} == int8_found and int8_found["images"] == len(test)
    int8_output = int8_model(inputs)
    assert int8_output.shape == float_output.shape
    assert np.abs(int8_output[4:] - float_output[4:]).max() < 0.1  # scores keep their own fine scale
    assert np.abs(int8_output[:4] - float_output[:4]).mean() < 2.0  # pixels of a 64 px input
