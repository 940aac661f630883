"""Lumbar spine anatomy: the lateral view (and the shared slip model).

Lateral patient frame: millimetres, ``x`` anterior, ``y`` caudal; the image map may mirror ``x``
(patient facing the image left). The column is built from the sacrum upwards: every vertebra
sits on the one below with a wedge-shaped disc (lordosis), its posterior-inferior corner placed
relative to the lower vertebra's posterior-superior corner. A slip translates the superior
vertebra — and with it everything above — along the inferior vertebra's superior endplate
(plus, for high grades, a forward roll over the anterior edge), so the whole upper column moves
as it does in spondylolisthesis.

Ground truth: the four corners of the underlying quadrilateral of every body (superior-anterior,
superior-posterior, inferior-posterior, inferior-anterior) and its drawn outline (rounded
corners, concave endplates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cdss.synth.scene import Scene
from cdss.synth.shapes import ellipse, polyline_offset, rot, rounded_quad, smooth_closed, unit

__all__ = ["APSpine", "LateralSpine", "SlipPlan", "build_ap", "build_lateral", "sample_slips"]

LUMBAR = ("L1", "L2", "L3", "L4", "L5")
LEVELS = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")

# nominal adult dimensions (mm): AP depth, anterior height, posterior height
_BODY = {
    "T11": (31.0, 21.0, 22.0),
    "T12": (33.0, 23.0, 24.5),
    "L1": (36.0, 25.0, 26.5),
    "L2": (38.0, 26.5, 27.5),
    "L3": (40.0, 27.5, 27.5),
    "L4": (41.5, 28.0, 27.0),
    "L5": (43.0, 29.0, 25.0),
}
# disc (anterior, posterior) heights, mm, for the disc BELOW each vertebra
_DISC = {
    "T11": (6.0, 5.0),
    "T12": (7.0, 6.0),
    "L1": (9.5, 6.5),
    "L2": (11.5, 7.0),
    "L3": (13.0, 7.0),
    "L4": (14.5, 7.0),
    "L5": (15.0, 6.5),
}

# (u, v) outline of a lumbar neural arch: u = body depths posterior of the posterior wall,
# v = posterior heights below the superior endplate
_ARCH = np.array(
    [
        (0.00, 0.06), (0.15, 0.02), (0.32, 0.00), (0.40, -0.12), (0.44, -0.30), (0.50, -0.38),
        (0.57, -0.32), (0.60, -0.10), (0.66, 0.05), (0.85, 0.14), (1.20, 0.16), (1.45, 0.18),
        (1.58, 0.26), (1.62, 0.50), (1.56, 0.80), (1.35, 0.86), (1.05, 0.84), (0.85, 0.92),
        (0.80, 1.10), (0.74, 1.30), (0.66, 1.38), (0.58, 1.30), (0.54, 1.05), (0.50, 0.80),
        (0.40, 0.62), (0.25, 0.56), (0.10, 0.56), (0.00, 0.58),
    ]
)  # fmt: skip
_PILLAR = np.array(
    [
        (0.00, 0.08), (0.32, 0.02), (0.40, -0.12), (0.44, -0.30), (0.50, -0.38), (0.57, -0.32),
        (0.62, -0.05), (0.68, 0.30), (0.78, 0.90), (0.80, 1.10), (0.74, 1.30), (0.66, 1.38),
        (0.58, 1.30), (0.54, 1.05), (0.50, 0.80), (0.40, 0.62), (0.25, 0.55), (0.00, 0.56),
    ]
)  # fmt: skip
_THORACIC_ARCH = np.array(
    [
        (0.00, 0.05), (0.30, 0.00), (0.42, -0.25), (0.52, -0.30), (0.60, -0.05), (0.80, 0.20),
        (1.20, 0.55), (1.45, 0.95), (1.40, 1.10), (1.10, 0.95), (0.80, 1.00), (0.70, 1.30),
        (0.60, 1.35), (0.52, 1.05), (0.40, 0.65), (0.00, 0.60),
    ]
)  # fmt: skip


@dataclass
class SlipPlan:
    """Intended slips: level name → signed slip in percent (positive = anterolisthesis)."""

    slips: dict[str, float] = field(default_factory=dict)


def sample_slips(rng: np.random.Generator) -> SlipPlan:
    """Draw the slipped levels of one image.

    35 % of images have no slip; the others have one (75 %) or two slipped levels, mostly
    L4-L5 and L5-S1, some L3-L4 (and rarely L2-L3). A slipped level is an anterolisthesis whose
    magnitude is drawn within one Meyerding band (I 30 %, II 27 %, III 22 %, IV 21 %; III/IV
    prefer L5-S1) or, for 18 % of slipped levels, a retrolisthesis of 6 … 24.5 %.
    """
    plan = SlipPlan()
    if rng.random() < 0.35:
        return plan
    n = 1 if rng.random() < 0.75 else 2
    bands = [(6.0, 24.5), (26.0, 49.5), (51.0, 74.5), (76.0, 97.0)]
    grade = int(rng.choice(4, p=[0.30, 0.27, 0.22, 0.21]))
    retro = rng.random() < 0.18
    if retro:
        level = str(rng.choice(["L2-L3", "L3-L4", "L4-L5", "L5-S1"], p=[0.2, 0.35, 0.3, 0.15]))
        plan.slips[level] = -float(rng.uniform(6.0, 24.5))
    else:
        if grade >= 2:
            level = str(rng.choice(["L5-S1", "L4-L5", "L3-L4"], p=[0.7, 0.25, 0.05]))
        else:
            level = str(rng.choice(["L5-S1", "L4-L5", "L3-L4", "L2-L3"], p=[0.38, 0.42, 0.15, 0.05]))
        plan.slips[level] = float(rng.uniform(*bands[grade]))
    if n == 2:
        others = [lv for lv in ("L2-L3", "L3-L4", "L4-L5", "L5-S1") if lv not in plan.slips]
        level = str(rng.choice(others))
        if rng.random() < 0.35:
            plan.slips[level] = -float(rng.uniform(6.0, 20.0))
        else:
            plan.slips[level] = float(rng.uniform(*bands[int(rng.choice(2, p=[0.65, 0.35]))]))
    return plan


@dataclass
class LateralSpine:
    """The built lateral anatomy (patient frame, mm)."""

    corners: dict[str, np.ndarray]  # L1..L5, S1 (and T11, T12 without ground truth)
    outlines: dict[str, np.ndarray]
    scene: Scene


def _normal_up(e: np.ndarray) -> np.ndarray:
    """Cranial normal of an endplate direction ``e`` (posterior → anterior), x anterior, y caudal."""
    return np.array([e[1], -e[0]])


def _arch_points(uv: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Map arch (u, v) coordinates onto the patient frame for a body with ``corners``."""
    sa, sp, ip, _ = corners
    e = unit(sa - sp)
    w = float(np.hypot(*(sa - sp)))
    down = unit(ip - sp)
    h = float(np.hypot(*(ip - sp)))
    return sp + (-e)[None, :] * (uv[:, :1] * w) + down[None, :] * (uv[:, 1:] * h)


def build_lateral(rng: np.random.Generator, plan: SlipPlan, *, age: float) -> LateralSpine:
    """Build the lateral lumbar anatomy with the planned slips.

    Parameters
    ----------
    rng
        Random generator of the image.
    plan
        Intended slips by level.
    age
        Patient age in years (degeneration, bone density, calcification).
    """
    scene = Scene()
    size = {k: np.array(v) * rng.normal(1.0, 0.035) for k, v in _BODY.items()}
    degeneration = float(np.clip((age - 35) / 45, 0, 1)) * rng.uniform(0.4, 1.0)
    disc = {}
    for key, (da, dp) in _DISC.items():
        f = rng.normal(1.0, 0.08) * (1 - 0.45 * degeneration * rng.random())
        disc[key] = (da * f, dp * f)
    bone_density = float(np.clip(rng.normal(1.0, 0.12) - 0.25 * degeneration, 0.55, 1.3))

    # --- sacrum (S1 superior endplate from posterior to anterior, tilted by the sacral slope)
    slope = np.deg2rad(rng.uniform(28, 48))
    e = np.array([np.cos(slope), np.sin(slope)])
    s1_w = 44.0 * rng.normal(1.0, 0.04)
    sp = np.zeros(2)
    sa = sp + e * s1_w
    s_heights = [27.0, 22.0, 17.0, 13.0, 10.0]
    s_widths = [s1_w, 36.0, 28.0, 21.0, 16.0]
    curve = np.deg2rad(rng.uniform(6, 14))
    sac_ant = [sa]
    sac_post = [sp]
    seg_corners = []
    top_sp, top_sa = sp, sa
    e_i = e
    for i in range(5):
        e_next = rot(e_i, curve)  # sacral kyphosis: each segment tips forward
        d_next = -_normal_up(e_next)
        ip = top_sp + d_next * s_heights[i] * 0.92
        ia = ip + e_next * s_widths[min(i + 1, 4)] * (1.0 if i < 4 else 0.9)
        # keep the anterior surface continuous
        ia = top_sa + unit(ia - top_sa) * max(np.hypot(*(ia - top_sa)), s_heights[i] * 0.9)
        seg_corners.append(np.array([top_sa, top_sp, ip, ia]))
        sac_ant.append(ia)
        sac_post.append(ip)
        top_sp, top_sa, e_i = ip, ia, e_next
    s1 = seg_corners[0]
    corners: dict[str, np.ndarray] = {"S1": s1}
    outlines: dict[str, np.ndarray] = {"S1": rounded_quad(s1, radius=2.5, concavity=(0.03, 0.0, 0.0, 0.02))}

    # --- lumbar and lower thoracic column, bottom-up
    order = ["L5", "L4", "L3", "L2", "L1", "T12", "T11"]
    below: str | None = "S1"
    lower = s1
    for name in order:
        level = f"{name}-{below}"
        w, ha, hp = size[name]
        da, dp = disc[name]
        slip = plan.slips.get(level, None)
        if slip is not None and abs(slip) > 0:
            f = 1.0 - 0.5 * min(abs(slip) / 100.0, 1.0) * rng.uniform(0.5, 1.0)
            da, dp = da * f, dp * max(f, 0.55)
        l_sa, l_sp = lower[0], lower[1]
        lw = float(np.hypot(*(l_sa - l_sp)))
        el = unit(l_sa - l_sp)
        nl = _normal_up(el)
        wedge = np.arctan2(da - dp, lw)
        eu = rot(el, -wedge)
        nu = _normal_up(eu)
        jitter = rng.normal(0.0, 0.012) * lw  # natural malalignment, well below 5 %
        ip = l_sp + nl * dp + el * jitter
        ia = ip + eu * w
        spc = ip + nu * hp
        sac = ia + nu * ha
        c = np.array([sac, spc, ip, ia])
        if slip is not None and abs(slip) > 0:
            s = slip / 100.0
            tilt = np.deg2rad(max(0.0, s - 0.35) * rng.uniform(15, 35))  # roll over the anterior edge
            c = rot(c - l_sa, tilt) + l_sa
            d0 = float(np.dot(c[2] - l_sp, el))
            c = c + el * (s * lw - d0)
        # small random malalignment of upper vertebrae (not at T-levels, to keep GT clean)
        corners[name] = c
        outlines[name] = rounded_quad(
            c,
            radius=rng.uniform(1.8, 3.2),
            concavity=(
                rng.uniform(0.02, 0.06),
                rng.uniform(0.0, 0.04),
                rng.uniform(0.02, 0.06),
                rng.uniform(0.02, 0.05),
            ),
        )
        lower = c
        below = name

    # --- draw: bodies (cylinders seen side-on: thickest halfway between the walls)
    for name, c in corners.items():
        if name == "S1":
            continue
        e_ax = unit(c[0] - c[1])
        half = float(np.hypot(*(c[0] - c[1]))) / 2
        scene.bone(
            outlines[name],
            density=0.42 * bone_density,
            cortex=0.16 + 0.06 * degeneration,
            cortex_mm=0.8,
            taper_mm=1.5,
            texture=0.09,
            axis=(c.mean(axis=0), e_ax, half * 1.05, 0.55),
        )
        # endplates are seen tangentially: dense lines, doubled by beam divergence
        ol = outlines[name]
        for seg in (ol[0:12], ol[34:46]):
            for k, off in enumerate((np.zeros(2), rng.normal(0, 0.9, size=2))):
                scene.dense(
                    polyline_offset(seg + off, rng.uniform(0.8, 1.6)),
                    (0.14 if k == 0 else 0.07) * (1 + degeneration),
                    blur_mm=0.25,
                )
        if degeneration > 0.35 and name.startswith("L") and rng.random() < degeneration:
            _osteophytes(scene, c, rng)
    # sacrum as one fused bone
    sac_outline = smooth_closed(np.vstack([np.array(sac_post[::-1]), np.array(sac_ant)]), 4)
    scene.bone(
        sac_outline, density=0.24 * bone_density, cortex=0.12, cortex_mm=1.0, taper_mm=8.0, texture=0.09
    )
    scene.bone(
        outlines["S1"], density=0.08 * bone_density, cortex=0.1, cortex_mm=0.8, taper_mm=3.0, texture=0.05
    )
    scene.dense(polyline_offset(outlines["S1"][0:12], 1.4), 0.14, blur_mm=0.3)
    # sacral posterior elements (canal behind the bodies, median crest)
    post_line = np.array(sac_post)
    n_back = np.array([_arch_points(np.array([[0.0, 0.0]]), sc)[0] for sc in seg_corners])
    back = np.vstack(
        [
            _arch_points(np.array([[0.35, -0.35], [0.55, -0.4], [0.62, 0.0]]), s1),
            post_line[1:4]
            + rot(np.array([-1.0, 0.0]), curve * 2)[None, :] * np.array([[24.0], [20.0], [15.0]]),
            post_line[3:0:-1]
            + rot(np.array([-1.0, 0.0]), curve * 2)[None, :] * np.array([[8.0], [10.0], [12.0]]),
        ]
    )
    del n_back
    scene.bone(smooth_closed(back, 4), density=0.12 * bone_density, cortex=0.1, taper_mm=3.0, texture=0.08)
    # coccyx
    cx = post_line[-1] * 0.5 + np.array(sac_ant[-1]) * 0.5
    d = rot(unit(np.array(sac_ant[-1]) - np.array(sac_ant[-2])), np.deg2rad(20))
    for i in range(3):
        ctr = cx + d * (9 + 10 * i)
        scene.bone(
            ellipse(tuple(ctr), (6.5 - i * 1.5, 4.5 - i), float(np.arctan2(d[1], d[0])), 16),
            density=0.25,
            cortex=0.15,
            taper_mm=2.0,
        )

    # --- posterior elements (two superimposed pillars, one midline arch)
    for name, c in corners.items():
        if name == "S1":
            continue
        arch = _THORACIC_ARCH if name.startswith("T") else _ARCH
        arch = arch * rng.normal(1.0, 0.04, size=(1, 2)) + rng.normal(0, 0.025, size=arch.shape)
        pts = smooth_closed(_arch_points(arch, c), 4)
        if name.startswith("L"):
            scene.field_hint.append(pts)
        # isthmic slips (anterolisthesis of grade II or more) show a lucent pars defect
        below = _NEXT.get(name)
        isthmic = below is not None and plan.slips.get(f"{name}-{below}", 0.0) > 25.0
        defect = [_pars_defect(c, rng)] if isthmic else None
        scene.bone(
            pts,
            density=0.2 * bone_density,
            cortex=0.16,
            cortex_mm=0.8,
            taper_mm=3.0,
            texture=0.1,
            holes=defect,
        )
        if name.startswith("L"):
            offs = rng.normal(0, 1.6, size=2)
            for sgn in (-0.5, 0.5):
                pil = smooth_closed(_arch_points(_PILLAR, c), 4) + offs * sgn
                scene.bone(
                    pil,
                    density=0.045 * bone_density,
                    cortex=0.07,
                    cortex_mm=0.7,
                    taper_mm=2.5,
                    texture=0.1,
                    holes=[d + offs * sgn for d in defect] if defect else None,
                )
            # transverse process superimposed on the pedicle
            tp = _arch_points(np.array([[0.42, 0.33]]), c)[0]
            scene.bone(ellipse(tuple(tp), (7.0, 5.5), 0.3, 20), density=0.08, cortex=0.06, taper_mm=3.0)

    # --- ribs at T11/T12 (left and right, differently magnified)
    for name in ("T11", "T12"):
        c = corners[name]
        head = _arch_points(np.array([[0.1, 0.25]]), c)[0]
        length = 1.0 if name == "T11" else 0.7
        for side in (0.97, 1.05):
            t = np.linspace(0, 1, 14)
            path = (
                np.stack(
                    [-10 - 60 * np.sin(t * 2.2) * length + 25 * t * length, 42 * t**1.3 * length + 6 * t],
                    axis=1,
                )
                * side
            )
            scene.bone(
                polyline_offset(head + path, 9.0 - 4 * t),
                density=0.05,
                cortex=0.1,
                cortex_mm=0.8,
                taper_mm=2.0,
                texture=0.05,
            )

    # --- pelvis: iliac wings (both sides, offset), femoral heads
    l5 = corners["L5"]
    base_pt = s1[1]
    ax_dn = unit(s1[2] - s1[1]) * 0.3 + np.array([0.0, 1.0]) * 0.7
    ax_dn = unit(ax_dn)
    ax_ant = np.array([ax_dn[1], -ax_dn[0]]) * -1.0  # anterior
    if ax_ant[0] < 0:
        ax_ant = -ax_ant
    crest_top_y = float(np.mean(l5[:, 1])) - rng.uniform(5, 25)
    for k, shift in enumerate(rng.normal(0, 4, size=(2, 2))):
        p0 = base_pt + np.array([-45.0, 10.0])  # posterior superior iliac spine region
        ilium = np.array(
            [
                p0,
                [base_pt[0] - 40, crest_top_y - base_pt[1] * 0 + 12],
                [base_pt[0] - 10, crest_top_y],
                [base_pt[0] + 35, crest_top_y + 4],
                [base_pt[0] + 80, crest_top_y + 30],
                [base_pt[0] + 95, crest_top_y + 60],  # anterior superior iliac spine
                [base_pt[0] + 85, crest_top_y + 85],
                [base_pt[0] + 95, crest_top_y + 110],
                [base_pt[0] + 70, crest_top_y + 150],  # acetabulum roof
                [base_pt[0] + 20, crest_top_y + 150],
                [base_pt[0] - 5, crest_top_y + 125],  # greater sciatic notch
                [base_pt[0] - 30, crest_top_y + 95],
                [base_pt[0] - 50, crest_top_y + 60],
            ]
        ) + shift * (k * 2 - 1)
        scene.bone(
            smooth_closed(ilium, 5), density=0.05, cortex=0.09, cortex_mm=1.2, taper_mm=12.0, texture=0.08
        )
        fh = np.array([base_pt[0] + 60, crest_top_y + 175]) + shift * 1.5
        scene.bone(
            ellipse(tuple(fh), (24.0, 24.0), 0, 40),
            density=0.16,
            cortex=0.12,
            cortex_mm=1.5,
            taper_mm=14.0,
            texture=0.06,
        )

    # --- soft tissue
    _lateral_soft_tissue(scene, corners, rng, age)

    for name in ("L1", "L2", "L3", "L4", "L5", "S1"):
        scene.keep_inside.append(outlines[name])
        scene.field_hint.append(outlines[name])
    scene.texture_angle_rad = 0.0
    return LateralSpine(corners=corners, outlines=outlines, scene=scene)


_NEXT = {"L1": "L2", "L2": "L3", "L3": "L4", "L4": "L5", "L5": "S1"}


def _pars_defect(c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A thin oblique lucent band across the pars interarticularis (spondylolysis)."""
    u0 = rng.uniform(0.5, 0.58)
    line = _arch_points(np.array([[u0 - 0.08, 0.62], [u0, 0.8], [u0 + 0.06, 1.0]]), c)
    return polyline_offset(line, rng.uniform(1.2, 2.5))


def _osteophytes(scene: Scene, c: np.ndarray, rng: np.random.Generator) -> None:
    """Anterior lipping at the superior and/or inferior anterior corners."""
    sa, sp, _, ia = c
    e = unit(sa - sp)
    for corner, vdir in ((sa, unit(sa - ia)), (ia, unit(ia - sa))):
        if rng.random() < 0.6:
            # a beak continuing the endplate: grows forwards, then curves towards the disc
            size = rng.uniform(2.0, 5.0)
            beak = np.array(
                [
                    corner - vdir * 5.0,
                    corner - vdir * 1.5 + e * size * 0.5,
                    corner + e * size + vdir * size * 0.55,
                    corner + e * size * 0.35 + vdir * size * 0.25,
                    corner - e * 2.5,
                ]
            )
            scene.bone(
                smooth_closed(beak, 4), density=0.12, cortex=0.12, cortex_mm=0.6, taper_mm=1.0, texture=0.1
            )


def _lateral_soft_tissue(
    scene: Scene, corners: dict[str, np.ndarray], rng: np.random.Generator, age: float
) -> None:
    """Trunk path length (elliptical cross-section), fat layer, bowel gas, aortic calcification."""
    spine_post = np.array([corners[n][1] for n in ("T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")])
    # smooth posterior line x(y) (a quadratic fit: slips and high grades must not make steps)
    ys = spine_post[:, 1]
    coef = np.polyfit(ys, spine_post[:, 0], 2)
    y_lo, y_hi = float(ys.min()), float(ys.max())

    y_mid, y_half = (y_lo + y_hi) / 2, max((y_hi - y_lo) / 2, 1.0)

    def post_x(y: np.ndarray) -> np.ndarray:
        # smooth saturation outside the spine (kinks would show after edge enhancement)
        yc = y_mid + y_half * 1.15 * np.tanh((y - y_mid) / (y_half * 1.15))
        return np.polyval(coef, yc)

    def smoothstep(t: np.ndarray) -> np.ndarray:
        t = np.clip(t, 0.0, 1.0)
        return t * t * (3 - 2 * t)

    back_depth = rng.uniform(95, 150)  # skin behind the posterior vertebral line
    belly = rng.uniform(150, 260)  # skin anterior to the posterior vertebral line
    half_width = rng.uniform(140, 190)  # lateral half width of the trunk
    mu = 0.019
    fat = rng.uniform(8, 40)

    def trunk(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xp = post_x(y)
        hip = smoothstep((y - y_hi + 60.0) / 180.0)
        post = xp - back_depth - 25 * hip  # buttocks
        ant = xp + belly + 10 * np.sin((y - y_lo) / 120.0)
        ctr, a = (post + ant) / 2, (ant - post) / 2
        b = half_width * (1 + 0.15 * hip)
        # super-elliptic cross-section (flat middle, rounded flanks): chord through it
        p = 4.0
        r = np.clip(1 - np.abs((x - ctr) / a) ** p, 0, 1)
        outer = 2 * b * r ** (1 / p)
        inner_a, inner_b = np.maximum(a - fat, 1), np.maximum(b - fat, 1)
        ri = np.clip(1 - np.abs((x - ctr) / inner_a) ** p, 0, 1)
        inner = 2 * inner_b * ri ** (1 / p)
        return (mu * 0.93 * outer + mu * 0.07 * inner).astype(np.float32)

    scene.field(trunk)
    # paraspinal muscle mass and psoas add a little posteriorly
    # bowel gas: irregular dark pockets, mostly anterior to the spine, sometimes over it
    l3 = corners["L3"]
    ant = unit(l3[0] - l3[1])
    centre = l3.mean(axis=0)
    for _ in range(int(rng.integers(0, 7))):
        ctr = centre + ant * rng.uniform(-10, 130) + np.array([0.0, rng.uniform(-110, 140)])
        ax = (rng.uniform(8, 28), rng.uniform(5, 14))
        blob = ellipse(tuple(ctr), ax, rng.uniform(0, np.pi), 14)
        blob += rng.normal(0, min(ax) * 0.25, size=blob.shape)
        scene.soft(smooth_closed(blob, 3), -mu * rng.uniform(0.5, 1.2) * min(ax), blur_mm=2.5)
    for _ in range(int(rng.integers(0, 25))):  # stool mottle
        ctr = centre + ant * rng.uniform(30, 140) + np.array([0.0, rng.uniform(0, 170)])
        r = rng.uniform(1.5, 4)
        scene.soft(ellipse(tuple(ctr), (r, r * rng.uniform(0.6, 1.0)), 0, 10), -mu * r, blur_mm=0.8)
    if age > 55 and rng.random() < 0.6:  # aortic wall calcification in front of L2-L4
        for n in ("L2", "L3", "L4"):
            if rng.random() < 0.7:
                c = corners[n]
                a0 = c[3] + unit(c[0] - c[1]) * rng.uniform(8, 25)
                seg = np.array([a0, a0 + unit(c[0] - c[3]) * rng.uniform(5, 18)])
                scene.dense(polyline_offset(seg, rng.uniform(0.8, 1.8)), rng.uniform(0.15, 0.35), blur_mm=0.3)


# ----------------------------------------------------------------------------- AP view
_AP_BODY = {  # transverse width, height (mm)
    "T12": (40.0, 24.0),
    "L1": (44.0, 26.0),
    "L2": (46.0, 27.0),
    "L3": (48.0, 28.0),
    "L4": (50.0, 28.0),
    "L5": (52.0, 27.0),
}
_AP_DISC = {"T12": 7.0, "L1": 8.5, "L2": 10.0, "L3": 11.0, "L4": 12.0, "L5": 11.0}
_TP_LEN = {"T12": 6.0, "L1": 16.0, "L2": 22.0, "L3": 30.0, "L4": 24.0, "L5": 20.0}


@dataclass
class APSpine:
    """The built AP anatomy (patient frame, mm; x to the image right = patient's left)."""

    corners: dict[str, np.ndarray]  # superior-left, superior-right, inferior-right, inferior-left
    outlines: dict[str, np.ndarray]
    pedicles: dict[str, list[np.ndarray]]
    spinous: dict[str, np.ndarray]
    transverse: dict[str, list[np.ndarray]]
    scene: Scene
    thoracic_corners: dict[str, np.ndarray] = field(default_factory=dict)  # T12 (ground truth only)
    thoracic_outlines: dict[str, np.ndarray] = field(default_factory=dict)


def build_ap(rng: np.random.Generator, *, age: float) -> APSpine:
    """Build the AP lumbar anatomy: bodies, pedicles, spinous and transverse processes, sacrum,
    iliac wings, psoas shadows, ribs, bowel gas."""
    scene = Scene()
    k = rng.normal(1.0, 0.04)
    degeneration = float(np.clip((age - 35) / 45, 0, 1)) * rng.uniform(0.4, 1.0)
    bone = float(np.clip(rng.normal(1.0, 0.12) - 0.25 * degeneration, 0.55, 1.3))
    # a gentle scoliotic curve: lateral offset x(y) and tilt
    amp = rng.normal(0, 6)
    phase = rng.uniform(0, np.pi)
    order = ["T12", "L1", "L2", "L3", "L4", "L5"]
    total = sum(_AP_BODY[n][1] + _AP_DISC[n] for n in order) * k
    corners: dict[str, np.ndarray] = {}
    outlines: dict[str, np.ndarray] = {}
    pedicles: dict[str, list[np.ndarray]] = {}
    spinous: dict[str, np.ndarray] = {}
    transverse: dict[str, list[np.ndarray]] = {}
    y = 0.0
    frames = {}
    for n in order:
        w, h = (np.array(_AP_BODY[n]) * k * rng.normal(1.0, 0.03)).tolist()
        yc = y + h / 2
        xc = amp * np.sin(np.pi * yc / total + phase)
        slope = amp * np.pi / total * np.cos(np.pi * yc / total + phase)
        ang = float(np.arctan(slope)) + rng.normal(0, np.deg2rad(1.5))
        local = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
        # bodies are a little wider at the endplates than at the waist; quad corners are exact
        c = rot(local, ang) + np.array([xc, yc])
        corners[n] = c
        outlines[n] = rounded_quad(c, radius=2.5 * k, concavity=(0.015, 0.05, 0.015, 0.05))
        frames[n] = (np.array([xc, yc]), ang, w, h)
        y += h + _AP_DISC[n] * k * rng.normal(1.0, 0.06) * (1 - 0.3 * degeneration * rng.random())

    def at(n: str, uv: np.ndarray) -> np.ndarray:
        centre, ang, _, _ = frames[n]
        return rot(np.atleast_2d(uv), ang) + centre

    for n in order:
        centre, ang, w, h = frames[n]
        scene.bone(
            outlines[n],
            density=0.38 * bone,
            cortex=0.14,
            cortex_mm=0.8,
            taper_mm=2.0,
            texture=0.09,
            axis=(centre, rot(np.array([1.0, 0.0]), ang), w / 2 * 1.05, 0.6),
        )
        ol = outlines[n]
        for seg in (ol[0:12], ol[34:46]):  # endplates: elliptical double contour
            for off in (np.zeros(2), np.array([0.0, rng.uniform(1.0, 3.0)]) * rng.choice([-1, 1])):
                scene.dense(polyline_offset(seg + off, rng.uniform(0.8, 1.3)), 0.08, blur_mm=0.3)
        # pedicles: oval rings in the upper lateral body
        peds = []
        tps = []
        for sx in (-1, 1):
            pc = at(n, np.array([[sx * w * 0.33, -h * 0.12]]))[0]
            ped = ellipse(tuple(pc), (4.5 * k, 7.0 * k), ang, 24)
            scene.bone(ped, density=0.1 * bone, cortex=0.28, cortex_mm=0.9, taper_mm=1.5, texture=0.05)
            peds.append(ped)
            # transverse process
            tl = _TP_LEN[n] * k * rng.normal(1.0, 0.08)
            tp = at(
                n,
                np.array(
                    [
                        [sx * w * 0.3, -h * 0.22],
                        [sx * (w / 2 + tl), -h * 0.18 - 1.5 * k],
                        [sx * (w / 2 + tl + 2 * k), -h * 0.02],
                        [sx * w * 0.3, h * 0.08],
                    ]
                ),
            )
            tps.append(smooth_closed(tp, 3))
            scene.bone(tps[-1], density=0.1 * bone, cortex=0.12, cortex_mm=0.8, taper_mm=2.0)
            # inferior articular process / facet column
            fa = at(
                n,
                np.array(
                    [
                        [sx * w * 0.2, h * 0.2],
                        [sx * w * 0.3, h * 0.3],
                        [sx * w * 0.26, h * 0.85],
                        [sx * w * 0.14, h * 0.8],
                    ]
                ),
            )
            scene.bone(smooth_closed(fa, 3), density=0.08 * bone, cortex=0.1, taper_mm=1.5)
        pedicles[n] = peds
        transverse[n] = tps
        # spinous process: teardrop projected over the lower body and the disc
        sp = at(
            n,
            np.array(
                [
                    [0.0, h * 0.15],
                    [w * 0.09, h * 0.4],
                    [w * 0.07, h * 0.8],
                    [0.0, h * 0.92],
                    [-w * 0.07, h * 0.8],
                    [-w * 0.09, h * 0.4],
                ]
            ),
        )
        spn = smooth_closed(sp, 4)
        scene.bone(spn, density=0.1 * bone, cortex=0.16, cortex_mm=0.8, taper_mm=2.0)
        spinous[n] = spn
        # laminae: faint band between the pedicles
        lam = at(
            n,
            np.array([[-w * 0.3, h * 0.1], [w * 0.3, h * 0.1], [w * 0.22, h * 0.55], [-w * 0.22, h * 0.55]]),
        )
        scene.bone(smooth_closed(lam, 3), density=0.05 * bone, cortex=0.04, taper_mm=3.0)

    # sacrum: S1 body seen through the sacral triangle
    l5c, _, _, l5h = frames["L5"]
    s1_top = l5c[1] + l5h / 2 + _AP_DISC["L5"] * k
    s1w = 50.0 * k
    s1 = np.array(
        [
            [l5c[0] - s1w / 2, s1_top],
            [l5c[0] + s1w / 2, s1_top],
            [l5c[0] + s1w / 2 * 0.92, s1_top + 24 * k],
            [l5c[0] - s1w / 2 * 0.92, s1_top + 24 * k],
        ]
    )
    corners["S1"] = s1
    outlines["S1"] = rounded_quad(s1, radius=2.5 * k, concavity=(0.02, 0.03, 0.0, 0.03))
    sac = np.array(
        [
            [l5c[0] - 55 * k, s1_top - 2],
            [l5c[0] + 55 * k, s1_top - 2],
            [l5c[0] + 38 * k, s1_top + 60 * k],
            [l5c[0] + 12 * k, s1_top + 105 * k],
            [l5c[0] - 12 * k, s1_top + 105 * k],
            [l5c[0] - 38 * k, s1_top + 60 * k],
        ]
    )
    scene.bone(smooth_closed(sac, 4), density=0.22 * bone, cortex=0.1, taper_mm=8.0, texture=0.12)
    scene.bone(outlines["S1"], density=0.12 * bone, cortex=0.1, taper_mm=3.0)
    scene.dense(polyline_offset(outlines["S1"][0:12], 1.2), 0.1, blur_mm=0.3)
    for i in range(4):  # sacral foramina: dark arcs
        for sx in (-1, 1):
            fc = np.array([l5c[0] + sx * (20 - 2.5 * i) * k, s1_top + (22 + 18 * i) * k])
            scene.soft(ellipse(tuple(fc), (4.0 * k, 3.0 * k), 0, 16), -0.05, blur_mm=1.0)
    # iliac wings with crests, SI joints
    crest_y = float(frames["L4"][0][1]) + rng.uniform(-5, 15)
    for sx in (-1, 1):
        wing = np.array(
            [
                [sx * 45, s1_top + 5],
                [sx * 60, crest_y + 10],
                [sx * 95, crest_y - 8],
                [sx * 135, crest_y + 5],
                [sx * 150, crest_y + 40],
                [sx * 140, s1_top + 70],
                [sx * 110, s1_top + 110],
                [sx * 70, s1_top + 95],
                [sx * 40, s1_top + 60],
            ]
        ) * np.array([k, 1.0]) + np.array([l5c[0], 0.0])
        scene.bone(
            smooth_closed(wing, 5),
            density=0.14 * bone,
            cortex=0.2,
            cortex_mm=1.5,
            taper_mm=10.0,
            texture=0.12,
        )
        si = np.array([[l5c[0] + sx * 42 * k, s1_top + 5], [l5c[0] + sx * 36 * k, s1_top + 70 * k]])
        scene.dense(polyline_offset(si, 1.5), 0.08, blur_mm=0.6)
    # ribs 11 and 12
    t12c = frames["T12"][0]
    for sx in (-1, 1):
        for j, (dy, ln) in enumerate(((-20.0, 120.0), (8.0, 80.0))):
            t = np.linspace(0, 1, 14)
            path = np.stack([sx * (25 + ln * t), dy + 45 * t**1.4 + 5 * j], axis=1) * k + t12c
            scene.bone(
                polyline_offset(path, (11 - 5 * t) * k),
                density=0.05,
                cortex=0.12,
                cortex_mm=0.9,
                taper_mm=2.0,
            )

    # soft tissue: abdomen (elliptical cross-section seen AP), psoas stripes, bowel gas
    mu = 0.019
    half_w = rng.uniform(140, 190)
    depth = rng.uniform(200, 300)
    cx = rng.normal(0, 5)
    l1y = float(frames["L1"][0][1])
    pelvis_y = s1_top

    def abdomen(x: np.ndarray, yy: np.ndarray) -> np.ndarray:
        hw = half_w * (1 + 0.15 * np.clip((yy - pelvis_y + 40) / 80, 0, 1))
        r = np.clip(1 - np.abs((x - cx) / hw) ** 3, 0, 1)
        path = depth * r ** (1 / 3)
        # psoas: a denser wedge from L1 widening towards the pelvis
        frac = np.clip((yy - l1y) / max(pelvis_y - l1y, 1), 0, 1)
        edge = 28 + 45 * frac
        psoas = 18 * np.clip(1 - np.abs(np.abs(x - cx) - edge * 0.55) / (edge * 0.45), 0, 1) * (yy > l1y)
        return (mu * (path + psoas)).astype(np.float32)

    scene.field(abdomen)
    for _ in range(int(rng.integers(2, 10))):
        ctr = np.array([rng.uniform(-130, 130), rng.uniform(l1y - 20, pelvis_y + 80)])
        ax = (rng.uniform(8, 30), rng.uniform(6, 16))
        blob = ellipse(tuple(ctr), ax, rng.uniform(0, np.pi), 14)
        blob += rng.normal(0, min(ax) * 0.25, size=blob.shape)
        scene.soft(smooth_closed(blob, 3), -mu * rng.uniform(0.5, 1.2) * min(ax), blur_mm=2.5)
    for n in ("L1", "L2", "L3", "L4", "L5", "S1"):
        scene.keep_inside.append(outlines[n])
        scene.field_hint.append(outlines[n])
    for n in ("L3",):
        scene.field_hint.append(frames[n][0][None, :] + np.array([[-120.0, 0.0], [120.0, 0.0]]) * k)
    return APSpine(
        corners={n: corners[n] for n in ("L1", "L2", "L3", "L4", "L5", "S1")},
        outlines={n: outlines[n] for n in ("L1", "L2", "L3", "L4", "L5", "S1")},
        pedicles={n: pedicles[n] for n in LUMBAR},
        spinous={n: spinous[n] for n in LUMBAR},
        transverse={n: transverse[n] for n in LUMBAR},
        scene=scene,
        thoracic_corners={"T12": corners["T12"]},
        thoracic_outlines={"T12": outlines["T12"]},
    )
