"""FOMO: image front end, heat-map decoding, centroid F1, and training on synthetic shapes."""

import dataclasses

import numpy as np
import pytest
import torch

from edgedistill.boxes import Detections
from edgedistill.errors import EdgedistillError
from edgedistill.image_frontend import HeatmapDecoding, ImageFrontEnd, centroid_f1
from edgedistill.recipe import DetectorTrainSettings
from shapes import centroids, shape_labels, synthetic_shapes
from trainers.fomo import (THRESHOLDS, DetectionArrays, FomoNet, evaluate_fomo, heatmap_targets, load_fomo, prepare,
                           save_fomo, train_fomo)

LABELS = ["square", "circle"]


SETTINGS = DetectorTrainSettings(epochs=8, batch_size=16, patience=8, learning_rate=5e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    result = train_fomo(synthetic_shapes(160, 0), synthetic_shapes(40, 1), LABELS, SETTINGS,
                        tmp_path_factory.mktemp("fomo"))
    return result


# -- image front end --------------------------------------------------------------------------------
def test_letterbox_keeps_aspect_and_maps_points_both_ways():
    image = np.zeros((100, 200, 3), np.uint8)
    image[60:64, 150:154] = 255  # a white dot centred at (152, 62) in a 2:1 image
    frontend = ImageFrontEnd(size=96)
    inputs, placement = frontend(image)
    assert inputs.shape == (96, 96, 3) and inputs.dtype == np.float32
    assert placement.ratio_x == placement.ratio_y == pytest.approx(0.48)
    assert (placement.offset_x, placement.offset_y) == (0, 24)  # 200x100 -> 96x48, centred vertically
    assert inputs[:24].max() == 0 and inputs[72:].max() == 0  # padding above and below
    rows, columns = np.nonzero(inputs[..., 0] > 0.2)
    x, y = placement.to_input(np.float64(152), np.float64(62))
    assert abs(columns.mean() + 0.5 - x) < 1 and abs(rows.mean() + 0.5 - y) < 1
    back = placement.to_original(x, y)
    assert back == pytest.approx((152, 62))
    assert ImageFrontEnd.from_spec(frontend.spec()) == frontend


def test_grayscale_and_stretch():
    image = np.zeros((50, 80, 3), np.uint8)
    image[..., 1] = 200
    frontend = ImageFrontEnd(size=32, channels=1, resize="stretch")
    inputs, placement = frontend(image)
    assert inputs.shape == (32, 32, 1)
    assert inputs.max() == pytest.approx(round(0.587 * 200) / 255, abs=0.01)  # BT.601 luma of pure green
    assert (placement.ratio_x, placement.ratio_y) == (32 / 80, 32 / 50)
    with pytest.raises(ValueError):
        ImageFrontEnd(channels=2)


# -- decoding and the metric ------------------------------------------------------------------------
def test_decoding_merges_touching_cells_into_a_weighted_centroid():
    heat = np.zeros((12, 12, 3), np.float32)
    heat[..., 0] = 1.0
    heat[2, 3, :] = (0.2, 0.8, 0.0)  # two touching cells of class 0 (channel 1)
    heat[2, 4, :] = (0.4, 0.6, 0.0)
    heat[8, 8, :] = (0.1, 0.0, 0.9)  # one cell of class 1
    heat[10, 1, :] = (0.6, 0.4, 0.0)  # below threshold
    found = HeatmapDecoding(stride=8, threshold=0.5).decode(heat)
    assert list(found.class_ids) == [1, 0]  # best score first
    assert found.scores == pytest.approx([0.9, 0.8])
    circle_x = 68
    square_x = (3.5 * 8 * 0.8 + 4.5 * 8 * 0.6) / 1.4
    assert found.centres == pytest.approx(np.array([[circle_x, 68], [square_x, 20]]))
    # each box as wide and high as its cells: one cell for the circle, two side by side for the square
    assert found.boxes == pytest.approx(np.array([[64, 64, 72, 72], [square_x - 8, 16, square_x + 8, 24]]))


def test_decoding_maps_to_original_pixels():
    heat = np.zeros((12, 12, 2), np.float32)
    heat[6, 6, 1] = 1.0  # input pixel (52, 52)
    _, placement = ImageFrontEnd(size=96)(np.zeros((100, 200, 3), np.uint8))
    found = HeatmapDecoding().decode(heat, placement)
    assert found.centres == pytest.approx(np.array([[52 / 0.48, (52 - 24) / 0.48]]))
    assert found.boxes == pytest.approx(np.array([[48 / 0.48, (48 - 24) / 0.48, 56 / 0.48, (56 - 24) / 0.48]]))


def test_centroid_f1_matches_one_to_one_within_the_radius_and_class():
    truth = [[(0, 10, 10), (1, 50, 50)], [(0, 30, 30)]]
    predicted = [centroids((0, 12, 11), (0, 9, 9), (0, 50, 50)), centroids()]
    metrics = centroid_f1(truth, predicted, LABELS, radius=5)
    square, circle = metrics["per_class"]["square"], metrics["per_class"]["circle"]
    assert (square["tp"], square["fp"], square["fn"]) == (1, 2, 1)  # a second hit on the same object is an fp
    assert (circle["tp"], circle["fp"], circle["fn"]) == (0, 0, 1)  # right place, wrong class
    assert (metrics["tp"], metrics["fp"], metrics["fn"]) == (1, 2, 2)
    assert metrics["f1"] == pytest.approx(2 * (1 / 3) * (1 / 3) / (2 / 3))
    assert centroid_f1([[]], [centroids()], LABELS, 5)["f1"] == 1.0  # nothing there, nothing found
    assert centroid_f1([[(0, 10, 10)]], [centroids((0, 17, 10))], LABELS, 5)["f1"] == 0.0


def test_targets_mark_the_cell_of_each_centre_with_its_score():
    target = heatmap_targets(np.array([[4.0, 4.0], [95.0, 20.0], [120.0, 5.0]]), np.array([0, 1, 0]),
                             np.array([1.0, 0.6, 1.0]), grid=12, num_classes=2)
    assert target.shape == (12, 12, 3) and np.allclose(target.sum(axis=-1), 1)
    assert target[0, 0].tolist() == [0, 1, 0]
    assert np.allclose(target[2, 11], [0.4, 0, 0.6])  # a doubtful box: its score, the rest background
    assert target[..., 1:].sum() == pytest.approx(1.6)  # the third is outside


# -- training ---------------------------------------------------------------------------------------
def test_fomo_learns_shapes_on_held_out_images(trained):
    from trainers.fomo import evaluate_fomo

    test = prepare(synthetic_shapes(60, 2), trained.frontend)
    metrics = evaluate_fomo(trained.model, test, trained.frontend, trained.decoding, LABELS,
                            SETTINGS.centroid_distance)
    assert metrics["f1"] > 0.8, metrics
    assert all(metrics["per_class"][label]["f1"] > 0.7 for label in LABELS)
    assert trained.val_metrics["f1"] > 0.8 and trained.seconds_per_epoch > 0
    assert len(trained.history) == trained.epochs_run == SETTINGS.epochs


def test_model_shapes_and_size():
    model = FomoNet(2, width=0.35, channels=1)
    logits = model(torch.zeros(2, 96, 96, 1))
    assert logits.shape == (2, 12, 12, 3)
    assert sum(p.numel() for p in model.parameters()) < 30_000


def test_an_interrupted_run_resumes_to_the_same_model(tmp_path):
    train, val = synthetic_shapes(32, 3), synthetic_shapes(8, 4)
    settings = DetectorTrainSettings(epochs=3, batch_size=16, patience=5, grayscale=True, input_size=64)

    def stop_after_first(epoch, total, record):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fomo(train, val, LABELS, settings, tmp_path / "resumed", progress=stop_after_first)
    seen = []
    resumed = train_fomo(train, val, LABELS, settings, tmp_path / "resumed",
                         progress=lambda epoch, total, record: seen.append(epoch))
    straight = train_fomo(train, val, LABELS, settings, tmp_path / "straight")
    assert seen == [2, 3] and resumed.epochs_run == 3 and len(resumed.history) == 3
    assert resumed.frontend.channels == 1
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_save_and_load_round_trip(trained, tmp_path):
    save_fomo(trained, tmp_path / "fomo.pt", LABELS, SETTINGS)
    model, labels, frontend, decoding = load_fomo(tmp_path / "fomo.pt")
    assert labels == LABELS and frontend == trained.frontend and decoding == trained.decoding
    inputs = torch.rand(1, 96, 96, 3)
    with torch.no_grad():
        assert torch.equal(model(inputs), trained.model(inputs))


def test_bad_settings_and_empty_data_are_clear_errors(tmp_path):
    with pytest.raises(EdgedistillError, match="multiple of 8"):
        train_fomo(synthetic_shapes(4, 0), synthetic_shapes(2, 1), LABELS, DetectorTrainSettings(input_size=100),
                   tmp_path)
    with pytest.raises(EdgedistillError, match="no training or no validation"):
        train_fomo(synthetic_shapes(4, 0), DetectionArrays([], []), LABELS, SETTINGS, tmp_path)
    empty = synthetic_shapes(3, 1)
    empty = DetectionArrays(empty.images, [centroids()] * 3)
    with pytest.raises(EdgedistillError, match="validation images hold no labelled object"):
        train_fomo(synthetic_shapes(4, 0), empty, LABELS, SETTINGS, tmp_path)


def test_detection_arrays_load_images_and_boxes_from_a_dataset(tmp_path):
    from edgedistill.dataset import Dataset, ImageShape, Label, LabelSource, MediaPolicy, OntologyClass, Provenance
    from edgedistill.dataset import Sample
    from edgedistill.images import image_bytes
    from trainers.fomo import detection_arrays

    dataset = Dataset.create(tmp_path / "shapes", "shapes", "detection",
                             [OntologyClass(name=label, prompts=[label]) for label in LABELS],
                             MediaPolicy(image_size=(128, 96)))
    data = synthetic_shapes(2, 5)
    samples = []
    for index, (image, objects) in enumerate(zip(data.images, data.objects)):
        digest, media = dataset.add_media(image_bytes(image, "PNG"), "png")
        labels = shape_labels(objects, LABELS, LabelSource(labeler="test"))
        labels.append(Label(class_name="unknown-thing", box=(1, 1, 2, 2), source=LabelSource(labeler="test")))
        labels.append(Label(class_name=LABELS[0], source=LabelSource(labeler="test")))  # no box: not an object
        samples.append(Sample(id=digest[:16], media=media, kind="image", shape=ImageShape(width=128, height=96),
                              provenance=Provenance(source="test", group=str(index)), labels=labels))
    loaded = detection_arrays(dataset, samples, LABELS)
    assert len(loaded) == 2
    for i in range(2):
        assert np.array_equal(loaded.images[i], data.images[i])  # PNG is lossless
        np.testing.assert_allclose(loaded.objects[i].boxes, data.objects[i].boxes)
        # the class outside the labels and the label without a box are left out
        assert np.array_equal(loaded.objects[i].class_ids, data.objects[i].class_ids)
        assert np.array_equal(loaded.objects[i].scores, np.ones(len(data.objects[i])))  # people's labels: certain


def test_the_shipped_score_threshold_is_the_best_one_on_validation(trained):
    val = prepare(synthetic_shapes(40, 1), trained.frontend)

    def f1(threshold: float) -> float:
        decoding = dataclasses.replace(trained.decoding, threshold=threshold)
        return evaluate_fomo(trained.model, val, trained.frontend, decoding, LABELS, SETTINGS.centroid_distance)["f1"]

    assert trained.decoding.threshold == trained.val_metrics["threshold"] in THRESHOLDS
    assert f1(trained.decoding.threshold) == max(f1(threshold) for threshold in THRESHOLDS)
    assert trained.val_metrics["f1"] == f1(trained.decoding.threshold)  # the validation F1 it reports is that one


def test_mosaic_puts_four_images_at_half_size_with_their_centres():
    from trainers.fomo import PreparedSet, _mosaic

    pixels = np.zeros((4, 96, 96, 3), np.uint8)
    centres = []
    for i, (x, y) in enumerate([(20, 20), (70, 30), (40, 80), (88, 8)]):
        pixels[i, y - 4:y + 4, x - 4:x + 4] = 255  # a bright square on each image's one object
        centres.append(np.array([[x, y]], float))
    data = PreparedSet(pixels, centres, [np.array([i % 2]) for i in range(4)], [np.array([0.5 + i / 8]) for i in range(4)])
    made, made_centres, made_classes, made_scores = _mosaic(data, np.random.default_rng(0), 3)
    assert all(np.isin(scores, [0.5, 0.625, 0.75, 0.875]).all() for scores in made_scores)
    assert made.shape == (3, 96, 96, 3)
    for image, points, classes in zip(made, made_centres, made_classes):
        assert len(points) == len(classes) == 4
        quarters = {(int(x // 48), int(y // 48)) for x, y in points}
        assert quarters == {(0, 0), (1, 0), (0, 1), (1, 1)}  # one object in each quarter
        assert all(image[int(y), int(x)].min() > 200 for x, y in points)  # each centre is on its object


def test_hard_negative_mining_weighs_the_students_false_alarms():
    from trainers.fomo import CellLoss

    class_weights = torch.tensor([1.0, 10.0])
    # four cells: an object found, an object missed, a background cell taken for an object, a quiet one
    logits = torch.tensor([[[[-2.0, 2.0], [2.0, -2.0]], [[-1.0, 1.0], [3.0, -3.0]]]])
    classes = torch.tensor([[[1, 1], [0, 0]]])
    targets = torch.nn.functional.one_hot(classes, 2).float()
    plain = CellLoss(class_weights)(logits, targets)
    assert plain == pytest.approx(float(torch.nn.CrossEntropyLoss(weight=class_weights)(logits.reshape(-1, 2),
                                                                                       classes.reshape(-1))))
    mined = CellLoss(class_weights, hard_negative_weight=5.0)
    per_cell = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), classes.reshape(-1), reduction="none")
    expected = (per_cell * torch.tensor([10.0, 10.0, 5.0, 1.0])).sum() / 26.0
    assert mined(logits, targets) == pytest.approx(float(expected))
    assert mined(logits, targets) > plain  # the false alarm's loss is the largest, and it counts more


def test_soft_labels_teach_the_teachers_doubt():
    """A cell whose box scored 0.6 is learnt best at probability 0.6, not 1; a certain box still at 1."""
    from trainers.fomo import CellLoss

    loss = CellLoss(torch.tensor([1.0, 10.0]))
    doubtful = torch.from_numpy(heatmap_targets(np.array([[4.0, 4.0]]), np.array([0]), np.array([0.6]), 1, 1))

    def at(probability: float) -> float:
        logit = np.log(probability / (1 - probability))
        return float(loss(torch.tensor([[[[0.0, logit]]]]), doubtful[None]))

    assert min((0.3, 0.5, 0.6, 0.7, 0.9, 0.99), key=at) == 0.6
    certain = torch.from_numpy(heatmap_targets(np.array([[4.0, 4.0]]), np.array([0]), np.array([1.0]), 1, 1))
    assert float(loss(torch.tensor([[[[0.0, 4.0]]]]), certain[None])) < float(loss(torch.tensor([[[[0.0, 1.0]]]]), certain[None]))



def test_a_student_with_soft_labels_and_mined_negatives_still_learns(tmp_path):
    train = synthetic_shapes(160, 0)
    train = DetectionArrays(train.images, [Detections(o.boxes, np.full(len(o), 0.85), o.class_ids) for o in train.objects])
    settings = SETTINGS.model_copy(update={"soft_labels": True, "hard_negative_weight": 3.0})
    result = train_fomo(train, synthetic_shapes(40, 1), LABELS, settings, tmp_path)
    test = prepare(synthetic_shapes(60, 2), result.frontend)
    assert evaluate_fomo(result.model, test, result.frontend, result.decoding, LABELS,
                         SETTINGS.centroid_distance)["f1"] > 0.8
