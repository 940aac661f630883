"""Family B "other" radiographs for a view classifier: chest PA/lateral, abdomen AP, pelvis AP,
hip AP, thoracic spine lateral, knee AP, hand PA.

Built from the same primitives as the spine views (capsules, ellipsoids, plates, analytic
bodies). The abdomen and pelvis reuse the full spine model seen AP (they *contain* a lumbar
spine but are not lumbar examinations); the thoracic spine lateral stacks kyphotic thoracic
bodies with ribs over the lungs. Frame: mm, ``x`` to the image right (patient's left for frontal
views, anterior for laterals), ``y`` caudal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cdss.synth.family_b import ap as ap_view
from cdss.synth.family_b.geometry import BodyShape, rotate, spline, unit
from cdss.synth.family_b.lateral import (
    MU_FAT,
    MU_SOFT,
    LateralGeometry,
    _arch_capsules,
    _move_capsule,
    _Projector,
    _slices,
)
from cdss.synth.family_b.render import Capsule, Film
from cdss.synth.family_b.spine import SlipPlan, Vert, build_spine

__all__ = ["PARTS", "OtherScene", "build_other"]

PARTS = ("chest", "chest_lateral", "abdomen", "pelvis", "hip", "tspine", "knee", "hand")
_WEIGHTS = (3.0, 1.5, 2.0, 2.0, 1.2, 1.5, 1.0, 1.0)

Draw = Callable[[Film, np.ndarray, float, np.random.Generator], None]


@dataclass
class OtherScene:
    part: str
    projection: str
    side: str | None
    field_mm: tuple[float, float]
    aspect: tuple[float, float]
    region: np.ndarray  # points (mm) the exposure is centred on / must contain
    draw: Draw
    anterior_x: bool  # lateral views: x is anterior


def _ellipse(c: tuple[float, float], a: float, b: float, ang: float = 0.0, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return rotate(np.stack([a * np.cos(t), b * np.sin(t)], axis=1), ang) + np.asarray(c, float)


def _tube(
    film: Film,
    path: np.ndarray,
    r0: float,
    r1: float,
    *,
    depth: float = 1.0,
    shell: float = 1.2,
    mu_c: float = 0.024,
    mu_t: float = 0.005,
) -> None:
    curve = spline(np.asarray(path, float), 4)
    rad = np.linspace(r0, r1, len(curve))
    caps = [
        Capsule(tuple(curve[i]), tuple(curve[i + 1]), rad[i], rad[i + 1], depth, shell)
        for i in range(len(curve) - 1)
    ]
    film.capsules(caps, mu_cortex=mu_c, mu_trab=mu_t)


def _cylinder_field(cx: float, half_w: float, depth: float, fat: float, p: float = 2.4):
    def field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = np.clip(np.abs(x - cx) / half_w, 0, 1)
        outer = depth * (1 - u**p) ** (1 / p)
        ui = np.clip(np.abs(x - cx) / max(half_w - fat, 5), 0, 1)
        inner = max(depth - 2 * fat, 5) * (1 - ui**p) ** (1 / p)
        return (MU_FAT * (outer - inner) + MU_SOFT * inner).astype(np.float32)

    return field


# ------------------------------------------------------------------------------ chest PA
def _chest(rng: np.random.Generator, sex: str) -> OtherScene:
    k = rng.normal(1.0, 0.06) * (1.05 if sex == "M" else 0.95)
    dome_r = rng.uniform(225, 255) * k
    dome_l = dome_r + rng.uniform(5, 20) * k

    def lung(sgn: float, dome: float) -> np.ndarray:
        pts = np.array(
            [
                (22, 0),
                (35, -28),
                (62, -38),
                (100, -20),
                (132, 30),
                (148, 110),
                (152, 190),
                (150, dome + 12),
                (120, dome - 10),
                (80, dome - 28),
                (45, dome - 35),
                (28, 150),
                (24, 60),
            ]
        )
        if sgn > 0:  # the heart pushes the left lung's medial border out
            pts[9:12, 0] += np.array([22, 38, 42])
        return spline(pts * np.array([sgn, 1.0]) * k, 5, closed=True)

    def draw(film: Film, aim: np.ndarray, sod: float, rng: np.random.Generator) -> None:
        hw = rng.uniform(150, 185) * k
        depth = rng.uniform(190, 250) * k
        film.soft_field(_cylinder_field(0.0, hw, depth, rng.uniform(8, 25)))
        film.soft_field(
            lambda x, y: (
                MU_SOFT * 60 * np.clip((-y - 10) / 40, 0, 1) * np.clip(1 - np.abs(x) / (hw + 60), 0, 1)
            ).astype(np.float32)
        )
        for sgn, dome in ((-1.0, dome_r), (1.0, dome_l)):
            film.soft_blob(lung(sgn, dome), -MU_SOFT * depth * 0.62, blur_mm=6.0)
        film.soft_blob(_ellipse((28 * k, 175 * k), 62 * k, 58 * k, 0.5), MU_SOFT * 35, blur_mm=10)  # heart
        if sex == "F":
            for sgn in (-1.0, 1.0):
                film.soft_blob(_ellipse((sgn * 95 * k, 215 * k), 60 * k, 45 * k), MU_SOFT * 30, blur_mm=12)
        # thoracic spine behind the mediastinum (faint)
        y = -30.0
        for i in range(12):
            h = (14 + 0.8 * i) * k
            w = (26 + 1.6 * i) * k
            q = np.array([[w / 2, y], [-w / 2, y], [-w / 2, y + h], [w / 2, y + h]])
            film.body(
                q,
                BodyShape(6, 6, 0.03, 0.03, 0.05, 0.05),
                width_mm=(20 + 1.2 * i) * k,
                slices=[(np.zeros(2), 1.0)],
                mu_cortex=0.02,
                mu_trab=0.012,
                texture=0.08,
            )
            # posterior ribs from each level
            for sgn in (-1.0, 1.0):
                path = np.array(
                    [(18, y + 4), (60, y - 6), (112, y + 10), (145, y + 40), (152, y + 70)]
                ) * np.array([sgn, 1.0])
                path[:, 0] *= k
                _tube(film, path, 5.0 * k, 4.0 * k, depth=0.7, shell=1.3, mu_c=0.022, mu_t=0.004)
                if i < 9:  # anterior rib (fainter, runs down towards the sternum)
                    ant = np.array([(150, y + 70), (120, y + 95), (80, y + 110), (45, y + 118)]) * np.array(
                        [sgn, 1.0]
                    )
                    ant[:, 0] *= k
                    _tube(film, ant, 4.0 * k, 3.2 * k, depth=0.6, shell=1.0, mu_c=0.014, mu_t=0.003)
            y += h + (3 + 0.3 * i) * k
        for sgn in (-1.0, 1.0):
            _tube(
                film,
                np.array([(20, -12), (70, -22), (125, -20), (160, -38)]) * np.array([sgn * k, k]),
                6.5 * k,
                5.5 * k,
                shell=1.6,
            )  # clavicle
            scap = np.array([(100, -30), (165, -40), (160, 40), (130, 140), (110, 60)]) * np.array(
                [sgn * k, k]
            )
            film.slab(spline(scap, 4, closed=True), thickness=8.0, mu=0.012, taper_mm=6.0, rim_mu=0.02)
            hh = np.array([sgn * 195 * k, -20 * k])
            film.capsules(
                [Capsule(tuple(hh), tuple(hh + np.array([sgn * 8, 150]) * k), 24 * k, 15 * k, 1.0, 2.5)],
                mu_cortex=0.026,
                mu_trab=0.007,
            )

    region = np.array(
        [[-160 * k, -45 * k], [160 * k, -45 * k], [160 * k, (dome_l + 20) * k], [-160 * k, (dome_l + 20) * k]]
    )
    return OtherScene("chest", "PA", None, (350.0, 430.0), (0.85, 1.05), region, draw, False)


def _chest_lateral(rng: np.random.Generator, sex: str) -> OtherScene:
    k = rng.normal(1.0, 0.06)

    def draw(film: Film, aim: np.ndarray, sod: float, rng: np.random.Generator) -> None:
        film.soft_field(_cylinder_field(0.0, rng.uniform(120, 150) * k, rng.uniform(280, 340) * k, 15))
        lung = spline(
            np.array(
                [
                    (-95, 10),
                    (-70, -60),
                    (0, -90),
                    (60, -60),
                    (95, 30),
                    (100, 140),
                    (70, 200),
                    (0, 230),
                    (-80, 250),
                    (-110, 200),
                    (-105, 100),
                ]
            )
            * k,
            5,
            closed=True,
        )
        film.soft_blob(lung, -MU_SOFT * 190 * k, blur_mm=8.0)
        film.soft_blob(
            _ellipse((45 * k, 160 * k), 55 * k, 60 * k, 0.4), MU_SOFT * 60 * k, blur_mm=10
        )  # heart
        # thoracic spine posteriorly, sternum anteriorly
        y = -70.0 * k
        for i in range(11):
            h = (16 + 0.9 * i) * k
            d = (22 + 1.0 * i) * k
            x0 = -95 * k + 8 * np.sin(i / 10 * np.pi) * k
            q = np.array([[x0 + d, y], [x0, y + 1], [x0, y + h + 1], [x0 + d, y + h]])
            film.body(
                q,
                BodyShape(6, 9, 0.05, 0.06, 0.04, 0.02),
                width_mm=(26 + 1.5 * i) * k,
                slices=[(np.array([0.5, 1.0]), 0.5), (np.array([-0.5, -1.0]), 0.5)],
                mu_cortex=0.026,
                mu_trab=0.016,
                texture=0.09,
            )
            for sgn in (1.0, -1.0):
                path = np.array(
                    [(x0 - 5, y + 5), (x0 - 35, y + 15), (x0 - 40, y + 60), (x0 + 40, y + 120)]
                ) + sgn * np.array([4.0, 6.0])
                _tube(film, path, 5.0 * k, 4.0 * k, depth=0.6, shell=1.2, mu_c=0.016, mu_t=0.003)
            y += h + 4 * k
        stern = np.array([(95, -70), (105, -72), (112, 120), (100, 125)]) * k
        film.slab(stern, thickness=18.0, mu=0.012, taper_mm=3.0, rim_mu=0.02)
        for sgn in (-1.0, 1.0):  # humeri of the raised arms
            film.capsules(
                [
                    Capsule(
                        (60 * k, -140 * k + sgn * 10), (90 * k, 40 * k + sgn * 10), 13 * k, 11 * k, 1.0, 3.5
                    )
                ],
                mu_cortex=0.024,
                mu_trab=0.005,
            )

    region = np.array([[-120 * k, -90 * k], [120 * k, -90 * k], [120 * k, 250 * k], [-120 * k, 250 * k]])
    return OtherScene("chest", "LATERAL", None, (350.0, 430.0), (0.85, 1.0), region, draw, True)


# ------------------------------------------------------------------------------ spine-model views
def _spine_ap_scene(rng: np.random.Generator, sex: str, age: int, part: str) -> OtherScene:
    spine = build_spine(rng, age=age, sex=sex, plan=SlipPlan(), hard=False)
    quads = ap_view.ap_quads(spine)
    hip = spine.hip[1]
    if part == "abdomen":
        region = np.vstack([quads["T12"], quads["S3"], [[-150, hip - 20], [150, hip - 20]]])
        field, aspect, proj = (380.0, 440.0), (0.78, 1.25), "AP"
    else:
        region = np.array([[-170.0, hip - 120], [170.0, hip - 120], [170.0, hip + 70], [-170.0, hip + 70]])
        field, aspect, proj = (260.0, 340.0), (1.15, 1.35), "AP"

    def draw(film: Film, aim: np.ndarray, sod: float, rng: np.random.Generator) -> None:
        ap_view.render_ap(film, spine, ap_view.APGeometry(aim, sod), rng)
        _pelvic_ring(film, spine, quads)
        if part == "abdomen":  # more gas, liver
            for _ in range(int(rng.integers(4, 14))):
                c = np.array([rng.uniform(-150, 150), rng.uniform(quads["L1"][0, 1], hip)])
                film.soft_blob(
                    _ellipse(tuple(c), rng.uniform(10, 35), rng.uniform(8, 20), rng.uniform(0, 3)),
                    -MU_SOFT * rng.uniform(8, 20),
                    blur_mm=2.5,
                )
            film.soft_blob(
                _ellipse((-95.0, float(quads["T12"][0, 1]) + 10), 110, 70, 0.3), MU_SOFT * 15, blur_mm=15
            )

    return OtherScene(part, proj, None, field, aspect, region, draw, False)


def _pelvic_ring(film: Film, spine, quads: dict[str, np.ndarray]) -> None:
    k = spine.size
    hip = float(spine.hip[1])
    for sgn in (-1.0, 1.0):
        sup_ramus = np.array([(sgn * 78 * k, hip - 4), (sgn * 45 * k, hip + 20), (sgn * 12 * k, hip + 38)])
        inf_ramus = np.array(
            [
                (sgn * 12 * k, hip + 62),
                (sgn * 45 * k, hip + 78),
                (sgn * 70 * k, hip + 62),
                (sgn * 82 * k, hip + 35),
            ]
        )
        _tube(film, sup_ramus, 9.0 * k, 8.0 * k, depth=1.0, shell=1.6)
        _tube(film, inf_ramus, 8.0 * k, 10.0 * k, depth=1.0, shell=1.6)
        film.capsules(
            [Capsule((sgn * 12 * k, hip + 38), (sgn * 12 * k, hip + 62), 8.0 * k, 8.0 * k, 1.2, 1.5)],
            mu_cortex=0.022,
            mu_trab=0.007,
        )


def _hip(rng: np.random.Generator, sex: str, age: int) -> OtherScene:
    side = "L" if rng.random() < 0.5 else "R"
    sgn = 1.0 if side == "L" else -1.0
    spine = build_spine(rng, age=age, sex=sex, plan=SlipPlan(), hard=False)
    quads = ap_view.ap_quads(spine)
    hip = float(spine.hip[1])
    hc = np.array([sgn * 92 * spine.size, hip])
    region = hc + np.array([[-70.0, -90.0], [70.0, -90.0], [70.0, 120.0], [-70.0, 120.0]])

    def draw(film: Film, aim: np.ndarray, sod: float, rng: np.random.Generator) -> None:
        ap_view.render_ap(film, spine, ap_view.APGeometry(aim, sod), rng)
        _pelvic_ring(film, spine, quads)
        # lesser trochanter and the greater trochanter's outline
        film.ellipsoid(
            hc + np.array([sgn * 55, 40]),
            (17.0, 24.0),
            0.3,
            depth=40.0,
            mu_cortex=0.015,
            mu_trab=0.006,
            shell=1.5,
        )
        film.ellipsoid(
            hc + np.array([sgn * 18, 72]),
            (8.0, 11.0),
            0.0,
            depth=20.0,
            mu_cortex=0.018,
            mu_trab=0.006,
            shell=1.5,
        )

    return OtherScene("hip", "AP", side, (240.0, 300.0), (0.8, 1.0), region, draw, False)


def _tspine(rng: np.random.Generator, sex: str, age: int) -> OtherScene:
    k = rng.normal(1.0, 0.05) * (1.04 if sex == "M" else 0.96)
    kyph = np.deg2rad(rng.uniform(25, 55))
    verts: list[Vert] = []
    e = np.array([1.0, 0.0])
    sp = np.zeros(2)
    n = 11
    for i in range(n):  # built caudally from T2
        d = (22 + 1.1 * i) * k
        hp = (16 + 0.8 * i) * k
        ha = hp * rng.uniform(0.9, 0.97)
        nd = np.array([-e[1], e[0]])
        sa = sp + e * d
        ip = sp + nd * hp
        e2 = rotate(e, -kyph / n)
        ia = ip + e2 * d
        ia = sa + unit(ia - sa) * ha
        verts.append(
            Vert(
                name=f"T{i + 2}",
                quad=np.array([sa, sp, ip, ia]),
                shape=BodyShape(6.5, 10, 0.05, 0.07, 0.04, 0.02),
                width=(26 + 1.6 * i) * k,
                depth=d,
                arch=(16.0, 6.0, 17.0, 14.0, 40.0),
            )
        )
        sp = ip + np.array([-e2[1], e2[0]]) * (4 + 0.2 * i) * k
        e = e2
    pts_all = np.vstack([v.quad for v in verts])
    region = np.vstack([pts_all, pts_all.mean(axis=0) + np.array([[90.0, 0.0], [-80.0, 0.0]])])

    def draw(film: Film, aim: np.ndarray, sod: float, rng: np.random.Generator) -> None:
        ctr = pts_all.mean(axis=0)
        film.soft_field(_cylinder_field(float(ctr[0]) + 60, rng.uniform(120, 150), rng.uniform(280, 330), 15))
        lung = _ellipse((float(ctr[0]) + 70, float(ctr[1]) - 10), 110, 170, 0.0, 36)
        film.soft_blob(lung, -MU_SOFT * 180, blur_mm=10.0)
        film.soft_blob(
            _ellipse((float(ctr[0]) + 110, float(ctr[1]) + 90), 60, 70), MU_SOFT * 55, blur_mm=12.0
        )

        class _S:
            patient_rot = float(np.deg2rad(rng.normal(0, 3)))
            patient_tilt = 0.0

        proj = _Projector(_S(), LateralGeometry(aim, sod))  # type: ignore[arg-type]
        for v in verts:
            film.body(
                v.quad,
                v.shape,
                width_mm=v.width,
                slices=_slices(proj, v),
                mu_cortex=0.024,
                mu_trab=0.0125,
                texture=0.08,
            )
            paired, mid, _ = _arch_capsules(v, rng)
            for z in (12.0, -12.0):
                film.capsules(
                    [_move_capsule(cp, proj, z, v) for cp in paired], mu_cortex=0.022, mu_trab=0.009
                )
            film.capsules(mid, mu_cortex=0.02, mu_trab=0.009)
            ea, nd = unit(v.quad[0] - v.quad[1]), unit(v.quad[2] - v.quad[1])
            head = v.quad[1] + nd * 4
            for sgn in (1.0, -1.0):
                path = np.array(
                    [head, head - ea * 35 + nd * 12, head - ea * 40 + nd * 60, head + ea * 40 + nd * 120]
                )
                zs = sgn * np.array([15, 90, 130, 110])
                _tube(film, proj.side(path, zs), 5.0, 4.0, depth=0.6, shell=1.2, mu_c=0.016, mu_t=0.003)

    return OtherScene("thoracic_spine", "LATERAL", None, (330.0, 430.0), (0.7, 0.9), region, draw, True)


def _knee(rng: np.random.Generator) -> OtherScene:
    side = "L" if rng.random() < 0.5 else "R"
    s = 1.0 if side == "L" else -1.0

    def draw(film: Film, aim: np.ndarray, sod: float, rng: np.random.Generator) -> None:
        film.soft_field(_cylinder_field(0.0, rng.uniform(50, 65), rng.uniform(100, 130), 10))
        film.capsules(
            [Capsule((0.0, -250.0), (0.0, -40.0), 15.0, 20.0, 1.0, 4.5)], mu_cortex=0.026, mu_trab=0.006
        )
        for dx in (-22.0, 22.0):  # femoral condyles
            film.ellipsoid(
                np.array([dx, -20.0]), (24.0, 24.0), 0.0, depth=50.0, mu_cortex=0.02, mu_trab=0.008, shell=1.5
            )
        film.slab(
            np.array([[-42, 8], [42, 8], [38, 40], [20, 48], [-20, 48], [-38, 40]], float),
            thickness=45.0,
            mu=0.008,
            taper_mm=4.0,
            rim_mu=0.02,
        )
        film.capsules(
            [Capsule((0.0, 40.0), (0.0, 250.0), 19.0, 13.0, 1.0, 4.5)], mu_cortex=0.026, mu_trab=0.006
        )
        film.capsules(
            [Capsule((s * 36, 45.0), (s * 30, 250.0), 8.0, 6.0, 1.0, 2.5)], mu_cortex=0.024, mu_trab=0.005
        )
        film.ellipsoid(
            np.array([0.0, -30.0]), (22.0, 28.0), 0.0, depth=22.0, mu_cortex=0.01, mu_trab=0.006, shell=1.5
        )  # patella

    region = np.array([[-70.0, -120.0], [70.0, -120.0], [70.0, 120.0], [-70.0, 120.0]])
    return OtherScene("knee", "AP", side, (240.0, 300.0), (0.75, 0.9), region, draw, False)


def _hand(rng: np.random.Generator) -> OtherScene:
    side = "L" if rng.random() < 0.5 else "R"
    s = 1.0 if side == "L" else -1.0
    spread = rng.uniform(0.1, 0.25)

    def draw(film: Film, aim: np.ndarray, sod: float, rng: np.random.Generator) -> None:
        outline = []
        rays = []
        for i, (ang, length) in enumerate(
            ((-0.9, 0.8), (-0.18, 1.0), (0.0, 1.08), (0.17, 1.02), (0.36, 0.85))
        ):
            a = (ang * (1 + spread)) * s
            base = np.array([s * (i - 2) * 17.0 + (s * -18 if i == 0 else 0.0), 40.0 if i else 70.0])
            d = np.array([np.sin(a), -np.cos(a)])
            segs = [62.0 * length, 40.0 * length, 26.0 * length, 18.0 * length] if i else [45.0, 32.0, 24.0]
            p = base.copy()
            rays.append(p)
            for j, L in enumerate(segs):
                q = p + d * L
                r = (6.2 if j == 0 else 5.4 - 0.6 * j) * (1.15 if i == 0 else 1.0)
                film.capsules(
                    [Capsule(tuple(p + d * 2.0), tuple(q - d * 2.0), r + 1.0, r, 1.0, 1.3)],
                    mu_cortex=0.024,
                    mu_trab=0.006,
                )
                p = q
            outline.append(p + d * 6)
        for c in np.array(
            [(-22, 62), (-8, 60), (6, 60), (20, 62), (-18, 78), (-4, 78), (10, 78), (24, 80)]
        ) * np.array([s, 1.0]):
            film.ellipsoid(c, (7.0, 6.0), 0.0, depth=16.0, mu_cortex=0.016, mu_trab=0.008, shell=1.2)
        film.capsules(
            [Capsule((s * 10.0, 95.0), (s * 14.0, 220.0), 12.0, 10.0, 1.0, 2.8)],
            mu_cortex=0.024,
            mu_trab=0.006,
        )  # radius
        film.capsules(
            [Capsule((-s * 18.0, 96.0), (-s * 20.0, 220.0), 8.0, 7.0, 1.0, 2.2)],
            mu_cortex=0.024,
            mu_trab=0.006,
        )  # ulna
        tips = np.array(outline)
        tips = tips[np.argsort(tips[:, 0])]  # left to right across the hand
        pts = np.vstack([[[-46.0, 220.0], [-50.0, 95.0]], tips, [[50.0, 95.0], [46.0, 220.0]]])
        film.soft_blob(spline(pts, 3, closed=True), MU_SOFT * 28, blur_mm=4.0)

    region = np.array([[-90.0, -140.0], [90.0, -140.0], [90.0, 180.0], [-90.0, 180.0]])
    return OtherScene("hand", "PA", side, (240.0, 300.0), (0.75, 0.85), region, draw, False)


def build_other(rng: np.random.Generator, part: str | None, *, sex: str, age: int) -> OtherScene:
    """One "other" examination; ``part`` from :data:`PARTS` or ``None`` (random)."""
    if part is None:
        w = np.array(_WEIGHTS)
        part = PARTS[int(rng.choice(len(PARTS), p=w / w.sum()))]
    if part not in PARTS:
        raise ValueError(f"family b body_part must be one of {PARTS}, got {part!r}")
    if part == "chest":
        return _chest(rng, sex)
    if part == "chest_lateral":
        return _chest_lateral(rng, sex)
    if part in ("abdomen", "pelvis"):
        return _spine_ap_scene(rng, sex, age, part)
    if part == "hip":
        return _hip(rng, sex, age)
    if part == "tspine":
        return _tspine(rng, sex, age)
    if part == "knee":
        return _knee(rng)
    return _hand(rng)
