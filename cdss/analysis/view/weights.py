"""The view classifier's weights file: one ``.pt`` with the network and the settings it needs.

Layout (a plain ``dict`` written with :func:`torch.save`, readable with ``weights_only=True``)::

    {"format": "cdss-view", "format_version": 1,
     "meta": {... :class:`ViewMeta` ...},
     "state": ViewNet state dict}
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cdss.analysis.view.labels import LABELS

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ViewMeta",
    "ViewWeightsError",
    "file_sha256",
    "load_view_weights",
    "save_view_weights",
]

FORMAT = "cdss-view"
FORMAT_VERSION = 1


class ViewWeightsError(ValueError):
    """The file is not usable view-classifier weights; the message says what is wrong."""


@dataclass
class ViewMeta:
    """Settings stored with the weights.

    Attributes
    ----------
    name, version
        Model identity (``ModelInfo``).
    imgsz
        Input side, pixels.
    width
        :class:`~cdss.analysis.view.network.ViewNet` stem width.
    planes
        Input planes (:func:`cdss.analysis.view.preprocess.prepare`).
    labels
        Output order (must equal :data:`~cdss.analysis.view.labels.LABELS`).
    architecture, training_data
        For ``ModelInfo``.
    training
        Free-form record of the recipe and validation figures.
    """

    name: str = "cdss-view"
    version: str = "0"
    imgsz: int = 128
    width: int = 24
    planes: str = "eq-std-mask"
    labels: list[str] = field(default_factory=lambda: [lab.value for lab in LABELS])
    architecture: str = "ViewNet (5-stage CNN)"
    training_data: str = "synthetic radiographs (cdss.synth)"
    training: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViewMeta:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_view_weights(
    path: Path, meta: ViewMeta, state: dict[str, torch.Tensor], *, half: bool = True
) -> str:
    """Write the weights file atomically and return its SHA-256.

    ``half`` stores floating tensors as float16 (half the file; loading casts back to float32).
    """
    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": asdict(meta),
        "state": {
            k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
            for k, v in state.items()
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(blob, buf)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return file_sha256(path)


def load_view_weights(path: Path) -> tuple[ViewMeta, dict[str, torch.Tensor]]:
    """Read and check a weights file (``weights_only=True``: no code is unpickled).

    Raises
    ------
    ViewWeightsError
        Missing file, not a cdss view-classifier file, a newer format, or other labels.
    """
    path = Path(path)
    if not path.is_file():
        raise ViewWeightsError(f"view classifier weights {path} do not exist (cdss never downloads weights)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ViewWeightsError(
            f"{path} is not a cdss view classifier file ({exc.__class__.__name__}: {exc}); "
            "train one with `cdss train view`"
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ViewWeightsError(f"{path} is not a cdss view classifier file (format {FORMAT!r} expected)")
    if int(blob.get("format_version", 0)) > FORMAT_VERSION:
        raise ViewWeightsError(
            f"{path} has format version {blob.get('format_version')}; this cdss reads up to {FORMAT_VERSION}"
        )
    meta = ViewMeta.from_dict(dict(blob.get("meta") or {}))
    if list(meta.labels) != [lab.value for lab in LABELS]:
        raise ViewWeightsError(
            f"{path} predicts {meta.labels}; this cdss expects {[lab.value for lab in LABELS]}"
        )
    state = blob.get("state")
    if not isinstance(state, dict):
        raise ViewWeightsError(f"{path} has no network weights")
    return meta, state
