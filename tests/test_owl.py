"""OWL-ViT / OWLv2 labelling: the ontology mapping on hand-made detections, and the whole path
with tiny random models saved and reloaded like real weights (no OWL weights exist offline)."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgedistill.boxes import Detections
from edgedistill.dataset import Dataset, ImageShape, Label, LabelSource, MediaPolicy, OntologyClass, Provenance, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.images import image_bytes
from edgedistill.recipe import AutoLabelSettings, DetectionClass
from edgedistill.labelling import loaded, run_labeler
from labelers.owl import OwlLabeler, build_prompt_query, detect_batch, load_owl
from tiny_models import save_tiny_owl

ONTOLOGY = {
    "helmet": DetectionClass(prompts=["hard hat", "Safety  Helmet"], negative_prompts=["baseball cap"]),
    "person": DetectionClass(prompts=["person", "worker"], threshold=0.3),
}


@pytest.fixture(scope="module", params=["owlv2", "owlvit"])
def tiny_owl(request, tmp_path_factory) -> str:
    return str(save_tiny_owl(tmp_path_factory.mktemp(request.param), request.param))


def scene(width: int, height: int, seed: int) -> np.ndarray:
    """A real RGB picture: a gradient sky, ground, and a few filled shapes."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), (90, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, height * 2 // 3, width, height], fill=(110, 90, 60))
    for _ in range(3):
        x, y = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse([x, y, x + int(rng.integers(10, 40)), y + int(rng.integers(10, 40))], fill=colour)
    return np.asarray(image)


@pytest.fixture
def photo_dataset(tmp_path) -> tuple[Dataset, list[Sample]]:
    ontology = [OntologyClass(name=n, prompts=c.prompts, negative_prompts=c.negative_prompts, threshold=c.threshold)
                for n, c in ONTOLOGY.items()]
    dataset = Dataset.create(tmp_path / "ds", "site", "detection", ontology, MediaPolicy(image_size=(120, 80)))
    samples = []
    for seed, (width, height) in enumerate([(120, 80), (64, 100), (96, 96), (150, 60), (80, 80)]):
        digest, media = dataset.add_media(image_bytes(scene(width, height, seed), "PNG"), "png")
        samples.append(Sample(id=digest[:16], media=media, kind="image", shape=ImageShape(width=width, height=height),
                              provenance=Provenance(source="test", seed=seed)))
    return dataset, samples


# -- the ontology as a query -------------------------------------------------------------------
def test_every_prompt_maps_back_to_its_class():
    query = build_prompt_query(ONTOLOGY)
    assert query.texts == ["hard hat", "safety helmet", "person", "worker", "baseball cap"]
    assert query.classes == ["helmet", "helmet", "person", "person", None]
    assert query.guarded[-1] == {"helmet"} and not any(query.guarded[:-1])


@pytest.mark.parametrize("ontology, message", [
    ({}, "no classes"),
    ({"a": DetectionClass(prompts=["dog"]), "b": DetectionClass(prompts=["Dog "])}, "maps to two classes"),
    ({"a": DetectionClass(prompts=["dog"]), "b": DetectionClass(prompts=["cat"], negative_prompts=["dog"])},
     "negative prompt"),
    ({"a": DetectionClass(prompts=[])}, "has no prompts"),
])
def test_ambiguous_ontology_is_refused(ontology, message):
    with pytest.raises(EdgedistillError, match=message):
        build_prompt_query(ontology)


# -- thresholds, negatives, NMS on hand-made detections -------------------------------------------
def raw(boxes, scores, queries) -> Detections:
    return Detections(boxes, scores, queries)  # class ids: the query each box matched best


def selector(**settings) -> OwlLabeler:
    """An OWL labeler that knows its query without a model: the selection alone."""
    labeler = OwlLabeler(ONTOLOGY, AutoLabelSettings(**settings))
    labeler.query, labeler.source = build_prompt_query(ONTOLOGY), LabelSource(labeler="owlv2")
    return labeler


def select(detections: Detections, **settings) -> list[tuple[str, float]]:
    return [(label.class_name, label.score) for label in selector(**settings).select_raw(detections, 200, 200)]


def label_with_owl(dataset, samples, settings, work, **options):
    return run_labeler(OwlLabeler(ONTOLOGY, settings), dataset, samples, work, **options).samples


def test_per_class_thresholds():
    boxes = [[0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 120, 120]]
    # person has its own threshold 0.3; helmet falls back to the labeler's 0.2
    assert select(raw(boxes, [0.25, 0.25, 0.35], [0, 2, 3]), threshold=0.2) == [("person", 0.35), ("helmet", 0.25)]


def test_best_match_negative_is_dropped_and_stronger_negative_suppresses_its_class():
    boxes = [[0, 0, 100, 100], [2, 2, 100, 100], [150, 150, 190, 190], [0, 0, 99, 99]]
    # box 1's best prompt is "baseball cap": it is no helmet, and it covers box 0 more confidently
    assert select(raw(boxes[:2], [0.5, 0.6], [0, 4]), threshold=0.1) == []
    # a weaker negative suppresses nothing
    assert select(raw(boxes[:2], [0.7, 0.6], [0, 4]), threshold=0.1) == [("helmet", 0.7)]
    # a negative of helmet does not suppress a person; a far negative does not suppress anything
    assert select(raw([boxes[3], boxes[1]], [0.5, 0.6], [2, 4]), threshold=0.1) == [("person", 0.5)]
    assert select(raw([boxes[2], boxes[1]], [0.5, 0.6], [1, 4]), threshold=0.1) == [("helmet", 0.5)]


def test_class_aware_and_class_agnostic_nms():
    boxes = [[0, 0, 100, 100], [5, 5, 100, 100], [0, 0, 98, 100]]
    detections = raw(boxes, [0.9, 0.8, 0.7], [0, 1, 2])  # two helmet prompts and a person on one object
    assert select(detections, threshold=0.1) == [("helmet", 0.9), ("person", 0.7)]
    assert select(detections, threshold=0.1, class_agnostic_nms=True) == [("helmet", 0.9)]
    assert len(select(detections, threshold=0.1, nms_iou=0.99)) == 3


def test_boxes_are_clipped_to_the_image_and_empty_ones_dropped():
    detections = raw([[-20, -5, 50, 40], [210, 0, 260, 50]], [0.9, 0.8], [0, 0])
    assert [label.box for label in selector().select_raw(detections, 200, 200)] == [(0, 0, 50, 40)]


# -- the real path with tiny models ----------------------------------------------------------------
def test_labels_map_model_outputs_to_classes(tiny_owl, photo_dataset, tmp_path):
    dataset, samples = photo_dataset
    settings = AutoLabelSettings(model=tiny_owl, threshold=0.0, batch_size=2)
    labelled = label_with_owl(dataset, samples, settings, tmp_path / "work")
    worker = loaded(OwlLabeler(ONTOLOGY, settings))
    detector, query = worker.detector, worker.query
    assert [s.id for s in labelled] == [s.id for s in samples]
    assert sum(len(s.labels) for s in labelled) > 0  # at threshold 0, so that the checks below check something
    for sample in labelled:
        picture = np.asarray(Image.open(dataset.media_path(sample)))
        found = detect_batch(detector, [picture], query.texts)[0]
        assert sample.labels == worker.select_raw(found, sample.shape.width, sample.shape.height)
        for label in sample.labels:
            x, y, w, h = label.box
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= sample.shape.width + 0.01 and y + h <= sample.shape.height + 0.01
            match = int(np.argmin(np.abs(found.scores - label.score)))  # the candidate box it came from
            assert abs(found.scores[match] - label.score) < 1e-5
            assert query.classes[found.class_ids[match]] == label.class_name  # the class of its best prompt
            assert label.source == LabelSource(labeler=detector.kind, model=tiny_owl, version=detector.version)
            assert label.class_name != "person" or label.score >= 0.3
        assert sample.review.status == "auto"


def test_batched_equals_one_at_a_time(tiny_owl, photo_dataset, tmp_path):
    dataset, samples = photo_dataset
    one = label_with_owl(dataset, samples, AutoLabelSettings(model=tiny_owl, threshold=0.0, batch_size=1),
                         tmp_path / "one")
    four = label_with_owl(dataset, samples, AutoLabelSettings(model=tiny_owl, threshold=0.0, batch_size=4),
                          tmp_path / "four")
    for a, b in zip(one, four):
        assert [x.class_name for x in a.labels] == [x.class_name for x in b.labels]
        assert np.allclose([x.box for x in a.labels], [x.box for x in b.labels], atol=0.05)
        assert np.allclose([x.score for x in a.labels], [x.score for x in b.labels], atol=1e-4)


def test_rerun_resumes_from_shards_and_keeps_other_labels(tiny_owl, photo_dataset, tmp_path):
    dataset, samples = photo_dataset
    person = Label(class_name="person", box=(1, 1, 5, 5), source=LabelSource(labeler="human"))
    samples = [samples[0].model_copy(update={"labels": [person]}), *samples[1:]]
    settings = AutoLabelSettings(model=tiny_owl, threshold=0.5)
    work = tmp_path / "work"
    first = label_with_owl(dataset, samples, settings, work)
    assert first[0].labels[0] == person
    (shard,) = work.glob("shard-*.jsonl")  # three samples, one shard
    assert sorted(path.name for path in work.glob("shard-*")) == [shard.name.replace(".jsonl", ".failures.json"),
                                                                  shard.name]
    # a rerun reads the finished shard instead of running the model: prove it by marking the shard
    stored = [json.loads(line) for line in shard.read_text().splitlines()]
    stored[1]["labels"] = []
    shard.write_text("".join(json.dumps(item) + "\n" for item in stored))
    again = label_with_owl(dataset, samples, settings, work)
    assert again[1].labels == [] and again[0] == first[0]
    # labelling its own output again replaces its labels instead of doubling them
    twice = label_with_owl(dataset, first, settings, tmp_path / "other")
    assert [len(s.labels) for s in twice] == [len(s.labels) for s in first]


def test_progress_reports_every_shard(tiny_owl, photo_dataset, tmp_path):
    dataset, samples = photo_dataset
    labeler = OwlLabeler(ONTOLOGY, AutoLabelSettings(model=tiny_owl))
    labeler.shard_size = 2  # the 5 images in shards of 2, 2 and 1
    seen = []
    run_labeler(labeler, dataset, samples, tmp_path / "w", progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)]


# -- loading errors -----------------------------------------------------------------------------
def test_a_folder_with_another_model_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(tmp_path)
    with pytest.raises(EdgedistillError, match="'bert' model, not an OWL"):
        load_owl(str(tmp_path))


def test_missing_weights_name_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(EdgedistillError, match="google/owlv2-base-patch16-ensemble is not available") as error:
        load_owl("google/owlv2-base-patch16-ensemble")
    assert "hf download google/owlv2-base-patch16-ensemble" in error.value.hint
    with pytest.raises(EdgedistillError, match="does not exist"):
        load_owl(str(tmp_path / "no" / "such" / "folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgedistillError, match="not available"):
        load_owl(str(tmp_path / "empty"))
