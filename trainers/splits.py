"""Train/val/test splits by voice: no voice in validation or test is ever heard in training."""

from __future__ import annotations

import hashlib

from edgedistill.dataset import Sample, Split


def _rank(group: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_group(samples: list[Sample], val_share: float, test_share: float, seed: int) -> list[Sample]:
    """Give every sample the split of its provenance group (its voice, or its noise source).

    Groups are ordered by a seeded hash, so the same group lands in the same split on every run
    and adding voices does not reshuffle the old ones. Shares count groups, not clips.
    """
    groups = sorted({s.provenance.group or s.id for s in samples}, key=lambda g: _rank(g, seed))
    n_test = max(1, round(len(groups) * test_share)) if len(groups) >= 3 else 0
    n_val = max(1, round(len(groups) * val_share)) if len(groups) >= 3 else 0
    split_of: dict[str, Split] = {}
    for index, group in enumerate(groups):
        split_of[group] = "test" if index < n_test else "val" if index < n_test + n_val else "train"
    return [s.model_copy(update={"split": split_of[s.provenance.group or s.id]}) for s in samples]
