"""Train/val/test splits by group (no voice, photo or cut-out in validation or test is in training), and
the training samples int8 quantisation calibrates on."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable

from edgedistill.dataset import Dataset, Sample, Split, VersionInfo


def hash_rank(key: str, seed: int) -> float:
    """A key's place in [0, 1), from a seeded hash: the same on every run and machine."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(keys: Iterable[str], val_share: float, test_share: float, seed: int) -> dict[str, Split]:
    """Give each key (a voice, a photo, a cut-out) a split.

    Keys are ordered by a seeded hash, so a key lands in the same split on every run and adding
    keys does not reshuffle the old ones. Shares count keys, not samples; with fewer than three
    keys everything trains.
    """
    ordered = sorted(set(keys), key=lambda k: hash_rank(k, seed))
    n_test = max(1, round(len(ordered) * test_share)) if len(ordered) >= 3 else 0
    n_val = max(1, round(len(ordered) * val_share)) if len(ordered) >= 3 else 0
    return {key: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, key in enumerate(ordered)}


def split_by_group(samples: list[Sample], val_share: float, test_share: float, seed: int,
                   apart: Callable[[Sample], bool] | None = None) -> list[Sample]:
    """Give every sample the split of its provenance group (its voice, its photo, its noise source).

    Groups with a label and groups without are split apart, each by the shares: a few dozen labelled
    photos among thousands of empty ones still reach validation and test, which otherwise could by
    chance hold no object at all (and validate every model as perfect). So are the groups of samples
    `apart` picks (real recordings among synthetic voices), so that they are measured on too.
    """
    group = {s.id: s.provenance.group or s.id for s in samples}
    labelled = {group[s.id] for s in samples if s.labels}
    aside = {group[s.id] for s in samples if apart is not None and apart(s)}
    split_of = {}
    for stratum in (labelled - aside, set(group.values()) - labelled - aside, aside):
        split_of.update(assign_splits(stratum, val_share, test_share, seed))
    return [s.model_copy(update={"split": split_of[group[s.id]]}) for s in samples]


def split_version(dataset: Dataset, parent: VersionInfo, val_share: float, test_share: float, seed: int,
                  params: dict[str, Any] | None = None,
                  adding: Callable[[list[Sample]], list[Sample]] = lambda samples: samples,
                  apart: Callable[[Sample], bool] | None = None) -> VersionInfo:
    """The "split" stage of both pipelines: `parent`'s samples (with what `adding` adds) split by group,
    those `apart` picks among themselves. `params`: what else decides the split, for its stage key."""
    key = {"val_share": val_share, "test_share": test_share, "seed": seed} | (params or {})
    return dataset.derive(parent, "split", key,
                          lambda samples, _: split_by_group(adding(samples), val_share, test_share, seed, apart))


def calibration_set(samples: list[Sample], count: int, seed: int) -> list[Sample]:
    """The training samples int8 quantisation calibrates on, chosen alike in every pipeline: `count`
    of them by seeded hash over the whole training split (every class and source has its share, not
    only the first few), in dataset order. Adding samples leaves the old choices in place."""
    train = [s for s in samples if s.split == "train"]
    chosen = {s.id for s in sorted(train, key=lambda s: hash_rank(s.id, seed))[:count]}
    return [s for s in train if s.id in chosen]
