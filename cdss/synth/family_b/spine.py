"""Family B spine model: one patient's T10–coccyx column, pelvis landmarks and pathology.

The column is parameterised the way spine surgeons describe sagittal alignment: pelvic
incidence (PI), pelvic tilt (PT) and sacral slope (SS = PI − PT), lumbar lordosis (L1–S1 Cobb)
distributed over the segments (≈ two thirds at L4–S1), body wedge angles and disc heights from
published lumbar morphometry (Panjabi 1992, Zhou 2000, Roussouly 2005 — values rounded), plus
per-patient shape modes. The sacrum is a chain of five segments with an increasing kyphosis;
the hip axis follows from PI and the sacro-femoral distance. Everything is in the lateral patient
frame (mm, ``x`` anterior, ``y`` caudal); every vertebra also carries its coronal offset, coronal
tilt and axial rotation so the same model is seen on an AP view.

Ground-truth semantics (shared with family A): a body's corners are its underlying
quadrilateral (SA, SP, IP, IA); **S1 is the first sacral segment body**, its superior corners
are the S1 endplate corners and its inferior corners lie at the S1–S2 junction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cdss.analysis.geometry import slip as slip_percent
from cdss.synth.family_b.geometry import BodyShape, rotate, unit

__all__ = ["LUMBAR", "SlipPlan", "Spine", "Vert", "build_spine", "sample_slip_plan"]

LUMBAR = ("L1", "L2", "L3", "L4", "L5")
ABOVE = ("T10", "T11", "T12")
SACRAL = ("S1", "S2", "S3", "S4", "S5")
#: vertebrae above L1 … L5 (cranial → caudal), then the sacrum
COLUMN = (*ABOVE, *LUMBAR)

# nominal adult morphometry (mm): endplate depth, transverse width, anterior height, posterior height
_MORPH = {
    "T10": (28.0, 33.0, 20.5, 22.0),
    "T11": (29.5, 35.0, 21.5, 23.0),
    "T12": (31.5, 38.0, 23.0, 24.5),
    "L1": (33.6, 41.9, 25.1, 26.6),
    "L2": (34.9, 44.6, 25.9, 27.2),
    "L3": (36.0, 46.4, 26.3, 26.8),
    "L4": (36.4, 48.8, 26.5, 25.8),
    "L5": (36.1, 51.1, 27.0, 23.4),
}
# disc below the vertebra: posterior height (mm), share of the lumbar disc lordosis (or fixed angle, deg)
_DISC_POST = {"T10": 4.0, "T11": 4.5, "T12": 5.0, "L1": 5.5, "L2": 6.0, "L3": 6.5, "L4": 7.0, "L5": 6.0}
_DISC_SHARE = {"L1": 0.08, "L2": 0.13, "L3": 0.19, "L4": 0.26, "L5": 0.34}
_DISC_FIXED_DEG = {"T10": -3.5, "T11": -3.0, "T12": -1.0}
# posterior elements: pedicle height, pedicle width (transverse), interpedicular distance,
# transverse-process length, spinous-process length (mm)
_ARCH = {
    "T10": (17.0, 6.0, 18.0, 14.0, 38.0),
    "T11": (17.5, 7.0, 19.0, 10.0, 34.0),
    "T12": (16.5, 7.5, 21.0, 6.0, 30.0),
    "L1": (15.5, 8.0, 22.0, 16.0, 30.0),
    "L2": (15.0, 8.5, 23.0, 20.0, 31.0),
    "L3": (14.5, 10.0, 24.0, 24.0, 31.0),
    "L4": (14.0, 11.5, 25.0, 21.0, 29.0),
    "L5": (14.0, 13.5, 27.0, 18.0, 25.0),
}
# sacral segments: superior-endplate depth, posterior height, kyphosis to the next segment (deg)
_SACRUM = {
    "S1": (41.0, 28.0, 4.0),
    "S2": (33.0, 24.0, 10.0),
    "S3": (26.0, 20.0, 14.0),
    "S4": (20.0, 16.0, 16.0),
}
_SACRUM_LAST = ("S5", 15.0, 12.0)
LEVELS = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")


@dataclass
class Vert:
    """One vertebra (or sacral segment) in the lateral patient frame.

    ``quad`` is the mid-sagittal body quadrilateral (SA, SP, IP, IA). ``lat`` is the coronal
    offset of the body centre (mm, + patient left), ``tilt`` the coronal tilt and ``rot`` the
    axial rotation (rad); ``width`` the transverse width (mm).
    """

    name: str
    quad: np.ndarray
    shape: BodyShape
    width: float
    depth: float
    lat: float = 0.0
    tilt: float = 0.0
    rot: float = 0.0
    density: float = 1.0
    t_end: tuple[float, float] = (0.7, 0.7)
    sclerosis: tuple[float, float] = (0.0, 0.0)
    osteophytes: list[tuple[int, float, float]] = field(default_factory=list)  # corner, size mm, angle
    arch: tuple[float, float, float, float, float] = (15.0, 9.0, 23.0, 18.0, 30.0)
    pars_defect: bool = False
    fused_below: bool = False
    transitional: bool = False

    @property
    def centre(self) -> np.ndarray:
        return self.quad.mean(axis=0)


@dataclass
class SlipPlan:
    """Signed target slip per level (percent, + anterolisthesis)."""

    slips: dict[str, float] = field(default_factory=dict)


@dataclass
class Spine:
    verts: dict[str, Vert]
    ss_deg: float
    pi_deg: float
    ll_deg: float
    hip: np.ndarray  # hip axis (mid-point of the femoral heads), lateral frame mm
    head_radius: float
    discs: dict[str, dict[str, float]]
    degeneration: float
    bone_density: float
    patient_rot: float  # axial rotation of the whole patient (rad)
    patient_tilt: float  # coronal obliquity of the whole patient (rad)
    lstv: str | None
    cobb_deg: float
    anomalies: list[str]
    plan: SlipPlan
    sex: str
    size: float  # patient size factor

    def corners(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        return {n: self.verts[n].quad.copy() for n in names}


def sample_slip_plan(rng: np.random.Generator, hard: bool) -> SlipPlan:
    """Slipped levels of one image.

    35 % of images have no slip. Otherwise 1 (68 %), 2 (26 %) or 3 (6 %) levels slip. A slipped
    level is a retrolisthesis in 20 % of cases (5.5 … 28 %, mostly L2–L4), else an
    anterolisthesis with a Meyerding band drawn as I 34 %, II 27 %, III 18 %, IV 14 %, V 7 %
    (III+ almost always at L5–S1 or L4–L5; V only at L5–S1). Anterolisthesis levels:
    L4–L5 41 %, L5–S1 39 %, L3–L4 13 %, L2–L3 5 %, L1–L2 2 %.
    """
    plan = SlipPlan()
    if rng.random() < (0.3 if hard else 0.35):
        return plan
    n = int(rng.choice([1, 2, 3], p=[0.68, 0.26, 0.06]))
    bands = [(5.8, 24.5), (25.6, 49.5), (50.6, 74.5), (75.6, 99.4), (100.8, 122.0)]
    for k in range(n):
        free = [lv for lv in LEVELS if lv not in plan.slips]
        if rng.random() < 0.2:
            w = np.array(
                [{"L1-L2": 0.1, "L2-L3": 0.3, "L3-L4": 0.3, "L4-L5": 0.2, "L5-S1": 0.1}[lv] for lv in free]
            )
            lv = str(rng.choice(free, p=w / w.sum()))
            plan.slips[lv] = -float(rng.uniform(5.8, 28.0 if rng.random() < 0.2 else 20.0))
            continue
        grade = (
            int(rng.choice(5, p=[0.34, 0.27, 0.18, 0.14, 0.07]))
            if k == 0
            else int(rng.choice(2, p=[0.75, 0.25]))
        )
        if grade >= 4:
            choices = {"L5-S1": 1.0}
        elif grade >= 2:
            choices = {"L5-S1": 0.75, "L4-L5": 0.22, "L3-L4": 0.03}
        else:
            choices = {"L4-L5": 0.41, "L5-S1": 0.39, "L3-L4": 0.13, "L2-L3": 0.05, "L1-L2": 0.02}
        opts = [lv for lv in choices if lv in free]
        if not opts:
            continue
        w = np.array([choices[lv] for lv in opts])
        lv = str(rng.choice(opts, p=w / w.sum()))
        plan.slips[lv] = float(rng.uniform(*bands[grade]))
    return plan


def _shape(rng: np.random.Generator, modes: np.ndarray, name: str, degeneration: float) -> BodyShape:
    """Body shape from the patient's shape modes (+ a little per-vertebra variation).

    Modes: 0 squareness of the corners, 1 endplate concavity, 2 waist (wall concavity).
    """
    z = modes + rng.normal(0, 0.35, size=modes.shape)
    thor = name.startswith("T")
    p_ant = float(np.clip(4.8 + 1.4 * z[0] - 1.2 * degeneration, 3.0, 9.0))
    p_post = float(np.clip(9.0 + 2.5 * z[0], 5.0, 16.0))
    conc = 0.09 + 0.035 * z[1]
    return BodyShape(
        p_ant=p_ant,
        p_post=p_post,
        c_sup=float(np.clip(conc * (0.8 if thor else 1.0), 0.0, 0.2)),
        c_inf=float(np.clip(conc * 1.25 + 0.01 * rng.normal(), 0.0, 0.24)),
        c_ant=float(np.clip(0.08 + 0.03 * z[2], 0.01, 0.16)),
        c_post=float(np.clip(0.02 + 0.012 * z[2], 0.0, 0.06)),
    )


def _normal_down(e: np.ndarray) -> np.ndarray:
    """Caudal normal of an endplate direction ``e`` (posterior → anterior)."""
    return np.array([-e[1], e[0]])


def build_spine(
    rng: np.random.Generator,
    *,
    age: float,
    sex: str,
    plan: SlipPlan,
    hard: bool,
    force_lstv: str | None = None,
) -> Spine:
    """Build one patient's spine (see the module docstring).

    Parameters
    ----------
    rng
        The image's random generator.
    age, sex
        Patient (degeneration, bone density, size).
    plan
        Target slips (percent) by level; realised exactly (to rounding) by translating the upper
        column along the lower vertebra's superior endplate.
    hard
        More pathology (scoliosis, patient rotation, fractures).
    force_lstv
        ``"lstv_sacralized_L5"`` / ``"lstv_lumbarized_S1"`` to force a transitional vertebra.
    """
    anomalies: list[str] = []
    size = float(np.clip(rng.normal(1.05 if sex == "M" else 0.95, 0.045), 0.82, 1.2))
    modes = rng.normal(0, 1, size=3)
    degeneration = float(np.clip((age - 28) / 52, 0, 1) * rng.uniform(0.3, 1.25))
    degeneration = float(np.clip(degeneration, 0, 1))
    osteo = max(0.0, (age - 50) / 40) * (1.5 if sex == "F" else 1.0)
    bone_density = float(np.clip(rng.normal(1.0, 0.11) - 0.35 * osteo, 0.45, 1.3))

    lstv = force_lstv
    if lstv is None:
        u = rng.random()
        p = 0.08 if hard else 0.04
        if u < p / 2:
            lstv = "lstv_sacralized_L5"
        elif u < p:
            lstv = "lstv_lumbarized_S1"
    if lstv:
        anomalies.append(lstv)
        if lstv == "lstv_sacralized_L5":
            plan.slips.pop("L5-S1", None)

    # --- pelvic parameters and lordosis
    pi = float(np.clip(rng.normal(52, 10), 30, 82))
    pt = float(np.clip(rng.normal(12 + 0.12 * max(age - 40, 0), 5.5), -2, 32))
    ss = float(np.clip(pi - pt, 18, 62))
    ll = float(np.clip(ss + rng.normal(13, 6) - 8 * degeneration, 20, 85))

    # disc degeneration per level (worst at L4-S1)
    weight = {"T10": 0.3, "T11": 0.3, "T12": 0.35, "L1": 0.45, "L2": 0.6, "L3": 0.8, "L4": 1.0, "L5": 1.0}
    discs: dict[str, dict[str, float]] = {}
    for n in COLUMN:
        d = float(np.clip(degeneration * weight[n] * rng.uniform(0.35, 1.35), 0, 1))
        below = "S1" if n == "L5" else COLUMN[COLUMN.index(n) + 1]
        level = f"{n}-{below}"
        s = plan.slips.get(level, 0.0)
        if abs(s) > 0:
            d = max(d, min(0.9, 0.25 + abs(s) / 110))
        discs[level] = {"degeneration": d, "vacuum": float(d > 0.6 and rng.random() < 0.3)}

    verts: dict[str, Vert] = {}
    # --- sacrum (S1 … S5), bottom of the column
    e = np.array([np.cos(np.deg2rad(ss)), np.sin(np.deg2rad(ss))])
    sp = np.zeros(2)
    seg_names = list(SACRAL)
    s_params = [*_SACRUM.values(), (_SACRUM_LAST[1], _SACRUM_LAST[2], 0.0)]
    if lstv == "lstv_lumbarized_S1":
        # S1 is a squared, lumbar-like segment above a rudimentary disc; the sacrum proper starts at S2
        s_params[0] = (38.0, 25.0, 6.0)
    sac_scale = size * rng.normal(1.0, 0.04)
    for i, name in enumerate(seg_names):
        depth, hpost, kyph = s_params[i]
        depth *= sac_scale
        hpost *= sac_scale
        nxt_depth = (s_params[i + 1][0] if i + 1 < len(s_params) else depth * 0.7 / sac_scale) * sac_scale
        kyph = kyph + rng.normal(0, 2.0)
        e_next = rotate(e, -np.deg2rad(kyph))
        mid_n = _normal_down(unit(e + e_next))
        sa = sp + e * depth
        ip = sp + mid_n * hpost
        ia = ip + e_next * nxt_depth * (1.0 if i < 4 else 0.75)
        q = np.array([sa, sp, ip, ia])
        shape = _shape(rng, modes, "S", degeneration)
        lumbarised = i == 0 and lstv == "lstv_lumbarized_S1"
        shape = BodyShape(
            p_ant=shape.p_ant,
            p_post=shape.p_post,
            c_sup=shape.c_sup if i == 0 else 0.0,
            c_inf=shape.c_inf if lumbarised else 0.0,
            c_ant=0.02,
            c_post=0.0,
            p_sup=None if i == 0 or (i == 1 and lstv == "lstv_lumbarized_S1") else 30.0,
            p_inf=None if lumbarised else 30.0,
        )
        verts[name] = Vert(
            name=name,
            quad=q,
            shape=shape,
            width=(50.0, 50.0, 42.0, 32.0, 24.0)[i] * sac_scale,
            depth=depth,
            density=bone_density * (0.9 - 0.05 * i),
            fused_below=not (i == 0 and lstv == "lstv_lumbarized_S1"),
            transitional=(i == 0 and lstv == "lstv_lumbarized_S1"),
        )
        gap = 0.0
        if i == 0 and lstv == "lstv_lumbarized_S1":
            gap = rng.uniform(3.0, 5.5)  # rudimentary S1-S2 disc
        sp = ip + mid_n * gap
        e = e_next
    if lstv == "lstv_lumbarized_S1":
        # the superior endplate of the transitional S1 is more horizontal than a normal sacrum
        pass

    # --- lumbar and lower thoracic column, built upwards with segmental angles
    wedges = {}
    dims = {}
    for n in COLUMN:
        d, w, ha, hp = _MORPH[n]
        f = size * rng.normal(1.0, 0.025)
        dims[n] = [
            d * f * rng.normal(1, 0.02),
            w * f,
            ha * f * rng.normal(1, 0.025),
            hp * f * rng.normal(1, 0.025),
        ]
    if lstv == "lstv_sacralized_L5":
        dims["L5"][2] = dims["L5"][3] = 0.5 * (dims["L5"][2] + dims["L5"][3]) * 0.93  # squared, lower
    fracture = None
    if rng.random() < (0.06 if hard else 0.025) + 0.05 * osteo:
        fracture = str(rng.choice(["T12", "L1", "L2", "L3"], p=[0.35, 0.35, 0.2, 0.1]))
        dims[fracture][2] *= rng.uniform(0.55, 0.82)  # anterior wedge compression
        anomalies.append(f"compression_fracture_{fracture}")
    for n in COLUMN:
        d, _, ha, hp = dims[n]
        wedges[n] = float(np.degrees(np.arctan2(ha - hp, d)))
    disc_budget = ll - sum(wedges[n] for n in LUMBAR)
    high_roll = 0.0
    s5 = plan.slips.get("L5-S1", 0.0)
    if s5 > 40:
        high_roll = (s5 - 40) / 60 * rng.uniform(12, 28)  # lumbosacral kyphosis of high grades
        disc_budget += 0.6 * high_roll  # compensatory hyperlordosis above
    disc_angle = {}
    for n in COLUMN:
        if n in _DISC_SHARE:
            disc_angle[n] = disc_budget * _DISC_SHARE[n] * rng.normal(1.0, 0.12)
        else:
            disc_angle[n] = _DISC_FIXED_DEG[n] + rng.normal(0, 1.5)
    if lstv == "lstv_sacralized_L5":
        disc_angle["L5"] = rng.uniform(4, 9)

    below = "S1"
    for n in reversed(COLUMN):
        below_v = verts[below]
        l_sa, l_sp = below_v.quad[0], below_v.quad[1]
        el = unit(l_sa - l_sp)
        level = f"{n}-{below}"
        deg = discs[level]["degeneration"]
        dp = _DISC_POST[n] * size * rng.normal(1.0, 0.08) * (1 - 0.6 * deg)
        delta = np.deg2rad(disc_angle[n] * (1 - 0.5 * deg))
        if lstv == "lstv_sacralized_L5" and n == "L5":
            dp = rng.uniform(1.2, 2.5)
        d, w, ha, hp = dims[n]
        eu_inf = rotate(el, -delta)
        n_mid = _normal_down(unit(el + eu_inf))
        jitter = rng.normal(0, 0.012) * np.hypot(*(l_sa - l_sp))
        ip = l_sp - n_mid * dp + el * jitter
        ia = ip + eu_inf * d
        om = np.deg2rad(wedges[n])
        eu_sup = rotate(eu_inf, -om)
        n_b = _normal_down(unit(eu_inf + eu_sup))
        spc = ip - n_b * hp
        sac = spc + eu_sup * d * rng.normal(1.0, 0.015)
        q = np.array([sac, spc, ip, ia])
        verts[n] = Vert(
            name=n,
            quad=q,
            shape=_shape(rng, modes, n, degeneration),
            width=w,
            depth=d,
            density=bone_density * rng.normal(1.0, 0.04),
            arch=tuple(np.array(_ARCH[n]) * size * rng.normal(1, 0.05, size=5)),
            transitional=(n == "L5" and lstv == "lstv_sacralized_L5"),
        )
        if fracture == n:
            sh = verts[n].shape
            verts[n].shape = BodyShape(
                sh.p_ant, sh.p_post, sh.c_sup + 0.06, sh.c_inf + 0.04, sh.c_ant, sh.c_post
            )
        below = n
    verts = {k: verts[k] for k in (*COLUMN, *SACRAL)}

    # --- slips: from the bottom level up, move the column above along the lower endplate
    order = [*reversed(COLUMN)]
    for i, n in enumerate(order):
        lower = "S1" if n == "L5" else order[i - 1]
        level = f"{n}-{lower}"
        target = plan.slips.get(level)
        if target is None:
            continue
        above = order[i:]
        low = verts[lower].quad
        el = unit(low[0] - low[1])
        pivot = low[0].copy()
        tilt = 0.0
        if target > 35:
            tilt = np.deg2rad(
                (target - 35) / 65 * (high_roll if level == "L5-S1" else 8.0) * rng.uniform(0.7, 1.1)
            )
        for a in above:
            verts[a].quad = rotate(verts[a].quad - pivot, tilt) + pivot
        cur, _, w = slip_percent(verts[n].quad, low)
        shift = el * (target - cur) / 100.0 * w
        drop = np.zeros(2)
        if target > 100:  # spondyloptosis: L5 drops in front of the sacrum
            drop = _normal_down(el) * rng.uniform(0.2, 0.5) * np.ptp(verts[n].quad[:, 1])
        for a in above:
            verts[a].quad = verts[a].quad + shift + drop
        if target > 25 and n in LUMBAR:
            verts[n].pars_defect = True  # isthmic spondylolisthesis
    if not plan.slips and rng.random() < 0.03:
        verts["L5"].pars_defect = True  # spondylolysis without slip
        anomalies.append("spondylolysis_L5")

    # --- degeneration at the endplates: sclerosis, thicker endplates, osteophytes
    for i, n in enumerate((*COLUMN, "S1")):
        v = verts[n]
        up = f"{COLUMN[i - 1]}-{n}" if 0 < i <= len(COLUMN) else None
        dn = f"{n}-{'S1' if n == 'L5' else COLUMN[i + 1]}" if i < len(COLUMN) else None
        d_up = discs[up]["degeneration"] if up in discs else 0.0
        d_dn = discs[dn]["degeneration"] if dn in discs else 0.0
        cort = 0.55 + 0.25 * bone_density
        v.t_end = (cort + 1.6 * d_up**1.5, cort + 1.6 * d_dn**1.5)
        scl = max(d_up, d_dn)
        if scl > 0.45:
            v.sclerosis = (rng.uniform(2.5, 6.0), 0.9 * (scl - 0.45) / 0.55 * rng.uniform(0.5, 1.3))
        if n != "S1":
            for corner, dd in ((0, d_up), (3, d_dn)):
                if dd > 0.3 and rng.random() < dd * 1.1:
                    v.osteophytes.append((corner, rng.uniform(1.5, 3 + 7 * dd), rng.uniform(0.3, 0.9)))
            for corner, dd in ((1, d_up), (2, d_dn)):
                if dd > 0.55 and rng.random() < 0.35 * dd:
                    v.osteophytes.append((corner, rng.uniform(1.0, 3.0), rng.uniform(0.2, 0.6)))

    # --- coronal curve (scoliosis) and patient rotation
    cobb = 0.0
    if rng.random() < (0.3 if hard else 0.12):
        cobb = float(rng.uniform(10, 45 if hard else 32))
        anomalies.append("scoliosis")
    names = [*COLUMN, "S1"]
    ys = np.array([verts[n].centre[1] for n in names])
    y0, y1 = float(ys.min()), float(ys.max())
    span = max(y1 - y0, 1.0)
    apex = rng.uniform(0.3, 0.7)
    gamma = np.log(0.5) / np.log(apex)  # moves the apex of a sin(pi t) curve to `apex`
    side = float(rng.choice([-1.0, 1.0]))
    amp = side * np.tan(np.deg2rad(cobb / 2)) * span / np.pi
    for n, y in zip(names, ys, strict=True):
        tn = float(np.clip((y - y0) / span, 1e-3, 1.0))
        w = tn**gamma
        slope = amp * np.pi * np.cos(np.pi * w) * gamma * tn ** (gamma - 1) / span
        verts[n].lat = float(amp * np.sin(np.pi * w))
        verts[n].tilt = float(np.arctan(slope) + np.deg2rad(rng.normal(0, 1.2)))
        verts[n].rot = float(
            0.35 * side * np.deg2rad(cobb) * np.sin(np.pi * w) + np.deg2rad(rng.normal(0, 1.5))
        )
    patient_rot = np.deg2rad(rng.normal(0, 6.5 if hard else 3.0))
    patient_tilt = np.deg2rad(rng.normal(0, 3.5 if hard else 1.5))

    # --- hip axis from pelvic incidence: angle PI between the S1 endplate normal and the line
    # from the endplate midpoint to the hip axis
    s1 = verts["S1"].quad
    if lstv == "lstv_lumbarized_S1":
        s1 = verts["S2"].quad
    mid = (s1[0] + s1[1]) / 2
    n_in = _normal_down(unit(s1[0] - s1[1]))
    hip = mid + rotate(n_in, -np.deg2rad(pi)) * rng.normal(108, 8) * size
    return Spine(
        verts=verts,
        ss_deg=ss,
        pi_deg=pi,
        ll_deg=ll,
        hip=hip,
        head_radius=float(
            rng.normal(24.5 if sex == "M" else 22.0, 1.2) * size / (1.05 if sex == "M" else 0.95)
        ),
        discs=discs,
        degeneration=degeneration,
        bone_density=bone_density,
        patient_rot=float(patient_rot),
        patient_tilt=float(patient_tilt),
        lstv=lstv,
        cobb_deg=cobb,
        anomalies=anomalies,
        plan=plan,
        sex=sex,
        size=size,
    )
