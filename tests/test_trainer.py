import numpy as np
import pytest
import torch

from edgedistill.dataset import Dataset, OntologyClass
from edgedistill.frontend import MfccFrontEnd
from edgedistill.recipe import TrainSettings
from trainers.fitting import CHECKPOINT, fit
from trainers.keyword_spotter import FeatureSet, clip_features, evaluate, train_keyword_spotter
from edgedistill.splits import calibration_set, split_by_group

LABELS = ["low", "high", "_unknown_", "_silence_"]


def _tones(n_per_class: int, seed: int) -> FeatureSet:
    """Clips whose class is audible: a low tone, a high tone, a chirp, or faint noise."""
    rng = np.random.default_rng(seed)
    frontend = MfccFrontEnd()
    t = np.arange(frontend.clip_samples) / frontend.sample_rate
    clips, targets = [], []
    for label in range(len(LABELS)):
        for _ in range(n_per_class):
            base = {0: 300, 1: 2500, 2: 900}.get(label)
            if base is None:
                clip = 0.01 * rng.standard_normal(t.size)
            elif label == 2:
                clip = 0.3 * np.sin(2 * np.pi * (base + 1500 * t) * t)
            else:
                clip = 0.3 * np.sin(2 * np.pi * base * rng.uniform(0.9, 1.1) * t)
            clips.append(clip + 0.01 * rng.standard_normal(t.size))
            targets.append(label)
    return FeatureSet(frontend(np.array(clips, np.float32)), np.array(targets))


def test_training_learns_and_resumes_after_an_interruption(tmp_path):
    train, val = _tones(24, 0), _tones(8, 1)
    settings = TrainSettings(epochs=8, batch_size=16, width=16, patience=8, unknown_weight=1.0)  # balanced toy classes

    def stop_after_three(epoch, total, record):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_keyword_spotter(train, val, LABELS, settings, tmp_path, stop_after_three)
    assert (tmp_path / CHECKPOINT).exists()
    epochs_seen = []
    result = train_keyword_spotter(train, val, LABELS, settings, tmp_path, lambda e, t, r: epochs_seen.append(e))
    assert epochs_seen == [4, 5, 6, 7, 8]  # picked up after the last finished epoch
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    metrics = evaluate(result.model, val, LABELS)
    assert metrics["accuracy"] >= 0.9
    assert metrics["false_accept_rate"]["_silence_"] == 0.0


def test_splits_keep_each_voice_in_one_split(tmp_path, audio_sample_factory):
    dataset = Dataset.create(tmp_path / "ds", "t", "keyword_spotting", [OntologyClass(name="low")])
    samples = [audio_sample_factory(dataset, "low", f"voice{v}", 200 + 10 * v + k) for v in range(10) for k in range(2)]
    split = split_by_group(samples, 0.2, 0.2, seed=0)
    by_group = {}
    for sample in split:
        by_group.setdefault(sample.provenance.group, set()).add(sample.split)
    assert all(len(splits) == 1 for splits in by_group.values())
    assert {s.split for s in split} == {"train", "val", "test"}
    assert split_by_group(samples, 0.2, 0.2, seed=0) == split
    features = clip_features(dataset, split[:3], MfccFrontEnd(), ["low"])
    assert features.features.shape == (3, 49, 10) and list(features.targets) == [0, 0, 0]


def test_a_few_labelled_photos_among_many_empty_ones_reach_every_split():
    from edgedistill.dataset import ImageShape, Label, LabelSource, Provenance, Sample

    face = Label(class_name="face", box=(1, 1, 4, 4), score=0.9, source=LabelSource(labeler="teacher"))
    samples = [Sample(id=f"photo{i}", media=f"m/{i}.png", kind="image", shape=ImageShape(width=8, height=8),
                      provenance=Provenance(source="photos"), labels=[face] if i < 7 else []) for i in range(300)]
    split = split_by_group(samples, 0.15, 0.2, seed=0)
    labelled = [s.split for s in split if s.labels]
    assert labelled.count("val") == 1 and labelled.count("test") == 1 and labelled.count("train") == 5
    empty = [s.split for s in split if not s.labels]
    assert empty.count("val") == round(293 * 0.15) and empty.count("test") == round(293 * 0.2)


def test_the_calibration_set_spreads_over_the_training_split_and_keeps_its_choices():
    from edgedistill.dataset import ImageShape, Label, LabelSource, Provenance, Sample

    def photo(i: int, class_name: str | None, split: str) -> Sample:
        labels = [Label(class_name=class_name, box=(1, 1, 4, 4), source=LabelSource(labeler="human"))] if class_name else []
        return Sample(id=f"photo{i}", media=f"m/{i}.png", kind="image", shape=ImageShape(width=8, height=8),
                      provenance=Provenance(source="photos"), labels=labels, split=split)

    # in dataset order: all the cats first, then the dogs, then empty photos; every tenth is a test photo
    samples = [photo(i, "cat" if i < 100 else "dog" if i < 200 else None, "test" if i % 10 == 0 else "train")
               for i in range(300)]
    chosen = calibration_set(samples, 30, seed=0)
    assert len(chosen) == 30 and all(s.split == "train" for s in chosen)
    assert [samples.index(s) for s in chosen] == sorted(samples.index(s) for s in chosen)
    kinds = {s.labels[0].class_name if s.labels else "empty" for s in chosen}
    assert kinds == {"cat", "dog", "empty"}  # not the first thirty, which are all cats
    assert calibration_set(samples, 30, seed=0) == chosen and calibration_set(samples, 30, seed=1) != chosen
    assert calibration_set(samples, 1000, seed=0) == [s for s in samples if s.split == "train"]
    # new photos take some places, and every old photo still chosen was chosen before
    more = samples + [photo(i, "dog", "train") for i in range(300, 400)]
    again = calibration_set(more, 30, seed=0)
    assert {s.id for s in again if int(s.id[5:]) < 300} <= {s.id for s in chosen}


def test_a_checkpoint_of_another_model_is_not_resumed_but_trained_over(tmp_path, caplog):
    """A checkpoint whose layers the model lacks (saved before the model's code changed) starts training over."""
    def fit_for(model: torch.nn.Module, epochs: int) -> list[int]:
        optimizer = torch.optim.SGD(model.parameters(), 0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        seen = []
        fit(model, optimizer, schedule, np.random.default_rng(0), epochs=epochs, patience=epochs,
            checkpoint_dir=tmp_path, train_epoch=lambda rng: 0.0, validate=lambda: (0.0, {}),
            progress=lambda epoch, total, record: seen.append(epoch))
        return seen

    assert fit_for(torch.nn.Linear(2, 2), 2) == [1, 2]
    assert fit_for(torch.nn.Linear(2, 2), 3) == [3]  # the same model resumes
    assert fit_for(torch.nn.Sequential(torch.nn.Linear(2, 2)), 3) == [1, 2, 3]
    assert "training starts over" in caplog.text
