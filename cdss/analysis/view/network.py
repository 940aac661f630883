"""The view classifier's network: a small five-stage CNN (random init, no pretrained weights).

Input ``(N, 3, S, S)`` float32 (see :mod:`cdss.analysis.view.preprocess`), output ``(N, 5)``
logits in :data:`cdss.analysis.view.labels.LABELS` order. About 0.5 M parameters and
~60 M multiply-adds at S = 128: a few milliseconds per image on one CPU core.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = ["ViewNet"]


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ViewNet(nn.Module):
    """Stem (stride 2) then four stages of (stride-2 conv, conv), global average pool, linear.

    Parameters
    ----------
    in_channels
        Input planes (3: equalised grey, standardised grey, validity mask).
    num_classes
        Output classes (5).
    width
        Channels of the stem; the stages use ``(1.33, 2.67, 5.33, 8) × width``.
    dropout
        Dropout before the linear layer (training only).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 5, width: int = 24, dropout: float = 0.2):
        super().__init__()
        w = width
        chans = [w, w * 4 // 3, w * 8 // 3, w * 16 // 3, w * 8]
        layers: list[nn.Module] = [_conv(in_channels, chans[0], 2)]
        for cin, cout in itertools.pairwise(chans):
            layers += [_conv(cin, cout, 2), _conv(cout, cout, 1)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(chans[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(x))
