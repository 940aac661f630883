"""Family B lateral lumbar view: the spine model of :mod:`.spine` projected along the transverse axis.

Paired structures (pedicles, facets, transverse processes, ribs, iliac wings, femoral heads,
screws) are drawn once per side at their lateral distance ``z`` from the mid-sagittal plane:
a point at ``z`` (towards the source) is magnified by ``SOD / (SOD - z)`` about the central
ray and shifted by the patient's axial rotation and coronal obliquity, so the two sides split
the way they do on real films (far iliac crest higher and larger, femoral heads apart, doubled
posterior walls). Vertebral bodies are drawn as a near and a far half with the same split plus
their own scoliotic tilt and rotation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdss.synth.family_b.geometry import spline, unit
from cdss.synth.family_b.render import Capsule, Film, fractal_noise
from cdss.synth.family_b.spine import COLUMN, SACRAL, Spine, Vert

__all__ = ["Implants", "LateralGeometry", "render_lateral", "sample_implants"]

MU_SOFT = 0.0205  # 1/mm, muscle-equivalent soft tissue
MU_FAT = 0.0180


@dataclass
class Implants:
    """Instrumentation: fused levels (pedicle screws + rods), cages, cement."""

    screws: list[str] = field(default_factory=list)  # instrumented vertebrae
    cages: list[str] = field(default_factory=list)  # levels with an interbody cage
    cement: list[str] = field(default_factory=list)  # vertebroplasty
    metal: str = "titanium"

    def describe(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.screws:
            out.append({"type": "pedicle_screws", "vertebrae": list(self.screws), "material": self.metal})
            out.append(
                {"type": "rods", "from": self.screws[0], "to": self.screws[-1], "material": self.metal}
            )
        for lv in self.cages:
            out.append({"type": "interbody_cage", "level": lv})
        for v in self.cement:
            out.append({"type": "vertebroplasty_cement", "vertebra": v})
        return out


def sample_implants(rng: np.random.Generator, hard: bool, age: float) -> Implants:
    """Pedicle screws and rods in 8 % (hard 30 %) of images, mostly L4–S1, 1–3 levels."""
    imp = Implants()
    if rng.random() < (0.3 if hard else 0.08):
        chain = ["L2", "L3", "L4", "L5", "S1"]
        nlev = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        low = int(rng.choice([4, 3, 2], p=[0.55, 0.35, 0.1]))  # index of the lowest instrumented body
        low = max(low, nlev)
        imp.screws = chain[low - nlev : low + 1]
        imp.metal = "titanium" if rng.random() < 0.8 else "cobalt_chrome"
        for a, b in zip(imp.screws[:-1], imp.screws[1:], strict=True):
            if rng.random() < 0.4:
                imp.cages.append(f"{a}-{b}")
    if age > 60 and rng.random() < (0.06 if hard else 0.02):
        imp.cement.append(str(rng.choice(["T12", "L1", "L2"])))
    return imp


@dataclass
class LateralGeometry:
    """Where the beam is: central ray (aim, mm) and source-to-midplane distance."""

    aim: np.ndarray
    sod: float


def _frame(v: Vert) -> tuple[np.ndarray, np.ndarray, float]:
    """Anterior unit, caudal unit and posterior height of a body."""
    sa, sp, ip, _ = v.quad
    return unit(sa - sp), unit(ip - sp), float(np.hypot(*(ip - sp)))


class _Projector:
    def __init__(self, spine: Spine, geo: LateralGeometry) -> None:
        self.spine = spine
        self.geo = geo

    def side(self, pts: np.ndarray, z: float | np.ndarray, v: Vert | None = None) -> np.ndarray:
        """Project mid-plane points of a structure at lateral distance ``z`` (mm, + towards the source)."""
        p = np.atleast_2d(np.asarray(pts, float)).copy()
        z = np.asarray(z, float).reshape(-1, 1) if np.ndim(z) else np.full((len(p), 1), float(z))
        rot, tilt = self.spine.patient_rot, self.spine.patient_tilt
        if v is not None:
            ea, nd, _ = _frame(v)
            p = p + z * (np.tan(v.tilt) * nd + np.sin(v.rot) * ea)
        p = p + z * np.array([-np.sin(rot), np.tan(tilt)])
        aim = self.geo.aim
        return aim + (p - aim) * (self.geo.sod / (self.geo.sod - z))


def _local(v: Vert, a: float, b: float) -> np.ndarray:
    """Point ``a`` mm posterior of the posterior wall and ``b`` mm below the superior endplate."""
    ea, nd, _ = _frame(v)
    return v.quad[1] - ea * a + nd * b


def _arch_capsules(v: Vert, rng: np.random.Generator) -> tuple[list[Capsule], list[Capsule], list]:
    """Posterior elements of a lumbar/thoracic vertebra in its frame.

    Returns (paired capsules, midline capsules, transverse-process ellipsoids).
    """
    _, _, hp = _frame(v)
    ped_h, ped_w, _, tp_len, sp_len = v.arch
    thor = v.name.startswith("T")
    j = rng.normal(1.0, 0.05)

    def cap(
        a0: float,
        b0: float,
        a1: float,
        b1: float,
        r0: float,
        r1: float,
        depth: float = 1.0,
        shell: float = 1.1,
    ):
        pa, pb = _local(v, a0, b0), _local(v, a1, b1)
        return Capsule(tuple(pa), tuple(pb), r0, r1, depth, shell)

    r_ped = 0.42 * ped_h * j
    paired = [cap(-3, 0.33 * hp, 10 * j, 0.36 * hp, r_ped, r_ped * 0.9, ped_w / (2 * r_ped) + 0.15, 1.3)]
    if thor:
        paired += [
            cap(10, 0.25 * hp, 12, -0.32 * hp, 4.0, 3.0, 1.0),  # superior articular process
            cap(14, 0.55 * hp, 15, 1.15 * hp, 4.2, 3.3, 1.0),  # inferior articular process
            cap(11, 0.4 * hp, 18, 0.75 * hp, 4.5, 4.0, 1.1),  # lamina
        ]
        mid = [
            cap(18, 0.6 * hp, 18 + 0.55 * sp_len, 0.85 * hp + 0.35 * sp_len, 0.25 * hp, 0.2 * hp, 0.45, 1.0),
            cap(
                18 + 0.55 * sp_len,
                0.85 * hp + 0.35 * sp_len,
                18 + 0.95 * sp_len,
                0.95 * hp + 0.6 * sp_len,
                0.2 * hp,
                0.16 * hp,
                0.5,
                1.0,
            ),
        ]
    else:
        paired += [
            cap(10, 0.32 * hp, 14 * j, -0.32 * hp, 4.8, 3.4, 1.15),  # superior articular process
            cap(15, 0.62 * hp, 18 * j, 1.12 * hp, 4.8, 3.6, 1.1),  # inferior articular process
            cap(14, 0.42 * hp, 21, 0.78 * hp, 4.2, 3.8, 1.2),  # lamina
        ]
        if v.pars_defect:
            paired += [
                cap(10, 0.36 * hp, 11.8, 0.47 * hp, 3.6, 3.4, 1.0),
                cap(14.2, 0.58 * hp, 15.5, 0.64 * hp, 3.5, 3.5),
            ]
        else:
            paired.append(cap(10, 0.36 * hp, 15.5, 0.64 * hp, 3.6, 3.5, 1.0))  # pars interarticularis
        mid = [
            cap(19, 0.5 * hp, 19 + 0.55 * sp_len, 0.56 * hp, 0.27 * hp, 0.22 * hp, 0.5, 1.0),
            cap(19 + 0.55 * sp_len, 0.56 * hp, 19 + sp_len, 0.66 * hp, 0.22 * hp, 0.3 * hp, 0.5, 1.2),
        ]
    tps = [(_local(v, 7, 0.33 * hp), (5.5 if not thor else 6.5, 4.5 if not thor else 6.0), tp_len * 0.9)]
    return paired, mid, tps


def render_lateral(
    film: Film, spine: Spine, geo: LateralGeometry, implants: Implants, rng: np.random.Generator
) -> dict[str, Any]:
    """Draw the lateral lumbar view on ``film``; returns extra ground truth (what was drawn)."""
    proj = _Projector(spine, geo)
    bd = spine.bone_density
    verts = spine.verts
    drawn: dict[str, Any] = {"osteophytes": 0, "vacuum_discs": [], "ribs": [], "lung_base": False}
    mu_c = 0.026 * (0.75 + 0.25 * bd)

    _soft_tissue(film, spine, rng, drawn)

    # --- pelvis behind everything else: iliac wings, femoral heads (both sides)
    _pelvis(film, spine, proj, rng)

    # --- vertebral bodies (two half-slices each); the sacral segments below S1 are fused
    for name, v in verts.items():
        slices = _slices(proj, v)
        sacral = name in SACRAL
        fused = sacral and name != "S1"
        mu_t = (0.0125 if not sacral else 0.0095) * v.density
        t_end = v.t_end
        if fused:
            t_end = (0.05, 0.05)
        elif name == "S1":
            t_end = (v.t_end[0], 0.6 if v.transitional else 0.05)
        film.body(
            v.quad,
            v.shape,
            width_mm=v.width,
            slices=slices,
            mu_cortex=mu_t * 1.1 if fused else mu_c,
            mu_trab=mu_t,
            t_end=t_end,
            t_wall=0.12,
            t_shell=0.25 + 0.2 * bd,
            k_front=2.2,
            k_back=4.5 if not sacral else 3.0,
            texture=0.07 if bd > 0.75 else 0.12,
            sclerosis=v.sclerosis,
        )
        if name in implants.cement:
            pass
        # osteophytes: a ridge around the rim, seen as a beak at the corner
        ea, nd, _ = _frame(v)
        for corner, size, ang in v.osteophytes:
            p = v.quad[corner]
            toward_disc = nd if corner in (2, 3) else -nd
            out = ea if corner in (0, 3) else -ea
            d = unit(out * np.cos(ang * np.pi / 2) + toward_disc * np.sin(ang * np.pi / 2))
            r = 0.3 * size + 0.9
            film.capsules(
                [Capsule(tuple(p - d * 2.0), tuple(p + d * size), r, 0.6, 0.22 * v.width / r, 0.7)],
                mu_cortex=mu_c * 0.9,
                mu_trab=0.008,
                texture=0.0,
            )
            drawn["osteophytes"] += 1

    # --- discs: vacuum phenomenon in degenerated discs
    names = [*COLUMN, "S1"]
    for up, lo in itertools.pairwise(names):
        info = spine.discs.get(f"{up}-{lo}")
        if info and info["vacuum"]:
            a = verts[up].quad
            b = verts[lo].quad
            gap = np.array(
                [(a[2] + b[1]) / 2, ((a[2] + a[3]) / 2 + (b[0] + b[1]) / 2) / 2, (a[3] + b[0]) / 2]
            )
            film.line(
                spline(gap, 6),
                width_mm=rng.uniform(0.8, 1.8),
                value=-MU_SOFT * verts[lo].width * 0.35,
                blur_mm=0.3,
            )
            drawn["vacuum_discs"].append(f"{up}-{lo}")

    # --- posterior elements
    for name in COLUMN:
        v = verts[name]
        paired, mid, tps = _arch_capsules(v, rng)
        ipd = v.arch[2]
        for z in (ipd / 2 + 4, -(ipd / 2 + 4)):
            moved = [_move_capsule(c, proj, z, v) for c in paired]
            film.capsules(moved, mu_cortex=mu_c, mu_trab=0.013 * bd, texture=0.15)
        film.capsules(mid, mu_cortex=mu_c * 0.9, mu_trab=0.012 * bd, texture=0.15)
        for centre, axes, depth in tps:
            for z in (ipd / 2 + v.arch[3] / 2, -(ipd / 2 + v.arch[3] / 2)):
                cz = proj.side(centre, z, v)[0]
                film.ellipsoid(cz, axes, 0.3, depth=depth, mu_cortex=0.012, mu_trab=0.004 * bd, shell=1.2)
        if v.transitional:  # sacralised L5: broad transverse processes articulating with the ala
            c0 = _local(v, 6, 0.8 * _frame(v)[2])
            for z in (38.0, -38.0):
                film.ellipsoid(
                    proj.side(c0, z, v)[0],
                    (13.0, 11.0),
                    0.5,
                    depth=30.0,
                    mu_cortex=0.014,
                    mu_trab=0.006,
                    shell=1.6,
                )
    _sacrum(film, spine, proj, rng, mu_c)
    _ribs(film, spine, proj, rng, mu_c, drawn)
    _implants(film, spine, proj, implants, rng)
    _calcification(film, spine, rng, drawn)
    return drawn


def _slices(proj: _Projector, v: Vert) -> list[tuple[np.ndarray, float]]:
    """Near, middle and far thirds of a body: offsets (mm) from divergence, tilt and rotation."""
    c = v.centre
    return [
        (proj.side(c, z, v)[0] - c, w) for z, w in ((0.38 * v.width, 0.3), (0.0, 0.4), (-0.38 * v.width, 0.3))
    ]


def _move_capsule(c: Capsule, proj: _Projector, z: float, v: Vert) -> Capsule:
    a, b = proj.side(np.array([c.a, c.b]), z, v)
    return Capsule(tuple(a), tuple(b), c.ra, c.rb, c.depth, c.shell, c.thread)


def _sacrum(film: Film, spine: Spine, proj: _Projector, rng: np.random.Generator, mu_c: float) -> None:
    verts = spine.verts
    bd = spine.bone_density
    s1 = verts["S1"]
    ea, nd, hp = _frame(s1)
    # superior articular processes of S1 (facet with L5)
    for z in (16.0, -16.0):
        cap = Capsule(tuple(_local(s1, 9, 0.3 * hp)), tuple(_local(s1, 12, -0.3 * hp)), 5.0, 3.6, 1.1, 1.1)
        film.capsules([_move_capsule(cap, proj, z, s1)], mu_cortex=mu_c * 0.85, mu_trab=0.006 * bd)
    # posterior sacral plate (fused laminae) with the canal in front of it and a median crest
    front, back, crest = [], [], []
    for i, n in enumerate(SACRAL[:4]):
        v = verts[n]
        e, d_, h = _frame(v)
        canal = (13.0 - 2.0 * i) * spine.size
        thick = (11.0 - 1.5 * i) * spine.size
        for b in (0.1, 0.7):
            front.append(v.quad[1] - e * canal + d_ * b * h)
            back.append(v.quad[1] - e * (canal + thick) + d_ * b * h)
        crest.append(v.quad[1] - e * (canal + thick + 4) + d_ * 0.4 * h)
    plate = np.vstack([np.array(front), np.array(back)[::-1]])
    film.slab(
        spline(plate, 4, closed=True),
        thickness=34.0 * spine.size,
        mu=0.0075 * bd,
        taper_mm=5.0,
        rim_mu=0.012,
        rim_mm=1.2,
    )
    for p in crest[:3]:
        film.ellipsoid(p, (5.0, 6.0), 0.0, depth=8.0, mu_cortex=0.02, mu_trab=0.008, shell=1.2)
    # sacral ala: broad lateral masses over the upper sacrum; the alar line is their upper edge
    s2 = verts["S2"].quad
    ala = np.array(
        [
            s1.quad[0] - ea * 4 + nd * 3,
            (s1.quad[0] + s1.quad[1]) / 2 + nd * 2.5,
            s1.quad[1] - ea * 6 + nd * 4,
            s1.quad[2] - ea * 10,
            s2[2] - ea * 2 + nd * 4,
            (s2[2] + s2[3]) / 2,
            s2[0] + nd * 2,
        ]
    )
    for z in (0.0,):
        film.slab(
            proj.side(spline(ala, 4, closed=True), z),
            thickness=70.0 * spine.size,
            mu=0.0045 * bd,
            taper_mm=9.0,
            rim_mu=0.006,
            rim_mm=1.5,
        )
    # anterior sacral cortex, residual S1-S2 disc line, last segment and coccyx
    anterior = np.array([verts[n].quad[0] for n in SACRAL] + [verts["S5"].quad[3]])
    film.line(spline(anterior, 5), width_mm=0.8, value=0.22 * spine.size, blur_mm=0.3)
    if not s1.transitional and rng.random() < 0.6:
        q = s1.quad
        film.line(
            spline(np.array([q[2], (q[2] + q[3]) / 2 + nd * 0.8, q[3]]), 5),
            width_mm=1.0,
            value=-0.006 * s1.width,
            blur_mm=0.4,
        )
    s5 = verts["S5"]
    e5, n5, _ = _frame(s5)
    tip = (s5.quad[2] + s5.quad[3]) / 2
    d = unit(n5 + 0.6 * e5)
    for i in range(int(rng.integers(2, 5))):
        ctr = tip + d * (6 + 9 * i)
        d = unit(d + e5 * 0.25)
        film.ellipsoid(
            ctr,
            (6.0 - i, 4.0 - 0.6 * i),
            float(np.arctan2(d[1], d[0])),
            depth=14.0 - 2 * i,
            mu_cortex=0.02,
            mu_trab=0.007,
            shell=1.0,
        )


def _pelvis(film: Film, spine: Spine, proj: _Projector, rng: np.random.Generator) -> None:
    verts = spine.verts
    k = spine.size
    h = spine.hip
    r = spine.head_radius
    s2 = verts["S2"]
    e2, _, _ = _frame(s2)
    psis = s2.quad[1] - e2 * (30 * k) + np.array([0.0, -6.0])
    l4, l5 = verts["L4"].quad, verts["L5"].quad
    y_crest = float((l4[2, 1] + l4[3, 1] + l5[0, 1] + l5[1, 1]) / 4 + rng.normal(0, 8))
    asis = h + np.array([48.0, -78.0]) * k
    x_mid = 0.5 * (psis[0] + asis[0])
    wing = np.array(
        [
            asis,
            [asis[0] - 12 * k, y_crest + 22 * k],
            [x_mid + 15 * k, y_crest + 2],
            [x_mid - 25 * k, y_crest],
            [psis[0] + 18 * k, y_crest + 18 * k],
            psis,
            psis + np.array([6.0, 26.0]) * k,  # posterior inferior iliac spine
            h + np.array([-42.0, -20.0]) * k,  # greater sciatic notch
            h + np.array([-38.0, 18.0]) * k,  # ischial spine
            h + np.array([-30.0, 62.0]) * k,  # ischium
            h + np.array([0.0, 58.0]) * k,
            h + np.array([30.0, 34.0]) * k,  # pubic ramus
            h + np.array([40.0, -36.0]) * k,  # anterior inferior iliac spine
        ]
    )
    outline = spline(wing, 5, closed=True)
    arcuate = spline(
        np.array(
            [
                (s2.quad[0] + s2.quad[3]) / 2 - e2 * 8,
                h + np.array([-20.0, -r - 14.0]) * k,
                h + np.array([18.0, -r - 6.0]) * k,
                h + np.array([52.0, 8.0]) * k,
            ]
        ),
        6,
    )
    for z in (108.0 * k, -108.0 * k):
        film.slab(
            proj.side(outline, z),
            thickness=12.0,
            mu=0.009 * spine.bone_density,
            taper_mm=7.0,
            rim_mu=0.012,
            rim_mm=1.6,
        )
        film.line(proj.side(arcuate, z), width_mm=1.6, value=0.05, blur_mm=0.5)
    for z in (88.0 * k, -88.0 * k):
        m = proj.geo.sod / (proj.geo.sod - z)
        c = proj.side(h, z)[0]
        # acetabular roof: a dense arc above the head
        ang = np.linspace(-2.7, -0.25, 16)
        roof = c + np.stack([np.cos(ang), np.sin(ang)], axis=1) * (r + 2.5) * m
        film.line(roof, width_mm=2.2, value=0.09, blur_mm=0.5)
        film.capsules(
            [Capsule(tuple(c), tuple(c), r * m, r * m, 1.0, 1.6)],
            mu_cortex=0.026,
            mu_trab=0.0075 * spine.bone_density,
            texture=0.15,
        )
        cz = proj.side(h, z * 1.35)[0]
        film.capsules(
            [
                Capsule(
                    tuple(c + np.array([4.0, 6.0])),
                    tuple(cz + np.array([6.0, 26.0]) * k),
                    15 * k,
                    16 * k,
                    1.4,
                    2.5,
                ),
                Capsule(
                    tuple(cz + np.array([-6.0, 32.0]) * k),
                    tuple(cz + np.array([6.0, 280.0]) * k),
                    15 * k,
                    13 * k,
                    1.0,
                    5.0,
                ),
            ],
            mu_cortex=0.026,
            mu_trab=0.005,
            texture=0.1,
        )
        film.ellipsoid(
            cz + np.array([-14.0, 30.0]) * k,
            (20 * k, 17 * k),
            0.4,
            depth=30.0,
            mu_cortex=0.012,
            mu_trab=0.006,
            shell=1.5,
        )


def _ribs(
    film: Film, spine: Spine, proj: _Projector, rng: np.random.Generator, mu_c: float, drawn: dict
) -> None:
    shapes = {
        "T12": np.array([(0, 0), (22, 8), (42, 22), (56, 42), (62, 64)], float),
        "T11": np.array([(0, 0), (24, 4), (48, 16), (60, 38), (56, 66), (38, 96)], float),
        "T10": np.array([(0, 0), (25, 2), (54, 14), (70, 40), (66, 80), (40, 118), (4, 146)], float),
    }
    for name in ("T10", "T11", "T12"):
        v = spine.verts[name]
        ea, nd, hp = _frame(v)
        head = _local(v, -1.0, 0.2 * hp)
        length = rng.normal(1.0, 0.12) * spine.size * (rng.uniform(0.55, 1.0) if name == "T12" else 1.0)
        pts = shapes[name] * length
        path = head - np.outer(pts[:, 0], ea) + np.outer(pts[:, 1], nd)
        curve = spline(path, 4)
        t = np.linspace(0, 1, len(curve))
        for sgn in (1.0, -1.0):
            z = sgn * (18 + 105 * np.sin(t * np.pi / 2))
            c = proj.side(curve, z, v)
            rad = 5.6 * spine.size * (1 - 0.25 * t)
            caps = [
                Capsule(tuple(c[i]), tuple(c[i + 1]), rad[i], rad[i + 1], 0.75, 1.3)
                for i in range(len(c) - 1)
            ]
            film.capsules(caps, mu_cortex=mu_c * 0.85, mu_trab=0.0045, texture=0.1)
        drawn["ribs"].append(name)


def _implants(film: Film, spine: Spine, proj: _Projector, imp: Implants, rng: np.random.Generator) -> None:
    if not imp.screws and not imp.cement:
        return
    mu = 0.13 if imp.metal == "titanium" else 0.42
    heads: dict[float, list[np.ndarray]] = {24.0: [], -24.0: []}
    for name in imp.screws:
        v = spine.verts[name]
        ea, nd, hp = _frame(v)
        entry = _local(v, 16.0, 0.36 * hp)
        tip = entry + ea * (16.0 + 0.72 * v.depth) + nd * rng.normal(1.0, 1.0)
        for z0 in heads:
            e_p, t_p = proj.side(np.array([entry, tip]), np.array([z0, z0 * 0.3]), v)
            head_p = proj.side(entry - ea * 11.0, z0, v)[0]
            film.capsules(
                [Capsule(tuple(e_p), tuple(t_p), 3.3, 2.6, 1.0, 0.0, thread=0.75)],
                mu_cortex=0.0,
                mu_trab=mu,
                texture=0.0,
            )
            film.capsules(
                [Capsule(tuple(head_p), tuple(e_p), 6.2, 5.0, 1.0, 0.0)],
                mu_cortex=0.0,
                mu_trab=mu * 0.9,
                texture=0.0,
            )
            heads[z0].append(head_p)
    for pts in heads.values():
        if len(pts) >= 2:
            p = np.array(pts)
            d0 = unit(p[0] - p[1]) * 7.0
            d1 = unit(p[-1] - p[-2]) * 7.0
            rod = spline(np.vstack([p[0] + d0, p, p[-1] + d1]), 5)
            film.capsules(
                [Capsule(tuple(rod[i]), tuple(rod[i + 1]), 2.8, 2.8, 1.0, 0.0) for i in range(len(rod) - 1)],
                mu_cortex=0.0,
                mu_trab=mu,
                texture=0.0,
            )
    for level in imp.cages:
        up, lo = level.split("-")
        a, b = spine.verts[up].quad, spine.verts[lo].quad
        c = (a[2] + a[3] + b[0] + b[1]) / 4
        e = unit((a[3] - a[2]) + (b[0] - b[1]))
        film.ellipsoid(
            c,
            (13.0, 4.5),
            float(np.arctan2(e[1], e[0])),
            depth=12.0,
            mu_cortex=0.004,
            mu_trab=0.002,
            shell=1.0,
            texture=0.0,
        )
        for f in (-11.0, 0.0, 11.0):
            p = c + e * f
            pin = np.array([0.0, 2.5])
            film.capsules(
                [Capsule(tuple(p - pin), tuple(p + pin), 0.6, 0.6, 1.0, 0.0)],
                mu_cortex=0.0,
                mu_trab=0.35,
                texture=0.0,
            )
    for name in imp.cement:
        v = spine.verts[name]
        c = v.centre + rng.normal(0, 2, 2)
        for _ in range(5):
            film.ellipsoid(
                c + rng.normal(0, 4, 2),
                (rng.uniform(4, 9), rng.uniform(3, 7)),
                rng.uniform(0, np.pi),
                depth=18.0,
                mu_cortex=0.0,
                mu_trab=0.022,
                shell=0.5,
                texture=0.0,
            )


def _calcification(film: Film, spine: Spine, rng: np.random.Generator, drawn: dict) -> None:
    age_like = spine.degeneration
    drawn["aortic_calcification"] = False
    if age_like < 0.4 or rng.random() > 0.6:
        return
    drawn["aortic_calcification"] = True
    for n in ("L1", "L2", "L3", "L4"):
        if rng.random() < 0.55:
            v = spine.verts[n]
            ea, nd, _ = _frame(v)
            a0 = (v.quad[0] + v.quad[3]) / 2 + ea * rng.uniform(6, 22) + nd * rng.uniform(-10, 10)
            seg = np.array([a0, a0 + nd * rng.uniform(4, 16) + ea * rng.normal(0, 1.5)])
            film.line(seg, width_mm=rng.uniform(0.8, 2.0), value=rng.uniform(0.08, 0.25), blur_mm=0.3)


def _soft_tissue(film: Film, spine: Spine, rng: np.random.Generator, drawn: dict) -> None:
    """Trunk (superelliptic cross-section, fat layer, buttocks), lung bases, bowel gas."""
    verts = spine.verts
    names = ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1", "S3"]
    post = np.array([verts[n].quad[1] for n in names])
    ant = np.array([verts[n].quad[0] for n in names])
    cy = np.polyfit(post[:, 1], post[:, 0], 2)
    ca = np.polyfit(ant[:, 1], ant[:, 0], 2)
    y_lo, y_hi = float(post[:, 1].min()), float(post[:, 1].max())
    bmi = float(np.clip(rng.normal(0.5, 0.22), 0.05, 1.0))
    back = rng.uniform(95, 120) + 50 * bmi  # skin behind the posterior wall of the bodies
    belly = rng.uniform(70, 110) + 140 * bmi  # skin in front of the anterior wall
    half_w = rng.uniform(115, 140) + 70 * bmi
    fat = 6 + 30 * bmi
    p_back = rng.uniform(3.2, 5.0)
    p_front = rng.uniform(1.8, 2.6)
    crest = float(spine.hip[1] - 75 * spine.size)
    noise = fractal_field(rng, film)

    def clamp_y(y: np.ndarray) -> np.ndarray:
        mid, half = (y_lo + y_hi) / 2, (y_hi - y_lo) / 2 * 1.2
        return mid + half * np.tanh((y - mid) / half)

    def chord(
        x: np.ndarray, ctr: np.ndarray, a_post: np.ndarray, a_ant: np.ndarray, b: np.ndarray
    ) -> np.ndarray:
        # widest at the mid-coronal plane (just in front of the bodies), rounder towards the belly
        front = x > ctr
        u = np.where(front, (x - ctr) / a_ant, (ctr - x) / a_post)
        pe = np.where(front, p_front, p_back)
        u = np.clip(u, 0, 1)
        return 2 * b * (1 - u**pe) ** (1 / pe)

    def trunk(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        yc = clamp_y(y)
        xp = np.polyval(cy, yc) - back - 30 * _sig((y - crest) / 40.0)  # buttocks
        xa = np.polyval(ca, yc) + belly + 15 * np.sin((y - y_lo) / 140.0)
        ctr = np.polyval(ca, yc) + 5.0
        a_post, a_ant = np.maximum(ctr - xp, 10), np.maximum(xa - ctr, 10)
        b = half_w * (1 + 0.16 * _sig((y - crest) / 50.0))
        outer = chord(x, ctr, a_post, a_ant, b)
        inner = chord(x, ctr, np.maximum(a_post - fat, 5), np.maximum(a_ant - fat, 5), np.maximum(b - fat, 5))
        soft = MU_FAT * (outer - inner) + MU_SOFT * inner
        return (soft * (1 + 0.008 * noise)).astype(np.float32)

    film.soft_field(trunk)
    x_lr, y_lr = film.lr_grid_mm()
    inside_trunk = np.clip(trunk(x_lr, y_lr) / (MU_SOFT * 2 * half_w * 0.5), 0, 1)
    # lung bases behind and above the diaphragm (posterior costophrenic recess reaches L1)
    if rng.random() < 0.55:
        drawn["lung_base"] = True
        l1 = verts["L1"].quad
        x_s = float(l1[:, 0].mean())
        y_dome = float(verts["T11"].centre[1] + rng.uniform(-25, 15))
        y_recess = float(l1[:, 1].mean() + rng.uniform(-10, 20))
        depth = rng.uniform(100, 190)

        def lungs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            t = np.clip((x_s + 40 - x) / 120.0, -0.6, 1.0)  # 1 far posterior
            yd = y_dome + (y_recess - y_dome) * np.clip(t, 0, 1) ** 1.5 - 10 * np.clip(-t, 0, 1)
            inside = _sig((yd - y) / 12.0)
            return (-MU_SOFT * depth * inside * 0.8 * inside_trunk).astype(np.float32)

        film.soft_field(lungs)
    # bowel gas: colon segments with haustra and small-bowel loops, mostly in front of the spine
    l3 = verts["L3"]
    ea, _, _ = _frame(l3)
    base = l3.centre
    n_seg = int(rng.integers(0, 6))
    for _ in range(n_seg):
        ctr = base + ea * rng.uniform(5, 120) + np.array([0.0, rng.uniform(-120, 150)])
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(25, 80)
        rad = rng.uniform(7, 20)
        t = np.linspace(-1, 1, 24)
        d = np.array([np.cos(ang), np.sin(ang)])
        nrm = np.array([-d[1], d[0]])
        bend = rng.normal(0, 0.25)
        cl = ctr + np.outer(t * length / 2, d) + np.outer(bend * length * (t**2 - 0.3), nrm)
        wob = 1 + 0.18 * np.abs(np.sin(t * length / rng.uniform(7, 12) * np.pi))
        poly = np.vstack([cl + nrm * (rad * wob)[:, None], (cl - nrm * (rad * wob)[:, None])[::-1]])
        film.soft_blob(poly, -MU_SOFT * rad * 1.3 * rng.uniform(0.5, 1.0), blur_mm=2.0)
        # stool mottle: small gas bubbles inside
        for _ in range(int(rng.integers(0, 14))):
            p = cl[int(rng.integers(0, len(cl)))] + rng.normal(0, rad * 0.4, 2)
            rr = rng.uniform(1.2, 3.5)
            film.ellipsoid(
                p,
                (rr, rr * rng.uniform(0.6, 1.0)),
                0.0,
                depth=rr * 2,
                mu_cortex=-MU_SOFT,
                mu_trab=-MU_SOFT,
                shell=0.2,
                texture=0.0,
            )
    for _ in range(int(rng.integers(0, 9))):
        ctr = base + ea * rng.uniform(20, 140) + np.array([0.0, rng.uniform(-60, 170)])
        ax = (rng.uniform(5, 14), rng.uniform(4, 10))
        th = np.linspace(0, 2 * np.pi, 18, endpoint=False)
        blob = ctr + np.stack([ax[0] * np.cos(th), ax[1] * np.sin(th)], axis=1) * rng.uniform(
            0.85, 1.15, (18, 1)
        )
        film.soft_blob(blob, -MU_SOFT * min(ax) * 1.5, blur_mm=1.5)
    drawn["bowel_gas_segments"] = n_seg


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def fractal_field(rng: np.random.Generator, film: Film) -> np.ndarray:
    return fractal_noise(rng, film.lr_shape, beta=2.4)
