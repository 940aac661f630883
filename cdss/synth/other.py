"""Radiographs of other body parts (chest, hand, knee, pelvis, skull) for "not applicable" routing.

These are coarse anatomical sketches — recognisable shapes, densities and soft tissue, rendered
through the same detector chain — so that routing, the not-applicable path and any body-part
classifier see realistic headers and pixel statistics. They carry no geometric ground truth.
Patient frame: millimetres, ``x`` to the image right, ``y`` down.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from cdss.synth.scene import Scene
from cdss.synth.shapes import ellipse, polyline_offset, rot, smooth_closed

__all__ = ["BodyPart", "OtherView", "build_other"]


class BodyPart(StrEnum):
    CHEST = "chest"
    HAND = "hand"
    KNEE = "knee"
    PELVIS = "pelvis"
    SKULL = "skull"


@dataclass
class OtherView:
    part: BodyPart
    scene: Scene
    side: str | None  # "L"/"R" for paired parts
    view: str  # projection, e.g. "PA", "AP", "LATERAL"
    field_mm: tuple[float, float]  # image height range (mm)
    aspect: tuple[float, float]  # columns / rows


def _long_bone(
    scene: Scene, a: np.ndarray, b: np.ndarray, width: float, density: float, cortex: float
) -> None:
    """A tubular bone from ``a`` to ``b``: dense walls, lucent medulla (projected cylinder)."""
    line = np.array([a, (a + b) / 2, b])
    capsule = smooth_closed(polyline_offset(line, width), 5)  # rounded ends (condyles, heads)
    scene.bone(capsule, density=density, cortex=cortex, cortex_mm=width * 0.18, taper_mm=width * 0.45)


def _chest(rng: np.random.Generator) -> OtherView:
    s = Scene()
    k = rng.normal(1.0, 0.06)
    mu = 0.019
    half_w = 170 * k

    def trunk(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.clip(1 - np.abs(x / half_w) ** 3, 0, 1)
        shoulders = 1 + 0.25 * np.clip((-y - 150 * k) / 40, 0, 1)
        return (mu * 220 * k * r ** (1 / 3) * shoulders).astype(np.float32)

    s.field(trunk)
    for sx in (-1, 1):  # lungs: air replaces tissue
        lung = (
            np.array(
                [
                    [sx * 22, -140],
                    [sx * 55, -175],
                    [sx * 110, -150],
                    [sx * 150, -40],
                    [sx * 158, 100],
                    [sx * 150, 140],
                    [sx * 90, 110],
                    [sx * 30, 100],
                    [sx * 25, 0],
                ]
            )
            * k
        )
        s.soft(smooth_closed(lung, 6), -mu * 170 * k, blur_mm=6.0)
    heart = ellipse((28 * k, 55 * k), (68 * k, 55 * k), -0.35, 40)
    s.soft(heart, mu * 90, blur_mm=5.0)
    for sx in (-1, 1):  # below the diaphragm domes: abdomen
        dome = (
            np.array(
                [
                    [sx * 5, 110],
                    [sx * 80, 95 + 10 * (sx > 0)],
                    [sx * 165, 150],
                    [sx * 165, 260],
                    [sx * 5, 260],
                ]
            )
            * k
        )
        s.soft(smooth_closed(dome, 4), mu * 130, blur_mm=3.0)
    for _ in range(int(rng.integers(0, 4))):  # vessel markings
        c = np.array([rng.choice([-1, 1]) * rng.uniform(40, 110), rng.uniform(-80, 80)]) * k
        s.soft(ellipse(tuple(c), (rng.uniform(3, 8), rng.uniform(3, 8)), 0, 12), mu * 10, blur_mm=2.0)
    s.bone(
        polyline_offset(np.array([[0, -170], [0, 200]]) * k, 28 * k), density=0.12, cortex=0.05, taper_mm=6
    )
    for i in range(10):  # posterior ribs
        y0 = (-140 + 26 * i) * k
        for sx in (-1, 1):
            t = np.linspace(0, 1, 16)
            path = (
                np.stack([sx * (15 + 135 * np.sin(t * 1.6)), y0 - 18 * np.sin(t * 2.8) + 45 * t**2], axis=1)
                * k
            )
            s.bone(polyline_offset(path, 9 * k), density=0.05, cortex=0.12, cortex_mm=1.0, taper_mm=2.5)
    for sx in (-1, 1):
        clav = np.array([[sx * 15, -150], [sx * 80, -160], [sx * 150, -175]]) * k
        s.bone(polyline_offset(clav, 13 * k), density=0.1, cortex=0.15, cortex_mm=1.5, taper_mm=4)
        s.bone(
            ellipse((sx * 175 * k, -150 * k), (26 * k, 28 * k), 0, 30), density=0.2, cortex=0.12, taper_mm=10
        )
    s.keep_inside.append(np.array([[-160, -180], [160, 150]]) * k)
    s.field_hint.append(np.array([[-180, -200], [180, 170]]) * k)
    return OtherView(BodyPart.CHEST, s, None, "PA", (380.0, 430.0), (0.9, 1.05))


def _hand(rng: np.random.Generator, side: str) -> OtherView:
    s = Scene()
    k = rng.normal(1.0, 0.06)
    mir = -1.0 if side == "L" else 1.0  # thumb on the image side matching a PA of that hand
    s.soft(
        smooth_closed(
            np.array(
                [
                    [-45, 40],
                    [-40, -30],
                    [-60, -60],
                    [-70, -100],
                    [-30, -60],
                    [-20, -140],
                    [0, -150],
                    [20, -140],
                    [40, -120],
                    [50, -40],
                    [40, 40],
                    [35, 120],
                    [-35, 120],
                ]
            )
            * np.array([mir * k, k]),
            6,
        ),
        0.019 * 35,
        blur_mm=3,
    )
    # radius and ulna
    _long_bone(s, np.array([mir * -12, 120.0]) * k, np.array([mir * -14, 60.0]) * k, 20 * k, 0.25, 0.3)
    _long_bone(s, np.array([mir * 14, 120.0]) * k, np.array([mir * 13, 64.0]) * k, 14 * k, 0.22, 0.3)
    for i in range(8):  # carpals
        c = np.array([mir * (-20 + 12 * (i % 4)), 42 - 14 * (i // 4)]) * k + rng.normal(0, 1.0, 2)
        s.bone(
            ellipse(tuple(c), (6.5 * k, 5.5 * k), rng.uniform(0, np.pi), 18),
            density=0.18,
            cortex=0.15,
            taper_mm=2,
        )
    rays = [(-38, -0.7, 3), (-18, -0.1, 4), (-2, 0.0, 4), (14, 0.08, 4), (28, 0.2, 4)]
    for x0, ang, nseg in rays:
        base = np.array([mir * x0, 22.0]) * k
        d = rot(np.array([0.0, -1.0]), mir * ang)
        lengths = [45, 38, 24, 18] if nseg == 4 else [40, 30, 22]
        p = base
        for j, ln in enumerate(lengths[:nseg]):
            q = p + d * ln * k
            _long_bone(s, p + d * 2, q - d * 2, (10 - 1.5 * j) * k, 0.2, 0.28)
            p = q + d * 3 * k
    s.keep_inside.append(np.array([[-70, -150], [60, 120]]) * k)
    s.field_hint.append(np.array([[-80, -160], [70, 130]]) * k)
    return OtherView(BodyPart.HAND, s, side, "PA", (240.0, 300.0), (0.75, 0.85))


def _knee(rng: np.random.Generator, side: str) -> OtherView:
    s = Scene()
    k = rng.normal(1.0, 0.06)
    mu = 0.019

    def leg(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        hw = 62 * k + 8 * np.tanh(-y / 60)
        r = np.clip(1 - np.abs(x / hw) ** 2, 0, 1)
        return (mu * 2 * hw * np.sqrt(r)).astype(np.float32)

    s.field(leg)
    femur = (
        np.array(
            [
                [-20, -200],
                [20, -200],
                [24, -60],
                [45, -25],
                [44, -5],
                [8, -2],
                [0, -8],
                [-8, -2],
                [-44, -5],
                [-45, -25],
                [-24, -60],
            ]
        )
        * k
    )
    s.bone(smooth_closed(femur, 4), density=0.3, cortex=0.3, cortex_mm=2.5, taper_mm=12, texture=0.12)
    tibia = np.array([[-40, 6], [40, 6], [42, 22], [22, 60], [18, 200], [-18, 200], [-22, 60], [-42, 22]]) * k
    s.bone(smooth_closed(tibia, 4), density=0.3, cortex=0.3, cortex_mm=2.5, taper_mm=12, texture=0.12)
    fib_x = 38 if side == "R" else -38
    _long_bone(s, np.array([fib_x, 30.0]) * k, np.array([fib_x * 0.9, 200.0]) * k, 13 * k, 0.15, 0.25)
    s.bone(ellipse((0, -20 * k), (22 * k, 26 * k), 0, 30), density=0.12, cortex=0.1, taper_mm=8)  # patella
    s.keep_inside.append(np.array([[-50, -120], [50, 120]]) * k)
    s.field_hint.append(np.array([[-70, -150], [70, 150]]) * k)
    return OtherView(BodyPart.KNEE, s, side, "AP", (280.0, 340.0), (0.75, 0.85))


def _pelvis(rng: np.random.Generator) -> OtherView:
    s = Scene()
    k = rng.normal(1.0, 0.06)
    mu = 0.019

    def body(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.clip(1 - np.abs(x / (190 * k)) ** 3, 0, 1)
        return (mu * 230 * k * r ** (1 / 3)).astype(np.float32)

    s.field(body)
    for sx in (-1, 1):
        wing = (
            np.array(
                [
                    [sx * 30, -60],
                    [sx * 60, -110],
                    [sx * 120, -120],
                    [sx * 150, -80],
                    [sx * 120, -10],
                    [sx * 95, 30],
                    [sx * 50, 10],
                ]
            )
            * k
        )
        s.bone(smooth_closed(wing, 5), density=0.15, cortex=0.22, cortex_mm=1.5, taper_mm=10, texture=0.12)
        ring = ellipse((sx * 55 * k, 75 * k), (42 * k, 30 * k), 0.2 * sx, 36)
        s.bone(
            ring,
            density=0.12,
            cortex=0.2,
            cortex_mm=2,
            taper_mm=5,
            holes=[ellipse((sx * 55 * k, 75 * k), (24 * k, 15 * k), 0.2 * sx, 30)],
        )
        s.bone(
            ellipse((sx * 100 * k, 35 * k), (25 * k, 25 * k), 0, 36), density=0.28, cortex=0.2, taper_mm=12
        )
        _long_bone(s, np.array([sx * 100, 35.0]) * k, np.array([sx * 135, 150.0]) * k, 34 * k, 0.28, 0.3)
    sac = np.array([[-45, -70], [45, -70], [25, 10], [0, 30], [-25, 10]]) * k
    s.bone(smooth_closed(sac, 4), density=0.22, cortex=0.1, taper_mm=8)
    s.bone(
        polyline_offset(np.array([[-20, -110], [20, -110]]) * k, 26 * k),
        density=0.35,
        cortex=0.15,
        taper_mm=3,
    )
    s.keep_inside.append(np.array([[-150, -120], [150, 120]]) * k)
    s.field_hint.append(np.array([[-180, -140], [180, 150]]) * k)
    return OtherView(BodyPart.PELVIS, s, None, "AP", (320.0, 380.0), (1.1, 1.3))


def _skull(rng: np.random.Generator) -> OtherView:
    s = Scene()
    k = rng.normal(1.0, 0.05)
    lateral = rng.random() < 0.5
    a, b = (95 * k, 80 * k) if lateral else (75 * k, 90 * k)
    outer = ellipse((0, 0), (a, b), 0, 60)
    inner = ellipse((0, 3), (a - 7 * k, b - 7 * k), 0, 60)
    s.soft(ellipse((0, 10), (a + 6, b + 12), 0, 60), 0.019 * 60, blur_mm=4)
    s.bone(outer, density=0.1, cortex=0.5, cortex_mm=3.0, taper_mm=5, texture=0.2, holes=[inner])
    s.bone(inner, density=0.12, cortex=0.0, taper_mm=30, texture=0.1)
    if lateral:
        s.bone(
            ellipse((45 * k, 25 * k), (20 * k, 18 * k), 0, 30), density=-0.05, cortex=0.15, taper_mm=3
        )  # orbit rim
        mand = (
            np.array([[-20, 60], [-5, 110], [40, 125], [80, 110], [75, 100], [40, 110], [5, 95], [-5, 55]])
            * k
        )
        s.bone(smooth_closed(mand, 4), density=0.2, cortex=0.3, taper_mm=3)
    else:
        for sx in (-1, 1):
            s.bone(
                ellipse((sx * 30 * k, 25 * k), (18 * k, 16 * k), 0, 30), density=-0.06, cortex=0.2, taper_mm=3
            )
    s.keep_inside.append(outer)
    s.field_hint.append(outer)
    return OtherView(BodyPart.SKULL, s, None, "LL" if lateral else "PA", (260.0, 320.0), (0.8, 0.95))


def build_other(rng: np.random.Generator, part: BodyPart | None = None) -> OtherView:
    """Build one of the other body parts (random when ``part`` is None)."""
    p = BodyPart(part) if part is not None else BodyPart(rng.choice([b.value for b in BodyPart]))
    side = str(rng.choice(["L", "R"]))
    if p is BodyPart.CHEST:
        return _chest(rng)
    if p is BodyPart.HAND:
        return _hand(rng, side)
    if p is BodyPart.KNEE:
        return _knee(rng, side)
    if p is BodyPart.PELVIS:
        return _pelvis(rng)
    return _skull(rng)
