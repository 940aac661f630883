"""Cervical spine, oblique view (45°): vertebrae C2–C7, neural foramina, distractors.

Patient frame of the oblique projection: millimetres, ``x`` anterior, ``y`` caudal (the image
map mirrors ``x`` for one of the two sides, so a left and a right view are mirror images).

In an oblique view the intervertebral foramina are seen *en face*: dark ovals between the
pedicles of adjacent vertebrae (roof and floor), the vertebral body and uncovertebral joint in
front and the articular pillar behind. Here every level C2-C3 … C6-C7 gets a thin "bridge" of
bone between the two pedicles with the foramen cut out of it, so the oval is outlined by cortex.
Foraminal stenosis narrows the oval: osteophytes grow in from the uncovertebral joint (front)
or the facet (back) and/or the whole oval shrinks with disc height loss. The *narrowing* of a
foramen is ``1 − area / nominal area`` of its oval; an image is ``abnormal`` when any foramen
narrows by at least :data:`NARROWING_THRESHOLD`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdss.synth.scene import Scene
from cdss.synth.shapes import ellipse, polyline_offset, rot, rounded_quad, smooth_closed

__all__ = ["NARROWING_THRESHOLD", "CervicalOblique", "Foramen", "build_oblique"]

#: A foramen narrowed by this fraction of its oval area (or more) makes the image abnormal.
NARROWING_THRESHOLD = 0.30
#: Normal images keep every foramen below this narrowing (natural variation only).
NORMAL_MAX_NARROWING = 0.15

CERVICAL = ("C2", "C3", "C4", "C5", "C6", "C7")
_LEVELS = ("C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7")


@dataclass
class Foramen:
    level: str
    outline: np.ndarray  # (N, 2) mm, the dark opening
    nominal_area: float  # mm², the oval before narrowing
    narrowing: float  # 1 - area / nominal_area
    cause: str  # "none", "uncovertebral", "facet", "both", "height"


@dataclass
class CervicalOblique:
    """The built oblique anatomy (patient frame, mm)."""

    bodies: dict[str, np.ndarray]  # corner quads (superior-anterior, superior-posterior, ...)
    outlines: dict[str, np.ndarray]
    foramina: list[Foramen]
    roi_points: np.ndarray  # points whose bounding box is the ROI
    scene: Scene


def _poly_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _narrow(
    oval: np.ndarray,
    centre: np.ndarray,
    axis_ant: np.ndarray,
    severity: float,
    cause: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """Push the oval's boundary inwards: Gaussian bumps from the front and/or back, or shrink."""
    rel = oval - centre
    ang = np.arctan2(rel[:, 1], rel[:, 0])
    ant_ang = np.arctan2(axis_ant[1], axis_ant[0])
    r = np.hypot(rel[:, 0], rel[:, 1])
    shrink = np.zeros(len(oval))
    bumps = []
    if cause in ("uncovertebral", "both"):
        bumps.append(ant_ang + rng.normal(0, 0.35))
    if cause in ("facet", "both"):
        bumps.append(ant_ang + np.pi + rng.normal(0, 0.35))
    for b in bumps:
        d = np.angle(np.exp(1j * (ang - b)))
        width = rng.uniform(0.5, 0.9)
        shrink = np.maximum(shrink, np.exp(-0.5 * (d / width) ** 2))
    if cause == "height":
        # disc height loss: the oval flattens top-bottom
        up = np.array([-axis_ant[1], axis_ant[0]])
        along = rel @ up
        across = rel @ axis_ant
        return centre + np.outer(across, axis_ant) + np.outer(along * (1 - severity), up)
    # beyond a bump of ~60 % the whole opening closes down as well (severe stenosis)
    overall = 1.0 - max(0.0, severity - 0.6) * 1.2
    return centre + rel * ((1 - min(severity, 0.95) * shrink) * overall)[:, None] * (r > 0)[:, None]


def _narrow_to(
    oval: np.ndarray,
    centre: np.ndarray,
    axis_ant: np.ndarray,
    target: float,
    cause: str,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """Narrow ``oval`` until its area has dropped by ``target`` (bisection on the bump height)."""
    nominal = _poly_area(oval)
    if target <= 0:
        return oval, 0.0
    state = rng.bit_generator.state
    lo, hi = 0.0, 0.98
    shape = oval
    for _ in range(18):
        mid = (lo + hi) / 2
        rng.bit_generator.state = state  # same bump positions at every step
        shape = _narrow(oval, centre, axis_ant, mid, cause, rng)
        got = 1 - _poly_area(shape) / nominal
        if got < target:
            lo = mid
        else:
            hi = mid
    rng.bit_generator.state = state
    shape = _narrow(oval, centre, axis_ant, hi, cause, rng)
    rng.random()  # move on from the shared state
    return shape, 1 - _poly_area(shape) / nominal


def build_oblique(rng: np.random.Generator, *, abnormal: bool, age: float) -> CervicalOblique:
    """Build the cervical oblique anatomy.

    Parameters
    ----------
    rng
        Random generator of the image.
    abnormal
        Whether at least one foramen is narrowed by :data:`NARROWING_THRESHOLD` or more.
    age
        Patient age (degeneration of the other levels).
    """
    scene = Scene()
    k = rng.normal(1.0, 0.05)
    heights = {"C2": 16.0, "C3": 13.5, "C4": 13.5, "C5": 13.0, "C6": 13.5, "C7": 14.5, "T1": 16.0, "T2": 17.0}
    widths = {"C2": 21.0, "C3": 20.0, "C4": 20.5, "C5": 21.5, "C6": 22.5, "C7": 23.5, "T1": 25.0, "T2": 26.0}
    disc = float(rng.uniform(4.0, 6.0)) * k
    order = ["C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2"]
    # column axis: a lordotic arc, apex anterior around C4-C5
    bulge = rng.uniform(4, 16)
    tilt = np.deg2rad(rng.normal(0, 5))
    total = sum(heights[n] * k + disc for n in order)

    def axis(s: float) -> tuple[np.ndarray, float]:
        x = bulge * np.sin(np.pi * s / total) + np.tan(tilt) * s
        dx = bulge * np.pi / total * np.cos(np.pi * s / total) + np.tan(tilt)
        return np.array([x, s]), float(np.arctan(dx))

    bodies: dict[str, np.ndarray] = {}
    outlines: dict[str, np.ndarray] = {}
    frames: dict[str, tuple[np.ndarray, float, float, float]] = {}
    s = 0.0
    degeneration = float(np.clip((age - 35) / 45, 0, 1))
    for n in order:
        h, w = heights[n] * k, widths[n] * k
        centre, theta = axis(s + h / 2)
        ang = -theta  # rotate local (u anterior, v caudal) with the column
        local = np.array([[w / 2, -h / 2], [-w / 2, -h / 2], [-w / 2, h / 2], [w / 2, h / 2]])
        c = rot(local, ang) + centre
        bodies[n] = c
        outlines[n] = rounded_quad(c, radius=2.0 * k, concavity=(0.02, 0.03, 0.04, 0.03))
        frames[n] = (centre, ang, w, h)
        s += h + disc

    def to_patient(n: str, uv: np.ndarray) -> np.ndarray:
        centre, ang, _, _ = frames[n]
        return rot(np.atleast_2d(uv), ang) + centre

    bone = float(np.clip(rng.normal(1.0, 0.1) - 0.2 * degeneration, 0.6, 1.3))
    # --- bodies, C2 dens, C1 anterior arch
    for n in order:
        centre, ang, w, h = frames[n]
        scene.bone(
            outlines[n],
            density=0.3 * bone,
            cortex=0.16,
            cortex_mm=0.6,
            taper_mm=3.0,
            texture=0.08,
            axis=(centre, rot(np.array([1.0, 0.0]), ang), w / 2 * 1.1, 0.55),
        )
    dens = to_patient("C2", np.array([[-3, -8], [-4, -18], [0, -24], [4, -18], [3, -8]]) * k)
    scene.bone(smooth_closed(dens, 4), density=0.25 * bone, cortex=0.12, taper_mm=2.5)
    c1_ant = to_patient("C2", np.array([[14.0, -20.0]]) * k)[0]
    scene.bone(ellipse(tuple(c1_ant), (4.5 * k, 6.0 * k), 0.2, 20), density=0.2, cortex=0.15, taper_mm=2.0)
    c1_post = to_patient("C2", np.array([[-30.0, -20.0]]) * k)[0]
    scene.bone(ellipse(tuple(c1_post), (9 * k, 4.5 * k), 0.1, 20), density=0.16, cortex=0.12, taper_mm=2.0)

    # --- pedicles (end-on ovals), pillars, laminae / spinous processes
    pedicle_c: dict[str, np.ndarray] = {}
    for n in order:
        centre, ang, w, h = frames[n]
        pc = to_patient(n, np.array([[-w / 2 - 4.2 * k, -h / 2 + 0.3 * h]]))[0]
        pedicle_c[n] = pc
        ped = ellipse(tuple(pc), (3.2 * k, 3.4 * k), ang, 24)
        scene.bone(ped, density=0.14 * bone, cortex=0.3, cortex_mm=0.7, taper_mm=1.5, texture=0.05)
        # contralateral pedicle projected over the body
        opp = to_patient(n, np.array([[w * rng.uniform(0.05, 0.2), -h / 2 + 0.3 * h]]))[0]
        scene.bone(ellipse(tuple(opp), (2.8 * k, 4.0 * k), ang, 20), density=0.03, cortex=0.08, taper_mm=1.0)
        # articular pillar: a shingled parallelogram behind the pedicle
        f0 = -w / 2 - 8.6 * k
        pillar = np.array(
            [
                [f0, -h / 2 - 1.5 * k],
                [f0 - 6 * k, -h / 2 - 4.5 * k],
                [f0 - 13 * k, -h / 2 - 3.0 * k],
                [f0 - 14 * k, h / 2 + 1.5 * k],
                [f0 - 8 * k, h / 2 + 3.5 * k],
                [f0 - 0.5 * k, h / 2 + 0.5 * k],
            ]
        )
        scene.bone(
            smooth_closed(to_patient(n, pillar), 3),
            density=0.22 * bone,
            cortex=0.14,
            cortex_mm=0.7,
            taper_mm=2.5,
            texture=0.1,
        )
        # lamina and spinous process: seen obliquely they overlap like shingles behind the pillar
        reach = rng.uniform(16, 24) * k
        lam = np.array(
            [
                [f0 - 11 * k, -h / 2 + 0 * k],
                [f0 - 11 * k - reach * 0.7, -h / 2 + 5 * k],
                [f0 - 11 * k - reach, -h / 2 + 11 * k],
                [f0 - 11 * k - reach * 0.8, h / 2 + 2 * k],
                [f0 - 12 * k, h / 2 + 1 * k],
            ]
        )
        scene.bone(
            smooth_closed(to_patient(n, lam), 3), density=0.06 * bone, cortex=0.06, taper_mm=3.0, texture=0.1
        )

    # --- foramina: bony bridge between two pedicles with the oval opening cut out
    foramina: list[Foramen] = []
    if abnormal:
        n_bad = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        bad = set(
            rng.choice(len(_LEVELS), size=n_bad, replace=False, p=[0.05, 0.15, 0.25, 0.33, 0.22]).tolist()
        )
    else:
        bad = set()
    for i, level in enumerate(_LEVELS):
        up, lo = CERVICAL[i], CERVICAL[i + 1]
        cu, angu, wu, hu = frames[up]
        pu, pl = pedicle_c[up], pedicle_c[lo]
        mid = (pu + pl) / 2
        ax_down = (pl - pu) / np.hypot(*(pl - pu))
        ax_ant = np.array([ax_down[1], -ax_down[0]])
        if ax_ant[0] < 0:
            ax_ant = -ax_ant
        gap = float(np.hypot(*(pl - pu)))
        half_h = max(gap / 2 - 2.8 * k, 2.5) * rng.uniform(0.92, 1.08)
        half_w = rng.uniform(3.0, 3.9) * k
        oval_ang = float(np.arctan2(ax_down[1], ax_down[0])) - np.pi / 2
        oval = ellipse(tuple(mid), (half_w, half_h), oval_ang, 48)
        nominal = _poly_area(oval)
        if i in bad:
            target = float(
                rng.choice([rng.uniform(0.55, 0.8), rng.uniform(0.4, 0.55), rng.uniform(0.3, 0.4)])
            )
            cause = str(rng.choice(["uncovertebral", "facet", "both", "height"], p=[0.45, 0.2, 0.25, 0.1]))
        else:
            target = float(rng.uniform(0.0, NORMAL_MAX_NARROWING) * (0.3 + 0.7 * degeneration))
            cause = str(rng.choice(["uncovertebral", "facet"])) if target > 0.02 else "none"
        if cause == "height":
            shape = _narrow(oval, mid, ax_ant, target, "height", rng)
            got = 1 - _poly_area(shape) / nominal
        elif cause == "none":
            shape, got = oval, 0.0
        else:
            shape, got = _narrow_to(oval, mid, ax_ant, target, cause, rng)
        # bridge: from the body's posterior wall to the pillar, pedicle centre to pedicle centre
        bw = half_w + 1.8 * k
        bridge = np.array(
            [
                pu + ax_ant * (bw + 0.8 * k),
                pl + ax_ant * (bw + 0.8 * k),
                pl - ax_ant * (bw + 1.2 * k),
                pu - ax_ant * (bw + 1.2 * k),
            ]
        )
        scene.bone(bridge, density=0.26 * bone, cortex=0.0, taper_mm=1.5, texture=0.08, holes=[shape])
        closed = np.vstack([shape, shape[:1]])
        scene.dense(polyline_offset(closed, rng.uniform(0.6, 1.1) * k), rng.uniform(0.08, 0.16), blur_mm=0.3)
        if got > 0.05 and cause != "height":  # osteophytes: dense bone where the oval was
            scene.bone(oval, density=0.12 * bone, cortex=0.0, taper_mm=0.6, texture=0.1, holes=[shape])
        foramina.append(Foramen(level, shape, nominal, float(got), cause))
        del cu, angu, wu, hu

    # --- distractors: skull (occiput, mastoid, skull base), mandible with teeth, hyoid, clavicle,
    # first ribs
    top = frames["C2"][0]
    skull_c = top + np.array([rng.uniform(-15, 5), rng.uniform(-95, -80)]) * k
    outer = ellipse(tuple(skull_c), (95 * k, 70 * k), rng.normal(0, 0.08), 72)
    inner = ellipse(tuple(skull_c + np.array([2.0, -2.0])), (86 * k, 61 * k), 0.0, 72)
    scene.bone(outer, density=0.05, cortex=0.45, cortex_mm=2.5, taper_mm=4.0, texture=0.2, holes=[inner])
    scene.bone(inner, density=0.1, cortex=0.0, taper_mm=25.0, texture=0.1)  # brain case (both tables en face)
    base = np.array([[-55, -42], [-20, -30], [15, -36], [45, -50], [20, -62], [-30, -58]]) * k + top
    scene.bone(
        smooth_closed(base, 5), density=0.25, cortex=0.1, taper_mm=6.0, texture=0.15
    )  # petrous / basiocciput
    mastoid = top + np.array([-32.0, -40.0]) * k
    scene.bone(
        ellipse(tuple(mastoid), (9 * k, 14 * k), 0.4, 24), density=0.18, cortex=0.12, taper_mm=5, texture=0.3
    )
    jaw = top + np.array([rng.uniform(-6, 8), rng.uniform(0, 16)]) * k
    # face and floor of the mouth: soft tissue around the mandible (thick, like the head)
    face = np.array([[0, -90], [130, -80], [140, 0], [120, 40], [60, 45], [15, 30]]) * k + jaw
    scene.soft(smooth_closed(face, 5), 0.02 * rng.uniform(80, 110), blur_mm=12.0)
    for side, off in enumerate(rng.normal(0, 5, size=(2, 2)) * k):
        shift = jaw + off + np.array([10.0 * side, 3.0 * side]) * k
        # ramus rising to the condyle, angle near C2-C3, body running forwards with the teeth
        mand = np.array(
            [
                [8, -62], [20, -60], [26, -30], [30, 0], [45, 14], [85, 22], [110, 18], [112, 2],
                [80, 0], [48, -6], [38, -20], [32, -50], [26, -66],
            ]
        ) * k + shift  # fmt: skip
        scene.bone(
            smooth_closed(mand, 4), density=0.07, cortex=0.22, cortex_mm=1.5, taper_mm=3.0, texture=0.12
        )
        for j in range(int(rng.integers(3, 8))):  # molars and premolars on the alveolar ridge
            tx = shift + np.array([52 + 9 * j, -8 - 0.5 * j]) * k
            tooth = rounded_tooth(tx, k, rng)
            scene.bone(tooth, density=0.35, cortex=0.3, cortex_mm=0.8, taper_mm=1.5, texture=0.02)
    hyoid = frames["C3"][0] + np.array([rng.uniform(30, 42), rng.uniform(-4, 8)]) * k
    scene.bone(
        polyline_offset(np.array([hyoid, hyoid + np.array([12, -3]) * k]), 3.5 * k), density=0.12, cortex=0.12
    )
    c7 = frames["C7"][0]
    for side in (0, 1):
        cl = c7 + np.array([-70 + 40 * side, 28 + rng.uniform(-6, 10) + 8 * side]) * k
        clav = np.array([cl, cl + np.array([90, -22 + 6 * side]) * k, cl + np.array([150, -10]) * k])
        scene.bone(
            polyline_offset(smooth_closed(clav, 8)[: 8 * 2], 14 * k),
            density=0.16,
            cortex=0.22,
            cortex_mm=1.5,
            taper_mm=4,
            texture=0.1,
        )
        rib = frames["T1"][0] + np.array([-10.0, 0.0]) * k
        t = np.linspace(0, 1, 16)
        path = np.stack([-25 * np.sin(t * 2.5) + 60 * t, 30 * t**1.5 + 10 * side], axis=1) * k
        scene.bone(polyline_offset(rib + path, 8 * k), density=0.06, cortex=0.12, cortex_mm=0.8, taper_mm=2.0)

    # --- soft tissue: neck cylinder, shoulders, airway
    mu = 0.02
    neck_r = rng.uniform(52, 68)
    neck_cx = float(np.mean([f[0][0] for f in frames.values()])) + rng.uniform(-5, 15)
    shoulder_y = float(c7[1]) + rng.uniform(5, 30)
    head_y = float(top[1]) - 35

    def soft(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = neck_r * (1 + 0.12 * np.clip((head_y - y) / 30, 0, 1))
        u = np.clip(1 - np.abs((x - neck_cx) / r) ** 2.5, 0, 1)
        neck = 2 * neck_r * u**0.4
        shoulder = (
            180 * np.clip((y - shoulder_y) / 60, 0, 1) ** 1.5 * np.clip(1 - np.abs((x - neck_cx) / 200), 0, 1)
        )
        head = 140 * np.clip((head_y - y) / 50, 0, 1)
        return (mu * (neck + shoulder + head)).astype(np.float32)

    scene.field(soft)
    # pharynx and trachea: air column in front of the spine
    air_pts = []
    for n in ("C2", "C3", "C4", "C5", "C6", "C7", "T1"):
        centre, ang, w, h = frames[n]
        air_pts.append(centre + rot(np.array([w / 2 + rng.uniform(6, 12) * k, 0.0]), ang))
    air = np.array(air_pts)
    scene.soft(polyline_offset(air, rng.uniform(12, 18) * k), -mu * 14, blur_mm=3.0)

    # --- ROI: C2-C7 bodies, pedicles, pillars' front and the foramina
    roi_pts = [outlines[n] for n in CERVICAL] + [f.outline for f in foramina]
    roi_pts += [to_patient(n, np.array([[-frames[n][2] / 2 - 9 * k, 0.0]])) for n in CERVICAL]
    roi = np.vstack(roi_pts)
    for n in CERVICAL:
        scene.keep_inside.append(outlines[n])
    scene.keep_inside.append(roi)
    scene.field_hint.extend([roi, base[:3], np.array([hyoid, c7 + np.array([0, 40.0])])])
    return CervicalOblique(
        bodies={n: bodies[n] for n in CERVICAL},
        outlines={n: outlines[n] for n in CERVICAL},
        foramina=foramina,
        roi_points=roi,
        scene=scene,
    )


def rounded_tooth(at: np.ndarray, k: float, rng: np.random.Generator) -> np.ndarray:
    """A tooth: crown above, two roots below, as one rounded outline (mm)."""
    w, h = rng.uniform(6.5, 9) * k, rng.uniform(14, 19) * k
    pts = np.array(
        [[-w / 2, -h * 0.5], [w / 2, -h * 0.5], [w / 2, 0.0], [w * 0.25, h * 0.5], [-w * 0.25, h * 0.5], [-w / 2, 0.0]]
    )  # fmt: skip
    return smooth_closed(rot(pts, rng.normal(0, 0.15)) + at, 3)
