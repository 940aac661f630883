"""A view's anatomy as drawing operations in the patient frame, and the camera that frames it.

Anatomy builders (:mod:`cdss.synth.lumbar`, ...) produce a :class:`Scene`: a list of drawing
operations in millimetres plus the ground-truth shapes. :func:`frame_scene` chooses the
patient-frame → image-pixel map (mirror, zoom, rotation, translation) so that the ground truth
lies inside the image, and :func:`render_scene` rasterises the operations on a :class:`Canvas`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Required, TypedDict, Unpack

import numpy as np

from cdss.synth.raster import Canvas
from cdss.synth.shapes import Affine

__all__ = ["BoneParams", "Op", "Scene", "frame_scene", "render_scene"]


class BoneParams(TypedDict, total=False):
    """Keyword arguments of :meth:`Scene.bone`, as :meth:`Canvas.bone_shape` takes them."""

    density: Required[float]
    cortex: float
    cortex_mm: float
    taper_mm: float
    texture: float
    holes: list[np.ndarray] | None
    axis: tuple[np.ndarray, np.ndarray, float, float] | None


@dataclass
class Op:
    """One drawing operation: ``kind`` is ``bone``, ``soft``, ``dense`` or ``field``."""

    kind: str
    shape: np.ndarray | None = None
    params: dict = field(default_factory=dict)
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # field(x_mm, y_mm) -> attenuation


@dataclass
class Scene:
    """Anatomy of one view in the patient frame (mm)."""

    ops: list[Op] = field(default_factory=list)
    #: points (mm) that must be inside the image (the ground-truth region)
    keep_inside: list[np.ndarray] = field(default_factory=list)
    #: direction (patient frame, radians clockwise from "down") of the long bones' trabeculae
    texture_angle_rad: float = 0.0
    #: points (mm) the radiographer collimates to (defaults to ``keep_inside``)
    field_hint: list[np.ndarray] = field(default_factory=list)

    def bone(self, shape: np.ndarray, **params: Unpack[BoneParams]) -> None:
        self.ops.append(Op("bone", np.asarray(shape, float), dict(params)))

    def soft(self, shape: np.ndarray, value: float, blur_mm: float = 2.0) -> None:
        self.ops.append(Op("soft", np.asarray(shape, float), {"value": value, "blur_mm": blur_mm}))

    def dense(self, shape: np.ndarray, value: float, blur_mm: float = 0.0) -> None:
        self.ops.append(Op("dense", np.asarray(shape, float), {"value": value, "blur_mm": blur_mm}))

    def field(self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self.ops.append(Op("field", fn=fn))


def frame_scene(
    scene: Scene,
    *,
    rows: int,
    columns: int,
    px_per_mm: float,
    rotation_deg: float,
    mirror: bool,
    rng: np.random.Generator,
    margin_frac: float = 0.05,
    centre_jitter: float = 0.5,
) -> tuple[Affine, float]:
    """Choose the patient → image map.

    The ground-truth points are centred on the image (plus a random share ``centre_jitter`` of the
    free space) after rotation by ``rotation_deg`` (clockwise on screen) and mirroring of ``x``.
    If they do not fit with ``margin_frac`` margins the zoom is reduced.

    Returns
    -------
    (to_px, zoom)
        The map, and the factor by which ``px_per_mm`` had to be reduced (1.0 when it fitted).
    """
    pts = np.vstack(scene.keep_inside)
    centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
    base = Affine.translate(-centre[0], -centre[1])
    if mirror:
        base = base.then(Affine.scale(-1.0, 1.0))
    base = base.then(Affine.rotate(np.deg2rad(rotation_deg)))
    q = base(pts)
    ext = q.max(axis=0) - q.min(axis=0)
    avail = np.array([columns, rows], float) * (1 - 2 * margin_frac)
    zoom = float(min(1.0, *(avail / np.maximum(ext * px_per_mm, 1e-6))))
    k = px_per_mm * zoom
    lo, hi = q.min(axis=0) * k, q.max(axis=0) * k
    mid = np.array([columns - 1, rows - 1], float) / 2
    slack_lo = -mid * (1 - 2 * margin_frac) - lo  # how far we may shift negative (<= 0)
    slack_hi = mid * (1 - 2 * margin_frac) - hi
    shift = np.array(
        [rng.uniform(min(slack_lo[i], 0.0), max(slack_hi[i], 0.0)) * centre_jitter for i in range(2)]
    )
    shift = np.clip(shift, np.minimum(slack_lo, 0), np.maximum(slack_hi, 0))
    to_px = base.then(Affine.scale(k)).then(Affine.translate(mid[0] + shift[0], mid[1] + shift[1]))
    return to_px, zoom


def render_scene(scene: Scene, canvas: Canvas) -> None:
    """Rasterise every operation of ``scene`` on ``canvas``."""
    for op in scene.ops:
        if op.kind == "bone":
            assert op.shape is not None
            canvas.bone_shape(op.shape, **op.params)
        elif op.kind == "soft":
            assert op.shape is not None
            canvas.soft_polygon(op.shape, op.params["value"], op.params.get("blur_mm", 2.0))
        elif op.kind == "dense":
            assert op.shape is not None
            canvas.dense_polygon(op.shape, op.params["value"], op.params.get("blur_mm", 0.0))
        elif op.kind == "field":
            assert op.fn is not None
            x, y = canvas.lowres_grid_mm()
            canvas.soft_field(op.fn(x, y))
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown drawing operation {op.kind!r}")
