"""DS-CNN: the MLPerf Tiny keyword-spotting reference architecture (Zhang et al., "Hello Edge").

A 10x4 strided convolution, four depthwise-separable blocks, global average pooling and one
linear layer. Every op maps onto TFLite Micro's int8 kernels and onto the Ethos-U NPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _separable_block(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    )


class DSCNN(nn.Module):
    """Input: MFCC features (batch, frames, coefficients). Output: class logits."""

    def __init__(self, num_classes: int, width: int = 64, blocks: int = 4, dropout: float = 0.2) -> None:
        super().__init__()
        # Per-coefficient standardisation, set from the training features (`set_normalisation`).
        # MFCC c0 spans ~100 units and the rest ~10: without this the first layer sees mostly c0.
        # Written as a multiply-add: litert-torch's int8 quantiser handles that but not a subtract.
        self.register_buffer("feature_scale", torch.ones(1))
        self.register_buffer("feature_shift", torch.zeros(1))
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, (10, 4), stride=(2, 2), padding=(5, 1), bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.blocks = nn.Sequential(*[_separable_block(width) for _ in range(blocks)])
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_classes)

    def set_normalisation(self, features: torch.Tensor) -> None:
        """features: (n, frames, coefficients) training features."""
        self.feature_scale = 1.0 / (features.std(dim=(0, 1)) + 1e-3)
        self.feature_shift = -features.mean(dim=(0, 1)) * self.feature_scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features * self.feature_scale + self.feature_shift
        x = self.stem(x.unsqueeze(1))
        x = self.blocks(x)
        # adaptive pooling (not x.mean) stays channels-last in TFLite, so Vela runs it on the NPU
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(self.dropout(x))
