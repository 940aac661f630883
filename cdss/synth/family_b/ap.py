"""Family B AP lumbar view: the same spine model (:mod:`.spine`) seen along the antero-posterior axis.

Coronal frame: millimetres, ``x`` towards the patient's left (the image right on a standard AP
display), ``y`` caudal — the same ``y`` as the lateral frame. Each body's coronal quadrilateral
is centred on its coronal offset, as tall as the mid-coronal section of its lateral quadrilateral
and tilted by its coronal tilt; it is drawn as an anterior and a posterior half whose offsets come
from the endplate's sagittal inclination (lordosis makes the anterior and posterior rims project
apart: elliptical, doubled endplates), beam divergence and axial rotation. Pedicles are tubes
seen end-on (cortical rings, "owl eyes") that move with the rotation, spinous processes project
over the lower body, transverse processes reach sideways, ribs leave T11/T12.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NotRequired, TypedDict

import numpy as np

from cdss.synth.family_b.geometry import BodyShape, rotate, spline, unit
from cdss.synth.family_b.lateral import MU_FAT, MU_SOFT, fractal_field
from cdss.synth.family_b.render import Capsule, Film
from cdss.synth.family_b.spine import COLUMN, SACRAL, Spine, Vert

__all__ = ["APExtra", "APGeometry", "ap_quads", "render_ap"]


class APExtra(TypedDict):
    """What :func:`render_ap` returns: outlines (mm) for the ground truth, by vertebra in
    ``per_vertebra`` (``pedicles``, ``spinous``, ``transverse``)."""

    pedicles: list[np.ndarray]
    spinous: list[np.ndarray]
    transverse: list[np.ndarray]
    per_vertebra: NotRequired[dict[str, dict[str, list[np.ndarray]]]]


@dataclass
class APGeometry:
    aim: np.ndarray  # central ray on the mid-coronal plane (mm)
    sod: float


def _sagittal_tilt(v: Vert) -> float:
    """Mean inclination of the body's endplates from horizontal (rad, anterior end down positive)."""
    sa, sp, ip, ia = v.quad
    e = unit((sa - sp) + (ia - ip))
    return float(np.arctan2(e[1], e[0]))


def ap_quads(spine: Spine) -> dict[str, np.ndarray]:
    """Coronal body quadrilaterals in the *internal* order (superior-right, superior-left,
    inferior-left, inferior-right; patient sides) used for rendering with :meth:`Film.body`.

    Returned in the patient frame (mm). The ground-truth order by image side is derived after
    the camera (see the generator).
    """
    out = {}
    for n, v in spine.verts.items():
        sa, sp, ip, ia = v.quad
        y_sup = float((sa[1] + sp[1]) / 2)
        y_inf = float((ia[1] + ip[1]) / 2)
        h = y_inf - y_sup
        w_sup = v.width * (0.97 if n not in SACRAL else 1.0)
        w_inf = v.width * (1.02 if n not in SACRAL else 0.9)
        local = np.array([[w_sup / 2, -h / 2], [-w_sup / 2, -h / 2], [-w_inf / 2, h / 2], [w_inf / 2, h / 2]])
        out[n] = rotate(local, v.tilt) + np.array([v.lat, (y_sup + y_inf) / 2])
    return out


def _ap_shape(v: Vert) -> BodyShape:
    sh = v.shape
    sym = 0.5 * (sh.p_ant + sh.p_post)
    return BodyShape(
        p_ant=sym,
        p_post=sym,
        c_sup=0.5 * sh.c_sup,
        c_inf=0.5 * sh.c_inf,
        c_ant=0.06,
        c_post=0.06,
        p_sup=sh.p_sup,
        p_inf=sh.p_inf,
    )


def render_ap(film: Film, spine: Spine, geo: APGeometry, rng: np.random.Generator) -> APExtra:
    """Draw the AP view; returns pedicle / spinous / transverse outlines (mm) for the ground truth."""
    quads = ap_quads(spine)
    bd = spine.bone_density
    mu_c = 0.026 * (0.75 + 0.25 * bd)
    extra: APExtra = {"pedicles": [], "spinous": [], "transverse": []}
    per_vertebra: dict[str, dict[str, list[np.ndarray]]] = {}
    _soft_tissue(film, spine, quads, rng)
    _pelvis(film, spine, quads, geo, rng)
    for n, v in spine.verts.items():
        q = quads[n]
        c = q.mean(axis=0)
        tau = 0.5 * _sagittal_tilt(v)  # supine: the lordosis flattens against the table
        slices = []
        for z, w in ((0.38 * v.depth, 0.3), (0.0, 0.4), (-0.38 * v.depth, 0.3)):
            d = np.array([z * np.sin(v.rot + spine.patient_rot), z * np.tan(tau)])
            slices.append((d + (c - geo.aim) * (z / (geo.sod - z)), w))
        sacral = n in SACRAL
        fused = sacral and n != "S1"
        mu_t = 0.0125 * v.density
        film.body(
            q,
            _ap_shape(v),
            width_mm=v.depth,
            slices=slices,
            mu_cortex=mu_t * 1.1 if fused else mu_c,
            mu_trab=mu_t,
            t_end=(0.05, 0.05) if fused else (v.t_end[0], 0.05 if n == "S1" else v.t_end[1]),
            t_wall=0.15,
            t_shell=0.3 + 0.2 * bd,
            k_front=2.4,
            k_back=2.4,
            texture=0.1,
            sclerosis=v.sclerosis,
        )
        if n in COLUMN:
            per_vertebra[n] = _posterior(film, spine, v, q, mu_c, rng)
    extra["per_vertebra"] = per_vertebra
    return extra


def _posterior(
    film: Film, spine: Spine, v: Vert, q: np.ndarray, mu_c: float, rng: np.random.Generator
) -> dict[str, list[np.ndarray]]:
    bd = spine.bone_density
    ped_h, ped_w, ipd, tp_len, sp_len = v.arch
    c = q.mean(axis=0)
    up = unit(q[1] - q[2])  # superior (towards the top of the body)
    right = unit(q[0] - q[1])  # towards the patient's left (+x)
    h = float(np.hypot(*(q[1] - q[2])))
    rot = v.rot + spine.patient_rot
    thor = v.name.startswith("T")

    def at(xl: float, yd: float, depth_behind: float) -> np.ndarray:
        """Point ``xl`` mm to the patient's left, ``yd`` mm below the body centre, ``depth_behind``
        mm behind the body centre (shifted by the axial rotation)."""
        return c + right * (xl - depth_behind * np.sin(rot)) - up * yd

    out: dict[str, list[np.ndarray]] = {"pedicles": [], "spinous": [], "transverse": []}
    tilt = float(np.arctan2(right[1], right[0]))
    d_ped = v.depth / 2 + 6
    for sgn in (-1.0, 1.0):
        pc = at(sgn * (ipd / 2 + ped_w / 2), -0.2 * h, d_ped)
        axes = (ped_w / 2 * max(np.cos(rot), 0.4), ped_h / 2 * 0.92)
        film.ellipsoid(
            pc, axes, tilt, depth=11.0, mu_cortex=mu_c * 0.75, mu_trab=0.005 * bd, shell=1.3, tube=True
        )
        th = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        out["pedicles"].append(
            pc + rotate(np.stack([axes[0] * np.cos(th), axes[1] * np.sin(th)], axis=1), tilt)
        )
        # transverse process
        tl = tp_len * rng.normal(1.0, 0.06)
        base = at(sgn * (ipd / 2 + ped_w), -0.15 * h, d_ped + 4)
        tip = base + right * sgn * tl - up * (0.05 * tl if not thor else -0.1 * tl)
        r_tp = 4.8 if not thor else 5.5
        film.capsules(
            [Capsule(tuple(base), tuple(tip), r_tp, r_tp * 0.7, 0.9, 1.1)],
            mu_cortex=mu_c * 0.8,
            mu_trab=0.006 * bd,
        )
        out["transverse"].append(np.array([base, tip]))
        # articular processes (facet columns) and lamina
        sap = Capsule(
            tuple(at(sgn * (ipd / 2 + 1), -0.5 * h - 5, d_ped + 10)),
            tuple(at(sgn * (ipd / 2 + 1), -0.05 * h, d_ped + 10)),
            4.2,
            4.0,
            1.3,
            1.1,
        )
        iap = Capsule(
            tuple(at(sgn * (ipd / 2 - 2), 0.25 * h, d_ped + 14)),
            tuple(at(sgn * (ipd / 2 - 3), 0.5 * h + 8, d_ped + 14)),
            4.2,
            3.6,
            1.3,
            1.1,
        )
        lam = Capsule(
            tuple(at(sgn * (ipd / 2), 0.1 * h, d_ped + 12)),
            tuple(at(0.0, 0.3 * h, d_ped + 18)),
            4.5,
            4.0,
            1.0,
            1.0,
        )
        film.capsules([sap, iap, lam], mu_cortex=mu_c * 0.8, mu_trab=0.006 * bd)
    # spinous process: a teardrop over the lower body
    spc = at(0.0, 0.35 * h if not thor else 0.55 * h, d_ped + 20 + sp_len / 2)
    axes = (4.5 * spine.size, (9.0 if not thor else 11.0) * spine.size)
    film.ellipsoid(spc, axes, tilt, depth=sp_len * 0.8, mu_cortex=mu_c * 0.7, mu_trab=0.005 * bd, shell=1.5)
    th = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    out["spinous"].append(spc + rotate(np.stack([axes[0] * np.cos(th), axes[1] * np.sin(th)], axis=1), tilt))
    # ribs from T10 … T12
    if thor:
        length = {"T10": 1.25, "T11": 1.0, "T12": rng.uniform(0.45, 0.8)}[v.name] * spine.size
        for sgn in (-1.0, 1.0):
            pts = np.array(
                [(v.width / 2 + 6, -0.1 * h), (45, 4), (85, 25), (118, 60), (135, 100)]
            ) * np.array([1.0, 1.0])
            pts[1:] *= length
            path = np.array([at(sgn * x, y, d_ped) for x, y in pts])
            curve = spline(path, 4)
            rad = np.linspace(5.8, 4.2, len(curve)) * spine.size
            caps = [
                Capsule(tuple(curve[i]), tuple(curve[i + 1]), rad[i], rad[i + 1], 0.8, 1.3)
                for i in range(len(curve) - 1)
            ]
            film.capsules(caps, mu_cortex=mu_c * 0.85, mu_trab=0.0045)
    return out


def _pelvis(
    film: Film, spine: Spine, quads: dict[str, np.ndarray], geo: APGeometry, rng: np.random.Generator
) -> None:
    k = spine.size
    bd = spine.bone_density
    s1 = quads["S1"]
    top = float(s1[:, 1].min())
    y2 = float(quads["S2"].mean(axis=0)[1])
    y4 = float(quads["S4"].mean(axis=0)[1])
    xc = float(s1.mean(axis=0)[0])
    sw = 56.0 * k
    sac = np.array(
        [
            [xc - sw, top + 2],
            [xc - 0.4 * sw, top - 4],
            [xc + 0.4 * sw, top - 4],
            [xc + sw, top + 2],
            [xc + 0.85 * sw, y2 + 10],
            [xc + 0.32 * sw, y4 + 14],
            [xc - 0.32 * sw, y4 + 14],
            [xc - 0.85 * sw, y2 + 10],
        ]
    )
    film.slab(
        spline(sac, 4, closed=True),
        thickness=28.0 * k,
        mu=0.0055 * bd,
        taper_mm=18.0,
        rim_mu=0.0,
        rim_mm=1.5,
    )
    # sacral foramina: lucent ovals with a thin rim
    for i in range(4):
        y = top + (22 + 19 * i) * k
        for sgn in (-1.0, 1.0):
            x = xc + sgn * (22 - 2.5 * i) * k
            film.ellipsoid(
                np.array([x, y]),
                (4.5 * k, 3.8 * k),
                0.0,
                depth=18.0,
                mu_cortex=0.006,
                mu_trab=-0.009,
                shell=1.0,
                texture=0.0,
            )
    l4, l5 = quads["L4"], quads["L5"]
    y_crest = float((l4[:, 1].max() + l5[:, 1].min()) / 2 + rng.normal(0, 8))
    y_hip = float(spine.hip[1])
    for sgn in (-1.0, 1.0):
        sj = np.array([[xc + sgn * 0.95 * sw, top + 4], [xc + sgn * 0.72 * sw, y2 + 18]])
        wing = np.array(
            [
                sj[0],
                [xc + sgn * 62 * k, y_crest + 4],
                [xc + sgn * 105 * k, y_crest - 8],
                [xc + sgn * 138 * k, y_crest + 6],
                [xc + sgn * 148 * k, y_crest + 30],
                [xc + sgn * 132 * k, y_hip - 62],
                [xc + sgn * 118 * k, y_hip - 34],
                [xc + sgn * 78 * k, y_hip - 30],
                [xc + sgn * 66 * k, y2 + 30],
                sj[1],
            ]
        )
        film.slab(
            spline(wing, 5, closed=True),
            thickness=9.0,
            mu=0.011 * bd,
            taper_mm=7.0,
            rim_mu=0.012,
            rim_mm=1.4,
            texture=0.25,
        )
        crest = spline(wing[1:5], 6)
        film.line(crest, width_mm=4.5, value=0.07, blur_mm=1.2)  # thick iliac crest
        film.line(sj, width_mm=2.0, value=-0.06, blur_mm=0.6)  # sacro-iliac joint space
        film.line(sj + np.array([sgn * 2.5, 0.0]), width_mm=1.5, value=0.08, blur_mm=0.5)
        # pelvic brim (arcuate line) and acetabulum
        brim = spline(
            np.array(
                [
                    sj[1],
                    [xc + sgn * 70 * k, y_hip - 45],
                    [xc + sgn * 72 * k, y_hip - 5],
                    [xc + sgn * 40 * k, y_hip + 30],
                ]
            ),
            6,
        )
        film.line(brim, width_mm=5.0, value=0.06, blur_mm=1.5)  # pelvic brim: a thick bony pillar
        hc = np.array([xc + sgn * 92 * k, y_hip])
        r = spine.head_radius
        film.capsules([Capsule(tuple(hc), tuple(hc), r, r, 1.0, 1.6)], mu_cortex=0.026, mu_trab=0.0075 * bd)
        neck_end = hc + np.array([sgn * 38, 30]) * k
        film.capsules(
            [
                Capsule(tuple(hc), tuple(neck_end), 15 * k, 17 * k, 1.0, 2.5),
                Capsule(
                    tuple(neck_end + np.array([0.0, -10.0])),
                    tuple(neck_end + np.array([-sgn * 8.0, 220.0]) * k),
                    16 * k,
                    14 * k,
                    1.0,
                    5.0,
                ),
            ],
            mu_cortex=0.026,
            mu_trab=0.005,
        )
        ang = np.linspace(-2.6, -0.4, 14) if sgn > 0 else np.linspace(-2.7, -0.55, 14) + 0.0
        roof = hc + np.stack([np.cos(ang) * sgn, np.sin(ang)], axis=1) * (r + 3)
        film.line(roof, width_mm=2.2, value=0.08, blur_mm=0.5)


def _soft_tissue(film: Film, spine: Spine, quads: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    bmi = float(np.clip(rng.normal(0.5, 0.22), 0.05, 1.0))
    half_w = rng.uniform(120, 145) + 60 * bmi
    depth = rng.uniform(170, 210) + 110 * bmi
    fat = 6 + 28 * bmi
    xc = float(quads["L3"].mean(axis=0)[0]) + rng.normal(0, 6)
    y_l1 = float(quads["L1"].mean(axis=0)[1])
    y_s1 = float(quads["S1"].mean(axis=0)[1])
    noise = fractal_field(rng, film)

    def field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        pelvis = 1.0 + 0.18 * np.clip((y - y_s1 + 60) / 90, 0, 1)
        hw = half_w * pelvis
        u = np.clip(np.abs(x - xc) / hw, 0, 1)
        outer = depth * (1 - u**2.6) ** (1 / 2.6)
        ui = np.clip(np.abs(x - xc) / np.maximum(hw - fat, 5), 0, 1)
        inner = np.maximum(depth - 2 * fat, 10) * (1 - ui**2.6) ** (1 / 2.6)
        # psoas: a muscle wedge from L1 widening to the pelvis, bordered by fat
        frac = np.clip((y - y_l1) / max(y_s1 - y_l1, 1), 0, 1)
        edge = 22 + 48 * frac
        ps = (
            np.clip(1 - np.abs(np.abs(x - xc) - edge * 0.6) / (edge * 0.42), 0, 1) ** 0.7
            * (y > y_l1 - 10)
            * 20
        )
        soft = MU_FAT * (outer - inner) + MU_SOFT * inner + (MU_SOFT - MU_FAT) * ps
        return (soft * (1 + 0.008 * noise)).astype(np.float32)

    film.soft_field(field)
    # bowel gas across the abdomen (colon frame and small-bowel loops)
    for _ in range(int(rng.integers(2, 12))):
        ctr = np.array([xc + rng.uniform(-130, 130), rng.uniform(y_l1 - 40, y_s1 + 60)])
        ax = (rng.uniform(8, 30), rng.uniform(6, 16))
        th = np.linspace(0, 2 * np.pi, 18, endpoint=False)
        blob = ctr + rotate(
            np.stack([ax[0] * np.cos(th), ax[1] * np.sin(th)], axis=1) * rng.uniform(0.85, 1.15, (18, 1)),
            rng.uniform(0, np.pi),
        )
        film.soft_blob(blob, -MU_SOFT * min(ax) * rng.uniform(0.8, 1.5), blur_mm=2.0)
    for sgn in (-1.0, 1.0):  # kidneys: a faint density in their fat capsule
        if rng.random() < 0.7:
            kc = np.array([xc + sgn * rng.uniform(55, 75), y_l1 + rng.uniform(5, 30) + (8 if sgn < 0 else 0)])
            kid = kc + rotate(
                np.stack(
                    [np.cos(np.linspace(0, 2 * np.pi, 20)) * 28, np.sin(np.linspace(0, 2 * np.pi, 20)) * 55],
                    axis=1,
                ),
                sgn * 0.25,
            )
            film.soft_blob(kid, 0.05, blur_mm=3.0)
