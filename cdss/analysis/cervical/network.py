"""The networks of the cervical analysis: Spatial Transformer Network and ResNet50 classifier.

* :class:`SpatialTransformer` (Jaderberg et al. 2015, seed 004 section 3.4): a small localisation
  CNN looks at a downscaled copy of the crop and predicts the six parameters of an affine map;
  ``F.affine_grid`` / ``F.grid_sample`` resample the full-size crop with it. The last layer is
  initialised to the identity transform. It is trained on its own (supervised on the known
  rotation, see :mod:`cdss.train.cervical`) and then frozen.
* :func:`build_resnet50`: torchvision ResNet50 with **random initialisation** (cdss never
  downloads ImageNet weights), a 1-channel first convolution (the crop is grey) and a single
  output logit (abnormal = foraminal stenosis).
* :class:`StenosisNet`: frozen STN → intensity normalisation → ResNet50 → logit.

Tensors are ``(batch, 1, size, size)`` float32 in [0, 1] (histogram-equalised, canonical
orientation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

__all__ = [
    "BACKBONES",
    "COMPACT_WIDTHS",
    "IDENTITY_THETA",
    "POOLING",
    "SpatialTransformer",
    "StenosisNet",
    "build_classifier",
    "build_compact",
    "build_resnet50",
    "rotation_theta",
    "theta_angle",
]

#: ``affine_grid`` parameters of the identity transform, row-major 2×3.
IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

#: Mean and standard deviation used to normalise histogram-equalised crops (uniform on [0, 1]).
_MEAN, _STD = 0.5, 0.29


def rotation_theta(angle_deg: torch.Tensor, aspect: torch.Tensor | None = None) -> torch.Tensor:
    """``affine_grid`` matrices that undo a clockwise-on-screen rotation of the content.

    A crop whose content was rotated by ``a`` degrees clockwise (rows pointing down) is turned
    upright by sampling output point ``p`` at ``R(a) p``. In the normalised coordinates of a
    crop resampled from a source window ``w`` × ``h`` pixels (``aspect r = h / w``; 1 for a
    square window) that is ``theta = D⁻¹ R(a) D`` with ``D = diag(w, h)``:
    ``[[cos a, -r sin a, 0], [sin a / r, cos a, 0]]``.

    Parameters
    ----------
    angle_deg
        ``(batch,)`` angles in degrees.
    aspect
        ``(batch,)`` window height / width, or ``None`` for square windows.

    Returns
    -------
    torch.Tensor
        ``(batch, 2, 3)``.
    """
    a = angle_deg.to(torch.float32) * (math.pi / 180.0)
    r = torch.ones_like(a) if aspect is None else aspect.to(torch.float32)
    c, s = torch.cos(a), torch.sin(a)
    z = torch.zeros_like(a)
    return torch.stack([torch.stack([c, -s * r, z], dim=-1), torch.stack([s / r, c, z], dim=-1)], dim=-2)


def theta_angle(theta: torch.Tensor, aspect: torch.Tensor | None = None) -> torch.Tensor:
    """Rotation (degrees, clockwise content) that ``theta`` undoes; inverse of :func:`rotation_theta`."""
    r = torch.ones_like(theta[:, 0, 0]) if aspect is None else aspect.to(theta.dtype)
    return torch.rad2deg(torch.atan2(theta[:, 1, 0] * r, theta[:, 0, 0]))


class SpatialTransformer(nn.Module):
    """Affine spatial transformer with a small localisation network.

    Parameters
    ----------
    loc_size
        Side (pixels) of the downscaled copy the localisation network sees.
    """

    def __init__(self, loc_size: int = 96) -> None:
        super().__init__()
        self.loc_size = loc_size

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.localization = nn.Sequential(
            *block(1, 16),
            nn.MaxPool2d(2),
            *block(16, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            nn.MaxPool2d(2),
            *block(64, 64),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.fc_loc = nn.Sequential(nn.Linear(64 * 16, 128), nn.ReLU(inplace=True), nn.Linear(128, 6))
        self.reset_identity()

    def reset_identity(self) -> None:
        """Initialise the regression head to output the identity transform exactly."""
        last = self.fc_loc[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor(IDENTITY_THETA, dtype=torch.float32))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted ``(batch, 2, 3)`` affine parameters for crops ``x`` ``(batch, 1, H, W)``."""
        small = F.interpolate(x, size=(self.loc_size, self.loc_size), mode="area")
        return self.fc_loc(self.localization(small)).view(-1, 2, 3)

    @staticmethod
    def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Resample ``x`` with ``theta`` (bilinear, zeros outside)."""
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.warp(x, self.theta(x))


#: Global pooling choices for :func:`build_resnet50`.
POOLING = ("max", "avg")
#: Classifier backbones: seed 004's ResNet50, the lighter ResNets, and ``compact`` — a five-stage
#: plain CNN that trains from random initialisation within a CPU budget (docs/models/cervical.md).
BACKBONES = ("resnet50", "resnet34", "resnet18", "compact")
#: Channels of the five stages of the ``compact`` backbone.
COMPACT_WIDTHS = (16, 32, 64, 64, 128)


def build_compact(pool: str = "max") -> nn.Module:
    """A compact plain CNN: five 3×3 conv–BatchNorm–ReLU stages, 2×2 max pooling between them.

    Channels :data:`COMPACT_WIDTHS`, global ``pool`` (``max`` or ``avg``) and one linear logit;
    ~0.16 M parameters, ~0.2 GFLOP at 192 px (ResNet50: 23.5 M, ~3 GFLOP). Stenosis is a
    local sign (one foramen's outline), which a small receptive-field stack with global max
    pooling reports directly; from random initialisation it learns the synthetic task in a
    few CPU epochs where ResNet18/50 stayed at chance (docs/models/cervical.md).
    """
    layers: list[nn.Module] = []
    cin = 1
    for k, cout in enumerate(COMPACT_WIDTHS):
        if k:
            layers.append(nn.MaxPool2d(2))
        layers += [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
        cin = cout
    layers += [nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers.append(nn.Linear(cin, 1))
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(*layers)


def build_resnet50(pool: str = "avg") -> nn.Module:
    """ResNet50, random init, 1-channel input, one output logit (seed 004's classifier).

    Parameters
    ----------
    pool
        Global pooling before the classifier: ``avg`` (torchvision's ResNet50) or ``max``.
        Stenosis is an *any of five foramina* finding — a small local sign — and global max
        pooling passes the strongest local response straight to the logit instead of
        averaging it with the ~99 % of normal image. No weights depend on the choice.

    ``zero_init_residual=True`` starts every residual branch at zero (helps training from
    scratch, Goyal et al. 2017).
    """
    return build_classifier("resnet50", pool)


def build_classifier(backbone: str = "resnet50", pool: str = "avg") -> nn.Module:
    """A torchvision ResNet (random init) with a 1-channel input and one output logit.

    Parameters
    ----------
    backbone
        ``resnet50`` (seed 004), ``resnet34`` / ``resnet18`` (fewer operations per image:
        more epochs in the same CPU budget) or ``compact`` (:func:`build_compact`); see
        docs/models/cervical.md for which one ships.
    pool
        ``avg`` or ``max`` global pooling (see :func:`build_resnet50`).
    """
    if pool not in POOLING:
        raise ValueError(f"unknown pooling {pool!r}: one of {POOLING}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}: one of {BACKBONES}")
    if backbone == "compact":
        return build_compact(pool)
    factory = getattr(torchvision.models, backbone)
    model = factory(weights=None, num_classes=1, zero_init_residual=True)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if pool == "max":
        features = int(model.fc.in_features)
        model.avgpool = nn.AdaptiveMaxPool2d(1)  # torchvision's attribute name; a max pool here
        # max-pooled last-stage features are large (the identity paths add up over the blocks);
        # a BatchNorm on the pooled vector keeps the logit's scale — and SGD on it — stable
        model.fc = nn.Sequential(nn.BatchNorm1d(features), nn.Linear(features, 1))
    return model


class StenosisNet(nn.Module):
    """Frozen STN followed by the ResNet50 classifier; ``forward`` returns ``(batch,)`` logits.

    Parameters
    ----------
    stn
        A trained :class:`SpatialTransformer` (or ``None`` to skip the spatial transform).
    classifier
        The ResNet50 from :func:`build_resnet50`.
    """

    def __init__(self, stn: SpatialTransformer | None, classifier: nn.Module) -> None:
        super().__init__()
        self.stn = stn
        self.classifier = classifier
        if self.stn is not None:
            for p in self.stn.parameters():
                p.requires_grad_(False)
            self.stn.eval()

    def train(self, mode: bool = True) -> StenosisNet:
        super().train(mode)
        if self.stn is not None:
            self.stn.eval()  # frozen: BatchNorm statistics stay fixed too
        return self

    def align(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """STN output and its ``theta`` (identity when there is no STN)."""
        if self.stn is None:
            theta = torch.tensor(IDENTITY_THETA, dtype=x.dtype, device=x.device).view(1, 2, 3)
            return x, theta.expand(x.shape[0], 2, 3)
        with torch.no_grad():
            theta = self.stn.theta(x)
            return SpatialTransformer.warp(x, theta), theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        aligned, _ = self.align(x)
        return self.classifier((aligned - _MEAN) / _STD).squeeze(-1)
