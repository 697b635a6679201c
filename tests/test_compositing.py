"""Compositing and photo ingestion, with the real image code (OpenCV, Pillow, pycocotools)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from edgedistill.dataset import Dataset, MediaPolicy, OntologyClass
from edgedistill.errors import EdgedistillError
from edgedistill.images import load_image
from edgedistill.recipe import DetectionRecipe, parse_recipe
from edgedistill.masks import decode_rle, encode_rle, mask_box
from generators.compositing import (
    CompositeJob, Cutout, Layer, backgrounds_from_photos, compose, composite_images, cutouts_from_labels,
    generated_backgrounds, load_backgrounds, load_cutouts, synthetic_cutouts, visible_labels,
)
from generators.photos import MAX_SIDE, find_photos, ingest_photos, known_photos, photos_fingerprint

SIZE = (160, 120)


def _recipe(**compositing) -> DetectionRecipe:
    settings = {"images": 12, "image_size": list(SIZE), "blending": ["none", "gaussian", "poisson"], **compositing}
    return parse_recipe({"task": "detection", "name": "shapes", "seed": 3,
                         "classes": {"helmet": ["hard hat"], "person": ["person"]}, "compositing": settings})


def _dataset(root: Path | str, recipe: DetectionRecipe) -> Dataset:
    ontology = [OntologyClass(name=name, prompts=spec.prompts) for name, spec in recipe.classes.items()]
    return Dataset.create(root, recipe.name, "detection", ontology, MediaPolicy(image_size=SIZE))


def _inputs(recipe: DetectionRecipe):
    return synthetic_cutouts(recipe.class_names, 3, seed=1), generated_backgrounds(4, (200, 150), seed=1)


def _composites(root: Path, recipe: DetectionRecipe, workers: int = 1):
    cutouts, backgrounds = _inputs(recipe)
    dataset = _dataset(root, recipe)
    return dataset, composite_images(dataset, recipe, cutouts, backgrounds, root / "work", workers=workers)


def test_same_seed_gives_the_same_composites_in_one_or_two_processes(tmp_path):
    recipe = _recipe(images=40)
    _, one = _composites(tmp_path / "a", recipe, workers=1)
    _, two = _composites(tmp_path / "b", recipe, workers=2)
    assert [s.id for s in one] == [s.id for s in two]
    assert [s.labels for s in one] == [s.labels for s in two]
    _, other = _composites(tmp_path / "c", recipe.model_copy(update={"seed": 4}))
    assert not {s.id for s in other} & {s.id for s in one}


def test_workers_composite_into_a_dataset_in_a_bucket_as_they_do_locally(tmp_path, bucket):
    import fsspec

    recipe = _recipe(images=40)
    _, local = _composites(tmp_path / "a", recipe)
    cutouts, backgrounds = _inputs(recipe)
    dataset = _dataset(f"{bucket}/shapes", recipe)
    remote = composite_images(dataset, recipe, cutouts, backgrounds, tmp_path / "work", workers=2)
    assert [(s.id, s.labels) for s in remote] == [(s.id, s.labels) for s in local]
    stored = fsspec.filesystem("s3").find(bucket.removeprefix("s3://") + "/shapes/media")
    assert {s.media for s in remote} <= {path.split("/shapes/", 1)[1] for path in stored}


def test_boxes_are_the_bounding_boxes_of_the_masks(tmp_path):
    dataset, samples = _composites(tmp_path, _recipe(images=24))
    labels = [label for s in samples for label in s.labels]
    assert {label.class_name for label in labels} == {"helmet", "person"}
    for sample in samples:
        # a label for each object pasted, but those hidden by the ones pasted over them
        params = sample.provenance.params
        assert len(sample.labels) == len(params["cutouts"]) - len(params["hidden"])
        image = load_image(dataset.media_path(sample))
        assert image.shape == (SIZE[1], SIZE[0], 3)
        assert sample.provenance.source == "compositing" and sample.provenance.group.startswith("bg:")
        assert sample.provenance.group == f"bg:{sample.provenance.params['background']}"
        for label in sample.labels:
            encoded = {"size": label.mask["size"], "counts": label.mask["counts"].encode()}
            assert tuple(coco_mask.toBbox(encoded)) == label.box
            assert label.box == mask_box(decode_rle(label.mask))
            assert label.score == 1.0 and label.source.labeler == "compositing"


def test_hidden_objects_are_dropped_and_boxes_shrink_to_the_visible_part():
    lower = np.zeros((50, 50), bool)
    lower[10:30, 10:30] = True  # 400 px
    half_cover = np.zeros_like(lower)
    half_cover[10:30, 20:40] = True  # covers half of `lower`
    labels, hidden = visible_labels([Layer("helmet", "a", lower), Layer("person", "b", half_cover)])
    assert hidden == [] and [label.box for label in labels] == [(10.0, 10.0, 10.0, 20.0), (20.0, 10.0, 20.0, 20.0)]
    most_cover = np.zeros_like(lower)
    most_cover[5:35, 5:27] = True  # leaves 3 of 20 columns: 85% hidden
    labels, hidden = visible_labels([Layer("helmet", "a", lower), Layer("person", "b", most_cover)])
    assert hidden == ["a"] and [label.class_name for label in labels] == ["person"]


def test_overlapping_composites_have_disjoint_masks(tmp_path):
    _, samples = _composites(tmp_path, _recipe(images=24, occlusion_probability=1.0, objects_per_image=[3, 5]))
    assert any(s.provenance.params["hidden"] for s in samples), "full occlusion should hide some objects"
    for sample in samples:
        masks = [decode_rle(label.mask) for label in sample.labels]
        assert len(masks) + len(sample.provenance.params["hidden"]) == len(sample.provenance.params["cutouts"])
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                assert not (masks[i] & masks[j]).any()


@pytest.mark.parametrize("blending", ["none", "gaussian", "poisson"])
def test_every_blending_pastes_the_object_and_leaves_the_rest(blending):
    recipe = _recipe(max_rotation=0.0, scale=[0.4, 0.4], distractors_per_image=[0, 0])
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :] = (250, 20, 20, 255)
    cutouts = {"red": Cutout("red", "helmet", rgba, "red")}
    background = np.full((150, 200, 3), (30, 120, 200), np.uint8)
    empty = compose(CompositeJob(0, 7, "bg", (), blending, ""), background, cutouts, recipe.compositing)[0]
    image, labels, hidden = compose(CompositeJob(0, 7, "bg", ("red",), blending, ""), background, cutouts,
                                    recipe.compositing)
    mask = decode_rle(labels[0].mask)
    assert hidden == [] and mask.sum() > 0.9 * 48 * 48  # 40% of the 120 px side, jitter aside
    far = ~cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert np.array_equal(image[far], empty[far])
    inside = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert image[inside][:, 0].mean() > 150 and image[inside][:, 2].mean() < 100  # red, not the blue background
    edge = mask & ~inside
    intermediate = np.abs(image[edge].astype(int) - empty[edge].astype(int)).sum(axis=1)
    if blending == "none":
        assert np.median(intermediate) > 0.9 * intermediate.max()  # a hard paste: edge pixels are the object's
    else:
        assert intermediate.min() < 0.75 * intermediate.max()  # the edge is blended into the background


def test_distractors_paste_scene_patches_in_object_shapes_without_labels():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :] = (250, 20, 20, 255)
    cutouts = {"red": Cutout("red", "helmet", rgba, "red")}
    background = generated_backgrounds(2, (200, 150), seed=1)[1].rgb  # a noise texture
    for seed in range(4):
        # the background crop is drawn first, so a composite without cut-outs is the bare scene
        scene = compose(CompositeJob(0, seed, "bg", (), "none", ""), background, cutouts, _recipe().compositing)[0]
        for distractors, changed in (([0, 0], lambda n: n == 0), ([2, 2], lambda n: n > 1000)):
            settings = _recipe(scale=[0.4, 0.4], distractors_per_image=distractors).compositing
            image, labels, _ = compose(CompositeJob(0, seed, "bg", ("red",), "none", ""), background, cutouts,
                                       settings)
            assert [label.class_name for label in labels] == ["helmet"]  # distractors are not labelled
            outside = ~cv2.dilate(decode_rle(labels[0].mask).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            assert changed(int((image[outside] != scene[outside]).any(axis=1).sum()))


def test_a_deleted_shard_is_made_again_and_the_others_are_kept(tmp_path):
    recipe = _recipe(images=70)  # three shards of 32
    _, first = _composites(tmp_path, recipe)
    shards = tmp_path / "work" / "shards"
    kept = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.jsonl")}
    assert len(kept) == 3
    deleted, *others = sorted(kept)
    (shards / deleted).unlink()
    _, again = _composites(tmp_path, recipe)
    assert [s.id for s in again] == [s.id for s in first]
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.jsonl") if p.name != deleted} == {
        name: kept[name] for name in others}
    assert (shards / deleted).exists()


def test_cutouts_from_labels_recover_the_objects_of_labelled_samples(tmp_path):
    dataset, samples = _composites(tmp_path, _recipe(images=6, objects_per_image=[1, 1], blending=["none"]))
    cutouts = cutouts_from_labels(dataset, samples)
    assert len(cutouts) == len(samples)
    for cutout, sample in zip(cutouts, samples):
        label = sample.labels[0]
        assert cutout.class_name == label.class_name
        assert cutout.rgba.shape[:2] == (int(label.box[3]), int(label.box[2]))
        assert (cutout.rgba[:, :, 3] == 255).sum() == decode_rle(label.mask).sum()


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_load_cutouts_takes_alpha_or_a_mask_and_refuses_neither(tmp_path):
    object_rgb = np.full((30, 20, 3), 200, np.uint8)
    rgba = np.dstack([object_rgb, np.pad(np.full((20, 10), 255, np.uint8), ((5, 5), (5, 5)))])
    _png(tmp_path / "cutouts" / "helmet" / "a.png", rgba)
    _png(tmp_path / "cutouts" / "person" / "b.jpg", object_rgb)
    mask = np.zeros((30, 20), np.uint8)
    mask[2:28, 4:16] = 255
    _png(tmp_path / "cutouts" / "person" / "b.mask.png", mask)
    cutouts = load_cutouts(tmp_path / "cutouts")
    assert [(c.class_name, c.rgba.shape) for c in cutouts] == [("helmet", (20, 10, 4)), ("person", (26, 12, 4))]

    _png(tmp_path / "cutouts" / "person" / "c.jpg", object_rgb)
    with pytest.raises(EdgedistillError, match="no transparency") as error:
        load_cutouts(tmp_path / "cutouts")
    assert "c.mask.png" in error.value.hint
    (tmp_path / "empty" / "helmet").mkdir(parents=True)
    with pytest.raises(EdgedistillError, match="holds no cut-outs"):
        load_cutouts(tmp_path / "empty")


def test_cutouts_of_an_unknown_class_are_refused(tmp_path):
    recipe = _recipe()
    dataset = _dataset(tmp_path, recipe)
    cutouts = synthetic_cutouts(["helmet", "hat"], 1)
    with pytest.raises(EdgedistillError, match="hat"):
        composite_images(dataset, recipe, cutouts, generated_backgrounds(1, SIZE), tmp_path / "work")


def test_generated_backgrounds_are_varied_and_reproducible():
    backgrounds = generated_backgrounds(6, (64, 48), seed=5)
    assert len({b.id for b in backgrounds}) == 6
    assert all(b.rgb.shape == (48, 64, 3) and b.rgb.std() > 1 for b in backgrounds)
    assert [b.id for b in generated_backgrounds(6, (64, 48), seed=5)] == [b.id for b in backgrounds]


def test_load_backgrounds_skips_a_truncated_file(tmp_path, caplog):
    _png(tmp_path / "bg" / "good.png", np.full((40, 50, 3), 90, np.uint8))
    (tmp_path / "bg" / "bad.jpg").write_bytes(_jpeg(np.full((40, 50, 3), 90, np.uint8))[:200])
    with caplog.at_level(logging.WARNING):
        backgrounds = load_backgrounds(tmp_path / "bg")
    assert [b.name for b in backgrounds] == ["good.png"] and "bad.jpg" in caplog.text


def test_rle_round_trip():
    mask = np.zeros((7, 9), bool)
    mask[2:5, 3:8] = True
    assert np.array_equal(decode_rle(encode_rle(mask)), mask)
    assert mask_box(mask) == (3.0, 2.0, 5.0, 3.0)


# -- photos -------------------------------------------------------------------------------------

def _jpeg(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _photo_folder(root: Path) -> Path:
    folder = root / "photos"
    (folder / "site").mkdir(parents=True)
    gradient = np.tile(np.linspace(0, 255, 60, dtype=np.uint8)[None, :, None], (40, 1, 3))
    (folder / "plain.jpg").write_bytes(_jpeg(gradient))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    (folder / "site" / "rotated.jpg").write_bytes(_jpeg(gradient, exif=exif.tobytes()))
    cmyk = io.BytesIO()
    Image.fromarray(gradient[:, ::-1]).convert("CMYK").save(cmyk, format="JPEG")
    (folder / "site" / "cmyk.jpg").write_bytes(cmyk.getvalue())
    deep = Image.fromarray((np.arange(40 * 60).reshape(40, 60) * 20).astype(np.uint16))
    deep.save(folder / "deep.png")
    Image.fromarray(np.zeros((300, 3000, 3), np.uint8) + 100).save(folder / "huge.png")
    (folder / "broken.jpg").write_bytes(_jpeg(gradient)[:150])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_ingest_photos_decodes_upright_and_skips_broken_files(tmp_path, caplog):
    folder = _photo_folder(tmp_path)
    dataset = _dataset(tmp_path / "dataset", _recipe())
    with caplog.at_level(logging.WARNING):
        samples = ingest_photos(dataset, folder, tmp_path / "work").samples
    by_file = {s.provenance.params["file"]: s for s in samples}
    assert sorted(by_file) == ["deep.png", "huge.png", "plain.jpg", "site/cmyk.jpg", "site/rotated.jpg"]
    assert "broken.jpg" in caplog.text and "1 of 6" in caplog.text
    assert (by_file["site/rotated.jpg"].shape.width, by_file["site/rotated.jpg"].shape.height) == (40, 60)
    assert (by_file["huge.png"].shape.width, by_file["huge.png"].shape.height) == (MAX_SIDE, 205)
    assert by_file["huge.png"].provenance.params["downscaled"] is True
    for name, sample in by_file.items():
        assert sample.labels == [] and sample.provenance.source == "photos" and sample.provenance.group == name
        assert sample.media.endswith(".jpg")
        image = load_image(dataset.media_path(sample))
        assert image.shape == (sample.shape.height, sample.shape.width, 3)
    rotated = load_image(dataset.media_path(by_file["site/rotated.jpg"])).astype(int)
    assert rotated[0, 20, 0] < rotated[-1, 20, 0]  # the gradient now runs top to bottom
    assert load_image(dataset.media_path(by_file["deep.png"])).max() > 200  # 16-bit scaled, not clipped


def test_the_photos_fingerprint_follows_the_files_in_a_folder_or_a_bucket(tmp_path, bucket):
    import fsspec

    folder = _photo_folder(tmp_path)
    before = photos_fingerprint(folder)
    (folder / "notes.txt").write_text("not an image either")
    assert photos_fingerprint(folder) == before  # only images count
    (folder / "plain.jpg").write_bytes((folder / "plain.jpg").read_bytes() + b"\0")
    assert photos_fingerprint(folder) != before

    fsspec.filesystem("s3").put(f"{folder}/", f"{bucket[5:]}/photos/", recursive=True)
    in_bucket = find_photos(f"{bucket}/photos")
    assert [(job.relative, job.size) for job in in_bucket] == [(job.relative, job.size) for job in find_photos(folder)]
    assert photos_fingerprint(f"{bucket}/photos") == photos_fingerprint(f"{bucket}/photos/")
    with pytest.raises(EdgedistillError, match="does not exist"):
        find_photos(f"{bucket}/elsewhere")


def test_ingest_photos_reads_only_photos_added_or_changed_since_an_earlier_run(tmp_path):
    folder = _photo_folder(tmp_path)
    dataset = _dataset(tmp_path / "dataset", _recipe())
    first = ingest_photos(dataset, folder, tmp_path / "work1")
    _png(folder / "new.png", np.full((30, 50, 3), 90, np.uint8))
    (folder / "plain.jpg").write_bytes(_jpeg(np.full((20, 70, 3), 30, np.uint8)))  # rewritten
    read = []
    again = ingest_photos(dataset, folder, tmp_path / "work2", lambda done, total: read.append(total),
                          known=known_photos(first.listing, first.samples))
    assert read[-1] == 3  # the new photo, the rewritten one and the broken one; not the other four
    by_file = {s.provenance.params["file"]: s for s in again.samples}
    assert sorted(by_file) == ["deep.png", "huge.png", "new.png", "plain.jpg", "site/cmyk.jpg", "site/rotated.jpg"]
    unchanged = {s.provenance.params["file"]: s for s in first.samples if s.provenance.params["file"] != "plain.jpg"}
    assert all(by_file[name] == sample for name, sample in unchanged.items())
    assert by_file["plain.jpg"].shape.width == 70


def test_ingest_photos_with_nothing_readable_is_an_error(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg")
    dataset = _dataset(tmp_path / "dataset", _recipe())
    with pytest.raises(EdgedistillError, match="none of the 1 images"):
        ingest_photos(dataset, folder, tmp_path / "work")
    with pytest.raises(EdgedistillError, match="does not exist"):
        ingest_photos(dataset, tmp_path / "missing", tmp_path / "work")


def test_the_default_recipe_composites_with_no_input_at_all(tmp_path):
    from generators.compositing import composites_by_split

    recipe = _recipe(images=8)
    dataset = _dataset(tmp_path, recipe)
    samples = composites_by_split(dataset, recipe, [], tmp_path / "work")
    # drawn cut-outs on generated backgrounds, in the split shares (0.65, 0.15, 0.2 of 8)
    assert [s.split for s in samples] == ["train"] * 5 + ["val"] + ["test"] * 2 and all(s.labels for s in samples)
    version = dataset.commit(samples, None, "compositing", {"images": 8})
    assert dataset.samples(version.id) == samples


def test_box_only_labels_are_cut_out_as_an_ellipse_in_the_box(tmp_path):
    dataset, samples = _composites(tmp_path, _recipe(images=2, objects_per_image=[1, 1], blending=["none"]))
    boxed = [s.model_copy(update={"labels": [l.model_copy(update={"mask": None}) for l in s.labels]})
             for s in samples]
    for cutout, sample in zip(cutouts_from_labels(dataset, boxed), boxed):
        x, y, w, h = sample.labels[0].box
        alpha = cutout.rgba[:, :, 3] > 0
        assert abs(alpha.shape[0] - h) <= 2 and abs(alpha.shape[1] - w) <= 2
        # an ellipse covers pi/4 of its box
        assert abs(alpha.mean() - np.pi / 4) < 0.08


def test_photos_with_nothing_labelled_become_backgrounds(tmp_path):
    recipe = _recipe(images=2)
    dataset, labelled = _composites(tmp_path, recipe)
    folder = tmp_path / "photos"
    scenes = {f"scene{i}.png": np.full((90 + i, 120, 3), 40 + 60 * i, np.uint8) for i in range(3)}
    for name, pixels in {**scenes, "icon.png": np.zeros((32, 32, 3), np.uint8)}.items():
        _png(folder / name, pixels)
    photos = ingest_photos(dataset, folder, tmp_path / "ingest", workers=1).samples

    backgrounds = backgrounds_from_photos(dataset, labelled + photos, limit=10)
    assert len(backgrounds) == 3  # not the composites (they have labels), not the icon (too small)
    decoded = {b.rgb.shape: b.rgb for b in backgrounds}
    for pixels in scenes.values():  # photos are stored as JPEG, so close, not equal
        assert np.abs(decoded[pixels.shape].astype(int) - pixels).mean() < 3
    assert len(backgrounds_from_photos(dataset, photos, limit=2, seed=1)) == 2
    assert ({b.id for b in backgrounds_from_photos(dataset, photos, limit=2, seed=1)}
            == {b.id for b in backgrounds_from_photos(dataset, photos, limit=2, seed=1)})
