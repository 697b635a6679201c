"""Label formats both ways: COCO, YOLO and Label Studio files written from samples read back to the
same images, boxes, classes and masks; hand-written files of each format imported as an accepted
dataset version, once; the CLI's import and its counts; bad files refused with what to do; and the
detection pipeline's label step adding imported labels to the auto-labels, which training then uses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgedistill.dataset import Dataset, ImageShape, Label, LabelSource, OntologyClass, Provenance, Review, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.formats.coco import coco_dict
from edgedistill.formats.exporter import export_labels
from edgedistill.formats.importer import import_labels
from edgedistill.masks import decode_rle, encode_rle, mask_box
from flows.cli import app

CLASSES = ["cat", "dog"]
DRAWN = LabelSource(labeler="test")
ROOT = Path(__file__).resolve().parents[1]


def _png(path: Path, width: int, height: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)).save(path)
    return path


def _box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> dict:
    mask = np.zeros((height, width), bool)
    x, y, w, h = box
    mask[y:y + h, x:x + w] = True
    return encode_rle(mask)


def _dataset(root: Path) -> tuple[Dataset, list[Sample]]:
    """Three images, one per split: two boxes at fractional pixels (the cat with a mask filling its box),
    one dog box, and none."""
    dataset = Dataset.create(root, "pets", "detection", [OntologyClass(name=name) for name in CLASSES])
    specs = [((64, 48), [("cat", (10.0, 8.0, 20.0, 12.0), True), ("dog", (33.25, 20.5, 17.125, 26.75), False)]),
             ((40, 30), [("dog", (0.5, 1.0, 39.0, 28.75), False)]),
             ((32, 32), [])]
    samples = []
    for seed, (split, ((width, height), labels)) in enumerate(zip(("train", "val", "test"), specs)):
        data = _png(root.parent / "drawn" / f"{seed}.png", width, height, seed).read_bytes()
        digest, media = dataset.add_media(data, "png")
        samples.append(Sample(
            id=digest[:16], media=media, kind="image", split=split, shape=ImageShape(width=width, height=height),
            provenance=Provenance(source="test"),
            labels=[Label(class_name=name, box=box, mask=_box_mask(width, height, [int(v) for v in box]) if masked
                          else None, source=DRAWN) for name, box, masked in labels]))
    dataset.commit(samples, None, "split", {})
    return dataset, samples


# YOLO keeps six decimals of shares of the image: a corner moves by at most 0.75e-6 of the side (64 px here)
@pytest.mark.parametrize("label_format, tolerance_px, keeps_masks", [("coco", 1e-9, True), ("yolo", 64e-6, False),
                                                                      ("labelstudio", 1e-9, True)])
def test_export_then_import_gives_the_same_labels(tmp_path, label_format, tolerance_px, keeps_masks):
    dataset, samples = _dataset(tmp_path / "pets")
    exported = export_labels(label_format, dataset.location, tmp_path / label_format)
    assert exported.path.name == {"coco": "annotations.json", "yolo": "data.yaml", "labelstudio": "tasks.json"}[
        label_format]
    imported = import_labels(label_format, exported.path if label_format != "yolo" else exported.path.parent,
                             tmp_path / "back")
    back = {s.id: s for s in imported.dataset.samples(imported.version.id)}
    assert set(back) == {s.id for s in samples}  # the same image bytes
    assert [c.name for c in imported.dataset.info.ontology] == CLASSES
    for sample in samples:
        got = back[sample.id]
        assert got.shape == sample.shape and got.kind == "image" and got.split is None
        assert [l.class_name for l in got.labels] == [l.class_name for l in sample.labels]
        np.testing.assert_allclose(np.array([l.box for l in got.labels]).reshape(-1, 4),
                                   np.array([l.box for l in sample.labels]).reshape(-1, 4), rtol=0, atol=tolerance_px)
        for mine, theirs in zip(got.labels, sample.labels):
            if keeps_masks and theirs.mask is not None:
                assert (decode_rle(mine.mask) == decode_rle(theirs.mask)).all()
            else:
                assert mine.mask is None
        assert got.review.status == "accepted"
        assert {l.source.labeler for l in got.labels} <= {f"import:{label_format}"}
        assert all(l.score is None for l in got.labels)
    assert sum(len(s.labels) for s in back.values()) == 3


def _coco_file(folder: Path) -> Path:
    """Three photos: a cat (polygon) and a dog; a crowd of cats and a dog reaching past the border; nothing."""
    _png(folder / "images" / "a.png", 60, 40, 1)
    _png(folder / "images" / "b.png", 30, 30, 2)
    _png(folder / "c.png", 20, 10, 3)
    coco = {"images": [{"id": 7, "file_name": "a.png", "width": 60, "height": 40},
                       {"id": 8, "file_name": "b.png", "width": 30, "height": 30},
                       {"id": 9, "file_name": "c.png", "width": 20, "height": 10}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0,
                             "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]]},
                            {"id": 2, "image_id": 7, "category_id": 4, "bbox": [40.5, 20, 10, 12.25], "iscrowd": 0},
                            {"id": 3, "image_id": 8, "category_id": 3, "bbox": [0, 0, 30, 30], "iscrowd": 1},
                            {"id": 4, "image_id": 8, "category_id": 4, "bbox": [-1, 2, 12, 10]}],
            "categories": [{"id": 4, "name": "dog"}, {"id": 3, "name": "cat"}]}
    path = folder / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def _by_file(imported) -> dict[str, Sample]:
    return {s.provenance.params["file"]: s for s in imported.dataset.samples(imported.version.id)}


def test_a_coco_file_comes_in_with_polygons_and_without_its_crowds(tmp_path):
    imported = import_labels("coco", _coco_file(tmp_path / "coco"), tmp_path / "pets")
    assert imported.dataset.info.name == "pets" and imported.dataset.info.task == "detection"
    assert [c.name for c in imported.dataset.info.ontology] == CLASSES  # by category id
    samples = _by_file(imported)
    assert list(samples) == ["images/a.png", "images/b.png", "c.png"]
    a, b, c = samples.values()
    assert [(l.class_name, l.box) for l in a.labels] == [("cat", (10.0, 5.0, 20.0, 10.0)),
                                                         ("dog", (40.5, 20.0, 10.0, 12.25))]
    cat = decode_rle(a.labels[0].mask)  # the polygon's 20 x 10 pixels: columns 10-29, rows 5-14
    assert cat.shape == (40, 60) and cat.sum() == 200 and mask_box(cat) == (10.0, 5.0, 20.0, 10.0)
    assert a.labels[1].mask is None
    assert [(l.class_name, l.box) for l in b.labels] == [("dog", (0.0, 2.0, 11.0, 10.0))]  # cut to the image
    assert c.labels == [] and c.shape == ImageShape(width=20, height=10)
    assert {s.provenance.source for s in samples.values()} == {"import:coco"}
    assert {s.provenance.group for s in samples.values()} == set(samples)
    assert imported.report["crowd_regions_left_out"] == 1 and imported.report["empty_images"] == 1
    assert imported.report["objects"] == {"cat": 1, "dog": 2}
    assert imported.dataset.media_path(a).read_bytes() == (tmp_path / "coco" / "images" / "a.png").read_bytes()


def test_a_yolo_folder_comes_in_with_its_nested_images(tmp_path):
    root = tmp_path / "yolo"
    _png(root / "images" / "x.png", 50, 40, 4)
    _png(root / "images" / "sub" / "y.png", 20, 20, 5)
    _png(root / "images" / "z.png", 16, 16, 6)  # no label file: no object
    (root / "labels" / "sub").mkdir(parents=True)
    (root / "labels" / "x.txt").write_text("1 0.5 0.5 0.2 0.25\n\n0 0.1 0.1 0.2 0.2\n")
    (root / "labels" / "sub" / "y.txt").write_text("0 0.5 0.5 1 1\n")
    (root / "classes.txt").write_text("cat\ndog\n")
    imported = import_labels("yolo", root, tmp_path / "pets")
    samples = _by_file(imported)
    assert list(samples) == ["images/sub/y.png", "images/x.png", "images/z.png"]
    assert [(l.class_name, l.box) for l in samples["images/x.png"].labels] == [("dog", (20.0, 15.0, 10.0, 10.0)),
                                                                               ("cat", (0.0, 0.0, 10.0, 8.0))]
    assert [(l.class_name, l.box) for l in samples["images/sub/y.png"].labels] == [("cat", (0.0, 0.0, 20.0, 20.0))]
    assert samples["images/z.png"].labels == []
    assert [c.name for c in imported.dataset.info.ontology] == CLASSES
    assert {l.source.labeler for s in samples.values() for l in s.labels} == {"import:yolo"}


def test_a_label_studio_export_comes_in_with_each_tasks_newest_finished_annotation(tmp_path):
    root = tmp_path / "ls"
    _png(root / "p.png", 80, 40, 7)
    _png(root / "q.png", 10, 10, 8)
    _png(root / "images" / "r.png", 30, 20, 9)

    def rect(name: str, x: float, y: float, w: float, h: float) -> dict:
        return {"type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": 80,
                "original_height": 40, "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [name]}}

    tasks = [{"id": 1, "data": {"image": "/data/local-files/?d=photos/p.png"},
              "annotations": [{"id": 11, "result": [rect("dog", 10, 20, 50, 25)], "was_cancelled": False},
                              {"id": 12, "result": [rect("cat", 0, 0, 5, 5)], "was_cancelled": True}],
              "predictions": [{"result": [rect("cat", 50, 50, 10, 10)]}]},
             {"id": 2, "data": {"image": "/data/upload/3/ab12-q.png"}},  # nobody annotated it: left out
             {"id": 3, "data": {"image": "/data/upload/3/r.png"},
              "annotations": [{"id": 31, "result": [], "updated_at": "2025-01-02T00:00:00Z"},
                              {"id": 30, "result": [rect("cat", 0, 0, 50, 50)], "updated_at": "2025-01-01T00:00:00Z"}]}]
    (root / "export.json").write_text(json.dumps(tasks))
    imported = import_labels("labelstudio", root, tmp_path / "pets")
    samples = _by_file(imported)
    assert list(samples) == ["p.png", "images/r.png"]
    assert [(l.class_name, l.box) for l in samples["p.png"].labels] == [("dog", (8.0, 8.0, 40.0, 10.0))]
    assert samples["images/r.png"].labels == []  # the newer annotation took the cat away
    assert [c.name for c in imported.dataset.info.ontology] == ["dog"]  # the classes the export uses


def _table(output: str) -> dict[str, str]:
    """The rows of the closing table: first cell -> last cell."""
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines()
            if line.count("│") == 3]
    return {row[0]: row[1] for row in rows}


def test_the_cli_imports_once_and_finds_the_version_again_from_the_file_or_its_folder(tmp_path):
    path = _coco_file(tmp_path / "coco")
    runner = CliRunner()
    first = runner.invoke(app, ["import", "coco", str(path), str(tmp_path / "pets")], env={"COLUMNS": "120"})
    assert first.exit_code == 0, first.output
    assert _table(first.output) == {"images": "3", "images with no object": "1", "boxes: cat": "1",
                                    "boxes: dog": "2", "crowd regions left out": "1", "duplicate images left out": "0"}
    dataset = Dataset.open(tmp_path / "pets")
    (version,) = dataset.info.versions
    assert (version.stage, version.parent) == ("import", None)
    assert {k: v for k, v in version.params.items() if k != "fingerprint"} == {"format": "coco",
                                                                                "source": str(path.resolve())}
    assert len(version.params["fingerprint"]) == 16
    assert version.counts == {"samples": 3, "review:accepted": 3, "class:cat": 1, "class:dog": 1}
    assert f"report: {dataset.location}/{version.report}" in first.output.replace("\n", "")
    assert "imported before" not in first.output

    again = runner.invoke(app, ["import", "coco", str(path.parent), str(tmp_path / "pets")], env={"COLUMNS": "120"})
    assert again.exit_code == 0, again.output
    assert "imported before" in again.output and _table(again.output) == _table(first.output)
    assert Dataset.open(tmp_path / "pets").info.versions == [version]
    assert len(list((tmp_path / "pets" / "versions").iterdir())) == 1


def test_the_cli_exports_a_version_without_its_rejected_samples_into_a_new_folder_only(tmp_path):
    dataset, samples = _dataset(tmp_path / "pets")
    split = dataset.head
    rejected = samples[1].model_copy(update={"review": Review(status="rejected")})
    dataset.commit([samples[0], rejected, samples[2]], split.id, "review", {})
    runner, out = CliRunner(), tmp_path / "yolo"
    result = runner.invoke(app, ["export-labels", "yolo", dataset.location, str(out)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert _table(result.output) == {"images": "2", "images with no object": "1", "boxes: cat": "1",
                                     "boxes: dog": "1", "rejected in review, left out": "1"}
    assert f"written: {out / 'data.yaml'}" in result.output.replace("\n", "")
    train, test = samples[0].id, samples[2].id
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "data.yaml", f"images/test/{test}.png", f"images/train/{train}.png", f"labels/test/{test}.txt",
        f"labels/train/{train}.txt"]
    assert not any(p.is_symlink() for p in out.rglob("*"))  # copies: the export outlives the dataset
    assert (out / "images" / "train" / f"{train}.png").read_bytes() == dataset.media_path(samples[0]).read_bytes()

    # an older version by a prefix of its id, and never into a folder that holds files
    coco = runner.invoke(app, ["export-labels", "coco", dataset.location, str(tmp_path / "coco"), "--version",
                               split.id[:6]], env={"COLUMNS": "160"})
    assert coco.exit_code == 0, coco.output
    assert _table(coco.output)["images"] == "3" and _table(coco.output)["rejected in review, left out"] == "0"
    with pytest.raises(EdgedistillError, match="already exists and is not an empty folder"):
        export_labels("coco", dataset.location, out)

    # an export that fails half way (a media file went missing) leaves no folder; the next one completes
    media = dataset.media_path(samples[2])
    kept = media.read_bytes()
    media.unlink()
    with pytest.raises(EdgedistillError, match="is missing"):
        export_labels("labelstudio", dataset.location, tmp_path / "studio", split.id)
    assert not any("studio" in p.name for p in tmp_path.iterdir())
    media.write_bytes(kept)
    assert export_labels("labelstudio", dataset.location, tmp_path / "studio", split.id).report["images"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if "studio" in p.name) == ["studio"]


def test_a_coco_export_holds_what_coco_dict_makes_of_the_samples_review_kept(tmp_path):
    dataset, samples = _dataset(tmp_path / "pets")
    rejected = samples[1].model_copy(update={"review": Review(status="rejected")})
    dataset.commit([samples[0], rejected, samples[2]], dataset.head.id, "review", {})
    exported = export_labels("coco", dataset.location, tmp_path / "coco")  # written sample by sample
    assert json.loads(exported.path.read_text()) == coco_dict([samples[0], samples[2]], CLASSES)  # with a mask
    assert sorted(p.name for p in (tmp_path / "coco").iterdir()) == ["annotations.json", "images"]


def test_a_keyword_dataset_is_not_exported_as_boxes(tmp_path):
    Dataset.create(tmp_path / "words", "words", "keyword_spotting", [OntologyClass(name="yes")])
    with pytest.raises(EdgedistillError, match="is a keyword_spotting dataset"):
        export_labels("coco", tmp_path / "words", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_copies_of_an_image_count_once_and_a_changed_box_is_a_new_version(tmp_path):
    path = _coco_file(tmp_path / "coco")
    first = import_labels("coco", path, tmp_path / "pets")
    coco = json.loads(path.read_text())
    coco["images"].append({"id": 10, "file_name": "copy.png"})
    (tmp_path / "coco" / "copy.png").write_bytes((tmp_path / "coco" / "images" / "a.png").read_bytes())
    path.write_text(json.dumps(coco))
    second = import_labels("coco", path, tmp_path / "pets")
    assert second.report["duplicate_images_left_out"] == ["copy.png"]
    assert second.found and second.version == first.version  # the copy left out, nothing else changed
    coco["annotations"][1]["bbox"] = [40, 20, 10, 12]
    path.write_text(json.dumps(coco))
    third = import_labels("coco", path, tmp_path / "pets")
    assert not third.found and third.version.params["fingerprint"] != first.version.params["fingerprint"]
    assert third.version.id != first.version.id and len(third.dataset.info.versions) == 2
    assert _by_file(third)["images/a.png"].labels[1].box == (40.0, 20.0, 10.0, 12.0)


@pytest.mark.parametrize("label_format, make, message", [
    ("coco", lambda root: root / "x.json", "does not exist"),
    ("coco", lambda root: _text(root / "x.json", "{not json"), "is not readable JSON"),
    ("coco", lambda root: _text(root / "x.json", "[]"), "is not a COCO file"),
    ("labelstudio", lambda root: _text(root / "x.json", '{"images": []}'), "is not a Label Studio export"),
    ("yolo", lambda root: _png(root / "images" / "a.png", 8, 8, 0).parent.parent, "is not a YOLO folder"),
    ("coco", lambda root: _edit_coco(root, lambda c: c["annotations"][0].pop("bbox")), "has no bbox of four numbers"),
    ("coco", lambda root: _edit_coco(root, lambda c: c["annotations"][0].update(category_id=99)),
     "points to an image or category the file does not list"),
    ("coco", lambda root: _edit_coco(root, lambda c: c["images"][0].update(file_name="gone.png")),
     "names the photo .*gone.png, which does not exist"),
    ("coco", lambda root: _edit_coco(root, lambda c: c["annotations"][0].update(bbox=[50, 5, 20, 10])),
     r"the box \[50.0, 5.0, 70.0, 15.0\] lies outside the 60x40 photo a.png"),
    ("coco", lambda root: _edit_coco(root, lambda c: c.update(images=[], annotations=[])), "lists no labelled image"),
])
def test_a_bad_file_is_refused_and_nothing_is_made(tmp_path, label_format, make, message):
    root = tmp_path / "in"
    root.mkdir()
    with pytest.raises(EdgedistillError, match=message) as error:
        import_labels(label_format, make(root), tmp_path / "pets")
    assert error.value.hint
    assert not (tmp_path / "pets").exists()


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _edit_coco(root: Path, edit) -> Path:
    path = _coco_file(root)
    coco = json.loads(path.read_text())
    edit(coco)
    return _text(path, json.dumps(coco))


def test_an_existing_dataset_must_know_the_classes(tmp_path):
    Dataset.create(tmp_path / "pets", "pets", "detection", [OntologyClass(name="cat")])
    with pytest.raises(EdgedistillError, match="labels classes the dataset pets does not have: dog"):
        import_labels("coco", _coco_file(tmp_path / "coco"), tmp_path / "pets")
    assert Dataset.open(tmp_path / "pets").info.versions == []


def test_the_cli_prints_a_clear_error_for_a_bad_file(tmp_path):
    bad = _text(tmp_path / "bad.json", '{"images": []}')
    result = subprocess.run([sys.executable, "-m", "flows.cli", "import", "coco", str(bad), str(tmp_path / "pets")],
                            cwd=ROOT, capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"}, timeout=300)
    assert result.returncode == 2
    assert f"error: {bad} is not a COCO file: it has no `images` and `annotations`" in result.stderr
    assert "-> export the labels as COCO JSON" in result.stderr
    assert not (tmp_path / "pets").exists()


RECIPE = {"task": "detection", "name": "pets", "classes": {"cat": ["a cat"], "dog": ["a dog"]},
          "autolabel": {"labeler": "none"}, "compositing": {"enabled": False},
          "train": {"epochs": 1, "input_size": 32, "batch_size": 4, "val_share": 0.25, "test_share": 0.25}}


def test_label_adds_the_imports_to_the_auto_labels_and_train_uses_them(tmp_path):
    from edgedistill.recipe import parse_recipe
    from flows import detection
    from flows.runs import RunPaths, newest

    photos = tmp_path / "photos"
    for seed in range(3):
        _png(photos / f"photo{seed}.png", 48, 40, 20 + seed)
    recipe = parse_recipe(RECIPE | {"images": str(photos)})
    paths = RunPaths.of(recipe, tmp_path / "run")
    detection.generate(recipe, paths)
    before = detection.label(recipe, paths)
    assert "imports" not in Dataset.open(paths.dataset).version(before).params

    people = tmp_path / "people"
    coco = {"images": [{"id": i, "file_name": f"p{i}.png"} for i in range(4)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [4, 4, 16, 16]}
                            for i in range(4)],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    for i in range(4):
        _png(people / f"p{i}.png", 40, 32, 30 + i)
    (people / "coco.json").write_text(json.dumps(coco))
    imported = import_labels("coco", people / "coco.json", paths.dataset)
    dataset = Dataset.open(paths.dataset)
    assert dataset.info.ontology[0].prompts == ["a cat"]  # the recipe's dataset, kept as it was

    after = detection.label(recipe, paths)
    dataset = Dataset.open(paths.dataset)
    assert after != before and newest(dataset, "review", "split").id == after
    assert dataset.version(after).params["imports"] == [imported.version.id]
    split = dataset.samples(after)
    sources = dataset.samples(newest(dataset, "sources").id)
    assert [s.id for s in split] == [s.id for s in sources] + [s.id for s in dataset.samples(imported.version.id)]
    assert all(s.split for s in split)
    people_labels = [s for s in split if s.provenance.source == "import:coco"]
    assert len(people_labels) == 4 and {s.review.status for s in people_labels} == {"accepted"}
    assert {s.split for s in people_labels} == {"train", "val", "test"}  # 4 labelled photos: 2 / 1 / 1
    assert detection.label(recipe, paths) == after  # nothing new: the same split

    trained = detection.train(recipe, paths)
    assert trained.version == after  # no composites: the split itself
    assert "f1" in trained.float_metrics
