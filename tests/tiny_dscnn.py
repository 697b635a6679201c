"""A small DS-CNN fitted in a few seconds, for tests that need a trained keyword model to export."""

import numpy as np
import torch

from trainers.dscnn import DSCNN


def fit_tiny_dscnn(features: np.ndarray, labels: np.ndarray, classes: int, steps: int) -> DSCNN:
    """Width 16, Adam, batches of 32 drawn with a fixed seed; returned in eval mode."""
    torch.manual_seed(0)
    model = DSCNN(classes, width=16)
    model.set_normalisation(torch.from_numpy(features))
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = rng.integers(0, len(features), 32)
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(features[batch])),
                                                 torch.from_numpy(labels[batch]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()
