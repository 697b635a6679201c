"""Labelled real photos: the four label formats read alike, bad sets are refused clearly, and the
centroid-in-box score counts what a device user would count."""

import json

import numpy as np
import pytest
from PIL import Image

from edgedistill.errors import EdgedistillError
from edgedistill.real_photos import (compare_with_teacher, load_photos, match_in_boxes, read_labelled_photos,
                                     score_on_photos)
from shapes import centroids

CLASSES = ["face", "hand"]
# photo name -> (width, height), boxes (x0, y0, x1, y1, class)
TRUTH = {
    "crowd.jpg": ((200, 100), [(10, 10, 50, 60, "face"), (100, 20, 130, 50, "hand"), (150, 70, 153, 73, "face")]),
    "street.png": ((120, 160), [(0, 0, 60, 80, "face")]),
    "empty.jpg": ((64, 48), []),
}


def _photos(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, ((width, height), _) in TRUTH.items():
        Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(folder / name)
    return folder


def _csv(root):
    _photos(root / "images")
    lines = ["file,x0,y0,x1,y1,class"]
    for name, (_, boxes) in TRUTH.items():
        lines += [f"{name},{x0},{y0},{x1},{y1},{c}" for x0, y0, x1, y1, c in boxes] or [f"{name},,,,,"]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _coco(root):
    _photos(root)
    images = [{"id": i, "file_name": name, "width": w, "height": h} for i, (name, ((w, h), _)) in enumerate(TRUTH.items())]
    annotations = [{"id": len(images) * 10 + k, "image_id": i, "category_id": CLASSES.index(c) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0}
                   for i, (_, (_, boxes)) in enumerate(TRUTH.items()) for k, (x0, y0, x1, y1, c) in enumerate(boxes)]
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": categories}))
    return root


def _yolo(root):
    _photos(root / "images" / "val")
    (root / "labels" / "val").mkdir(parents=True)
    (root / "data.yaml").write_text("names:\n  0: face\n  1: hand\n")
    for name, ((w, h), boxes) in TRUTH.items():
        lines = [f"{CLASSES.index(c)} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}"
                 for x0, y0, x1, y1, c in boxes]
        if lines:  # a photo with no object may have no label file at all
            (root / "labels" / "val" / name).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return root


def _label_studio(root):
    _photos(root / "media")
    tasks = []
    for i, (name, ((w, h), boxes)) in enumerate(TRUTH.items()):
        result = [{"type": "rectanglelabels", "original_width": w, "original_height": h, "from_name": "label",
                   "to_name": "image", "value": {"x": x0 / w * 100, "y": y0 / h * 100, "width": (x1 - x0) / w * 100,
                                                 "height": (y1 - y0) / h * 100, "rectanglelabels": [c]}}
                  for x0, y0, x1, y1, c in boxes]
        tasks.append({"id": i, "data": {"image": f"/data/local-files/?d=media/{name}"},
                      "annotations": [{"result": result, "was_cancelled": False}]})
    (root / "export.json").write_text(json.dumps(tasks))
    for name in TRUTH:  # Label Studio exports name the file; it is looked for beside the export
        (root / "media" / name).rename(root / name)
    return root


@pytest.mark.parametrize("write", [_csv, _coco, _yolo, _label_studio])
def test_every_format_reads_the_same_photos(tmp_path, write):
    photos = {p.path.name: p for p in read_labelled_photos(write(tmp_path / "set"), CLASSES, min_share=0.05)}
    assert set(photos) == set(TRUTH)
    crowd = photos["crowd.jpg"]
    assert (crowd.width, crowd.height) == (200, 100)
    np.testing.assert_allclose(crowd.boxes, [[10, 10, 50, 60], [100, 20, 130, 50]], atol=1e-6)
    assert crowd.classes.tolist() == [0, 1]
    np.testing.assert_allclose(crowd.ignore, [[150, 70, 153, 73]], atol=1e-6)  # 3 px of 100: below 5%
    assert len(photos["empty.jpg"].boxes) == 0 and len(photos["empty.jpg"].ignore) == 0
    assert [image.shape for image in load_photos([photos["street.png"]])] == [(160, 120, 3)]


def test_invalid_boxes_are_ignore_regions(tmp_path):
    _photos(tmp_path / "images")
    (tmp_path / "labels.csv").write_text("file,x0,y0,x1,y1,invalid\nstreet.png,0,0,60,80,1\nstreet.png,10,10,50,50,0\n")
    (photo,) = read_labelled_photos(tmp_path, ["face"])
    assert photo.boxes.tolist() == [[10, 10, 50, 50]] and photo.ignore.tolist() == [[0, 0, 60, 80]]


def _with_csv(tmp_path, text):
    _photos(tmp_path / "images")
    (tmp_path / "labels.csv").write_text(text)
    return tmp_path


@pytest.mark.parametrize("text, message", [
    ("file,x0,y0,x1,y1\nmissing.jpg,1,1,5,5\n", "does not exist"),
    ("file,x0,y0,x1,y1\nstreet.png,10,10,200,50\n", "lies outside the 120x160 photo"),
    ("file,x0,y0,x1,y1\nstreet.png,10,10,5,50\n", "has no area"),
    ("file,x0,y0,x1,y1,class\nstreet.png,1,1,5,5,cat\n", "classes the recipe does not have: cat"),
    ("file,x0,y0,x1,y1\nstreet.png,a,b,c,d\n", "not four numbers"),
    ("file,left,top\nstreet.png,1,1\n", "needs the columns file,x0,y0,x1,y1"),
    ("file,x0,y0,x1,y1\n", "lists no labelled photo"),
])
def test_bad_csv_sets_are_refused_with_what_to_do(tmp_path, text, message):
    with pytest.raises(EdgedistillError, match=message):
        read_labelled_photos(_with_csv(tmp_path, text), ["face"])


def test_other_bad_sets_are_refused(tmp_path):
    with pytest.raises(EdgedistillError, match="do not exist"):
        read_labelled_photos(tmp_path / "nowhere", CLASSES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgedistillError, match="holds no labels this tool reads"):
        read_labelled_photos(tmp_path / "empty", CLASSES)
    yolo = _yolo(tmp_path / "yolo")
    (yolo / "labels" / "val" / "street.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(EdgedistillError, match="has class 7, but 2 class name"):
        read_labelled_photos(yolo, CLASSES)
    (yolo / "labels" / "val" / "street.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(EdgedistillError, match="is not `class cx cy w h`"):
        read_labelled_photos(yolo, CLASSES)
    broken = _csv(tmp_path / "broken")
    (broken / "images" / "street.png").write_bytes(b"not a picture")
    with pytest.raises(EdgedistillError, match="is not an image that can be read"):
        read_labelled_photos(broken, CLASSES)
    unclassed = _with_csv(tmp_path / "unclassed", "file,x0,y0,x1,y1\nstreet.png,1,1,5,5\n")
    with pytest.raises(EdgedistillError, match="boxes without a class"):
        read_labelled_photos(unclassed, CLASSES)


def test_exif_rotated_grey_cmyk_and_16_bit_photos(tmp_path):
    """Boxes are in the upright photo; every mode decodes to upright RGB of that size."""
    folder = tmp_path / "images"
    folder.mkdir()
    sideways = Image.fromarray(np.zeros((40, 100, 3), np.uint8))  # stored 100 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view: upright it is 40 wide, 100 high
    sideways.save(folder / "phone.jpg", exif=exif)
    Image.fromarray(np.full((30, 20), 90, np.uint8)).save(folder / "grey.png")
    Image.new("CMYK", (20, 30), (0, 0, 0, 0)).save(folder / "print.jpg")
    Image.fromarray(np.full((30, 20), 40000, np.uint16)).save(folder / "deep.png")
    (tmp_path / "labels.csv").write_text("file,x0,y0,x1,y1\nphone.jpg,5,60,35,95\ngrey.png,1,1,10,10\n"
                                         "print.jpg,1,1,10,10\ndeep.png,1,1,10,10\n")
    photos = {p.path.name: p for p in read_labelled_photos(tmp_path, ["face"])}
    assert (photos["phone.jpg"].width, photos["phone.jpg"].height) == (40, 100)
    shapes = {p.path.name: image.shape for p, image in zip(photos.values(), load_photos(list(photos.values())))}
    assert shapes == {"phone.jpg": (100, 40, 3), "grey.png": (30, 20, 3), "print.jpg": (30, 20, 3),
                      "deep.png": (30, 20, 3)}
    (tmp_path / "labels.csv").write_text("file,x0,y0,x1,y1\nphone.jpg,60,5,95,35\n")  # a box in the stored frame
    with pytest.raises(EdgedistillError, match="outside the 40x100 photo"):
        read_labelled_photos(tmp_path, ["face"])


def test_a_centre_finds_the_box_it_lies_in_once():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    ignore = np.array([[50, 50, 60, 60]], float)
    # one centre in each box, a second centre in the first box (a duplicate), one in the ignore region, one stray
    points = np.array([[5, 5], [25, 4], [6, 6], [55, 55], [40, 40]], float)
    assert match_in_boxes(boxes, ignore, points) == (2, 2, 0)
    assert match_in_boxes(boxes, ignore, points[:1]) == (1, 0, 1)
    assert match_in_boxes(boxes, np.zeros((0, 4)), np.zeros((0, 2))) == (0, 0, 2)
    # a centre inside two overlapping boxes goes to the one it makes a match possible for
    overlapping = np.array([[0, 0, 20, 20], [10, 10, 30, 30]], float)
    assert match_in_boxes(overlapping, np.zeros((0, 4)), np.array([[15, 15], [5, 5]], float)) == (2, 0, 0)


def test_scores_false_alarms_and_the_share_of_the_teacher(tmp_path):
    photos = read_labelled_photos(_csv(tmp_path / "set"), CLASSES, min_share=0.05)
    by_name = {p.path.name: i for i, p in enumerate(photos)}
    student = [centroids() for _ in photos]
    student[by_name["crowd.jpg"]] = centroids((0, 30, 30), (1, 60, 60), (0, 151, 71))  # face right, hand wrong, ignored
    student[by_name["empty.jpg"]] = centroids((0, 10, 10), (0, 40, 20))  # two false alarms on the empty photo
    teacher = [centroids() for _ in photos]
    teacher[by_name["crowd.jpg"]] = centroids((0, 30, 30), (1, 115, 35))
    teacher[by_name["street.png"]] = centroids((0, 30, 40))
    result = compare_with_teacher(photos, student, teacher, CLASSES, 0.05)
    s, t = result["student"], result["teacher"]
    assert (s["tp"], s["fp"], s["fn"]) == (1, 3, 2) and (t["tp"], t["fp"], t["fn"]) == (3, 0, 0)
    assert s["false_alarms_per_empty_photo"] == 2.0 and t["false_alarms_per_empty_photo"] == 0.0
    assert s["per_class"]["hand"]["fp"] == 1 and s["objects"] == 3 and s["ignored_regions"] == 1
    assert result["student_to_teacher_f1"] == pytest.approx(s["f1"] / t["f1"])
    assert score_on_photos(photos, [centroids() for _ in photos], CLASSES)["f1"] == 0.0

