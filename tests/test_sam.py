"""Segment Anything from boxes, with a tiny random SAM saved and loaded like real weights."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgedistill.dataset import Dataset, ImageShape, Label, LabelSource, MediaPolicy, OntologyClass, Provenance, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.images import image_bytes
from edgedistill.masks import decode_rle, encode_rle
from edgedistill.labelling import run_labeler
from labelers.sam import SamLabeler, load_sam
from tiny_models import save_tiny_meta_sam, save_tiny_sam

OWL = LabelSource(labeler="owlv2", model="m", version="1")


def add_masks(dataset, samples, model, work, batch=4):
    return run_labeler(SamLabeler(model, batch), dataset, samples, work).samples


@pytest.fixture(scope="module", params=["transformers", "meta"])
def tiny_sam(request, tmp_path_factory) -> str:
    """A random SAM saved as real weights are: a transformers folder, or a Meta .pth checkpoint
    (run by segment-anything in .venv-torchvision, which `make setup` builds)."""
    if request.param == "meta":
        return str(save_tiny_meta_sam(tmp_path_factory.mktemp("meta-sam") / "sam_tiny.pth"))
    return str(save_tiny_sam(tmp_path_factory.mktemp("sam")))


@pytest.fixture
def boxed(tmp_path) -> tuple[Dataset, list[Sample]]:
    dataset = Dataset.create(tmp_path / "ds", "shapes", "detection", [OntologyClass(name="disc", prompts=["disc"])],
                             MediaPolicy(image_size=(96, 64)))
    samples = []
    for index, (width, height) in enumerate([(96, 64), (50, 90), (70, 70)]):
        image = Image.new("RGB", (width, height), (30, 60, 90))
        ImageDraw.Draw(image).ellipse([5, 5, 40, 40], fill=(240, 200, 20))
        digest, media = dataset.add_media(image_bytes(np.asarray(image), "PNG"), "png")
        labels = [Label(class_name="disc", box=(5, 5, 35, 35), score=0.9, source=OWL),
                  Label(class_name="disc", box=(20.5, 30, 25, 20), score=0.3, source=OWL)][: index + 1]
        samples.append(Sample(id=digest[:16], media=media, kind="image", shape=ImageShape(width=width, height=height),
                              provenance=Provenance(source="test"), labels=labels))
    return dataset, samples


def test_every_box_gets_a_mask_of_its_image_and_boxes_stay(tiny_sam, boxed, tmp_path):
    dataset, samples = boxed
    masked = add_masks(dataset, samples, tiny_sam, tmp_path / "work", batch=2)
    for before, after in zip(samples, masked):
        assert [label.box for label in after.labels] == [label.box for label in before.labels]
        assert [label.score for label in after.labels] == [label.score for label in before.labels]
        for label in after.labels:
            assert label.mask["size"] == [before.shape.height, before.shape.width]
            assert decode_rle(label.mask).shape == (before.shape.height, before.shape.width)
    json.dumps([s.model_dump(mode="json") for s in masked])  # RLE counts are text, so versions serialise


def test_batched_equals_one_at_a_time_and_reruns_resume(tiny_sam, boxed, tmp_path):
    dataset, samples = boxed
    batched = add_masks(dataset, samples, tiny_sam, tmp_path / "a", batch=3)
    single = add_masks(dataset, samples, tiny_sam, tmp_path / "b", batch=1)
    assert [s.labels for s in batched] == [s.labels for s in single]
    shard = next(path for path in (tmp_path / "a").glob("shard-*.jsonl")
                 if json.loads(path.read_text().splitlines()[0])["id"] == samples[0].id)
    stored = [json.loads(line) for line in shard.read_text().splitlines()]
    stored[0]["labels"][0]["mask"] = {"size": [1, 1], "counts": "11"}  # marked: a rerun must read it back
    shard.write_text("".join(json.dumps(item) + "\n" for item in stored))
    assert add_masks(dataset, samples, tiny_sam, tmp_path / "a", batch=3)[0].labels[0].mask["counts"] == "11"


def test_labels_that_have_masks_or_no_box_are_left_alone(tiny_sam, boxed, tmp_path):
    dataset, samples = boxed
    square = np.zeros((64, 96), bool)
    square[10:20, 10:20] = True
    kept = Label(class_name="disc", box=(10, 10, 10, 10), mask=encode_rle(square), source=OWL)
    boxless = Label(class_name="disc", source=OWL)
    sample = samples[0].model_copy(update={"labels": [kept, boxless, samples[0].labels[0]]})
    result = add_masks(dataset, [sample], tiny_sam, tmp_path / "w")[0]
    assert result.labels[0] == kept and result.labels[1] == boxless
    # the box among them gets the mask it gets alone
    assert result.labels[2] == add_masks(dataset, samples[:1], tiny_sam, tmp_path / "alone")[0].labels[0]
    assert np.array_equal(decode_rle(kept.mask), square)
    untouched = sample.model_copy(update={"labels": [kept, boxless]})
    assert add_masks(dataset, [untouched], "no/such-model-needed", tmp_path / "w") == [untouched]


def test_a_model_that_is_not_sam_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(tmp_path)
    with pytest.raises(EdgedistillError, match="not Segment Anything"):
        load_sam(str(tmp_path))
    with pytest.raises(EdgedistillError, match="facebook/sam-vit-base is not available"):
        load_sam("facebook/sam-vit-base")


def test_a_meta_checkpoint_must_exist_and_say_which_model_it_is(tmp_path):
    with pytest.raises(EdgedistillError, match="does not exist"):
        load_sam(str(tmp_path / "sam_vit_b_01ec64.pth"))
    (tmp_path / "my_model.pth").write_bytes(b"")
    with pytest.raises(EdgedistillError, match="cannot tell which Segment Anything model"):
        load_sam(str(tmp_path / "my_model.pth"))
    (tmp_path / "sam_vit_l_0b3195.pth").write_bytes(b"")
    assert load_sam(str(tmp_path / "sam_vit_l_0b3195.pth")).architecture == "vit_l"
