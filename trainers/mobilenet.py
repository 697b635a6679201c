"""A MobileNetV2 backbone (Sandler et al.) cut at 1/8 resolution, as FOMO uses it.

Inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear project, skip when shapes match)
up to the first stage at stride 8. Every op maps onto TFLite Micro's int8 kernels and Ethos-U.
ReLU6 rather than ReLU: the clipped range quantises to int8 with less error.

A block that halves the resolution average-pools its input first, then runs at stride 1, instead of
MobileNet's stride-2 depthwise conv. TFLite pads a stride-2 3x3 conv on the bottom-right only and
PyTorch on all sides, so the converter adds an explicit PAD before it; that padded copy of the
expanded, full-resolution map was the arena's peak (235.5 KiB at 96x96). Pooled before expansion,
the peak falls to 82.5 KiB at 96x96 and 210.5 KiB at 160x160 (benchmarks/detector_budget.py).
"""

from __future__ import annotations

from torch import nn

# (expansion, output channels at width 1.0, repeats, first stride): MobileNetV2's table up to stride 8,
# but 2 blocks at 32 channels, not 3: litert-torch 0.10 leaves a residual add that feeds another
# residual add in float (DEQUANTIZE/ADD/QUANTIZE), which breaks full int8 and Ethos-U offload.
STAGES_TO_STRIDE_8 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2))
STEM_CHANNELS = 32


def scaled_channels(channels: int, width: float, divisor: int = 8) -> int:
    """MobileNet's `_make_divisible`: scale by the width multiplier, round to a multiple of 8, lose <10%."""
    scaled = max(divisor, int(channels * width + divisor / 2) // divisor * divisor)
    return scaled + divisor if scaled < 0.9 * channels * width else scaled


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
             activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups,
                                         bias=False), nn.BatchNorm2d(out_channels)]
    if activation:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = [nn.AvgPool2d(stride)] if stride > 1 else []
        if expansion > 1:
            layers.append(_conv_bn(in_channels, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, groups=hidden), _conv_bn(hidden, out_channels, 1, activation=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2Stride8(nn.Module):
    """(batch, channels, H, W) -> (batch, out_channels, H/8, W/8)."""

    def __init__(self, in_channels: int = 3, width: float = 0.35) -> None:
        super().__init__()
        channels = scaled_channels(STEM_CHANNELS, width)
        layers: list[nn.Module] = [_conv_bn(in_channels, channels, 3, stride=2)]
        for expansion, base, repeats, stride in STAGES_TO_STRIDE_8:
            out_channels = scaled_channels(base, width)
            for repeat in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, stride if repeat == 0 else 1, expansion))
                channels = out_channels
        self.features = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x):
        return self.features(x)
