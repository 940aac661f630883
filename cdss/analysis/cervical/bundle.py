"""The cervical weights file: one ``.pt`` holding every trained part and its settings.

Layout (a plain ``dict`` written with :func:`torch.save`, readable with ``weights_only=True``)::

    {"format": "cdss-cervical", "format_version": 1,
     "meta": {... see :class:`BundleMeta` ...},
     "stn": STN state dict (float32, small),
     "classifier": ResNet50 state dict (float16 floating tensors),
     "roi_detector": bytes of the Ultralytics detection .pt, or None}

One file means one SHA-256 identifies the whole model (``ModelInfo.weights_sha256`` and the
DICOM Device UID change whenever any part changes), and ``models.cervical_weights`` is a single
path like the lumbar one.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "BundleError",
    "BundleMeta",
    "file_sha256",
    "load_bundle",
    "save_bundle",
]

FORMAT = "cdss-cervical"
FORMAT_VERSION = 1


class BundleError(ValueError):
    """The file is not a usable cervical weights bundle; the message says what is wrong."""


@dataclass
class BundleMeta:
    """Settings stored with the weights (everything inference needs to reproduce training).

    Attributes
    ----------
    name, version
        Model identity (``ModelInfo``).
    imgsz
        Classifier input side, pixels.
    margin
        ROI margin on each side, fraction of the box width/height.
    crop
        ``stretch`` (ROI + margin resized to the square input, seed 004) or ``pad`` (aspect
        kept, padded to a square).
    backbone
        Classifier network: ``resnet50`` (seed 004), ``resnet34``/``resnet18`` or ``compact``.
    pool
        ResNet global pooling, ``avg`` or ``max`` (see :func:`~cdss.analysis.cervical.network.build_resnet50`).
    canonical
        Laterality every view is flipped into (``"R"``).
    operating_point
        Probability threshold for "abnormal", chosen on the validation set.
    operating_point_method
        How it was chosen (e.g. ``"youden"``).
    stn_loc_size
        Side of the STN localisation input; ``0`` = no STN.
    roi_imgsz, roi_input_side
        Ultralytics inference size and the longest side the detector's images are resized to.
    architecture, training_data
        For ``ModelInfo``.
    training
        Free-form record of the recipe and validation figures.
    """

    name: str = "cdss-cervical-stenosis"
    version: str = "0"
    imgsz: int = 256
    margin: float = 0.08
    crop: str = "pad"
    backbone: str = "resnet50"
    pool: str = "avg"
    canonical: str = "R"
    operating_point: float = 0.5
    operating_point_method: str = "default"
    stn_loc_size: int = 96
    roi_imgsz: int = 320
    roi_input_side: int = 384
    architecture: str = "YOLO11n ROI + STN + ResNet50"
    training_data: str = "synthetic radiographs (cdss.synth)"
    training: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleMeta:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in state.items()
    }


def save_bundle(
    path: Path,
    meta: BundleMeta,
    stn_state: dict[str, torch.Tensor] | None,
    classifier_state: dict[str, torch.Tensor],
    roi_weights: Path | None,
    *,
    half: bool = True,
) -> str:
    """Write the bundle and return its SHA-256.

    Parameters
    ----------
    half
        Store the classifier's floating tensors as float16 (halves the file; inference casts
        back to float32 on CPU).
    """
    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": asdict(meta),
        "stn": {k: v.detach().cpu() for k, v in stn_state.items()} if stn_state is not None else None,
        "classifier": _half(classifier_state)
        if half
        else {k: v.detach().cpu() for k, v in classifier_state.items()},
        "roi_detector": Path(roi_weights).read_bytes() if roi_weights is not None else None,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(blob, buf)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return file_sha256(path)


def load_bundle(path: Path) -> dict[str, Any]:
    """Read and check a bundle (``weights_only=True``: no code is unpickled).

    Raises
    ------
    BundleError
        Missing file, not a cdss cervical bundle, or an unsupported format version.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"cervical weights {path} do not exist (cdss never downloads weights)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleError(
            f"{path} is not a cdss cervical weights file ({exc.__class__.__name__}: {exc}); "
            "train one with `cdss train cervical`"
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise BundleError(f"{path} is not a cdss cervical weights file (format {FORMAT!r} expected)")
    if int(blob.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(
            f"{path} has format version {blob.get('format_version')}; this cdss reads up to {FORMAT_VERSION}"
        )
    if not isinstance(blob.get("classifier"), dict):
        raise BundleError(f"{path} has no classifier weights")
    return blob
