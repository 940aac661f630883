"""Family B entry point: one synthetic radiograph (dataset + ground truth) per (kind, seed, index, variant).

The random generator is seeded with ``(seed, index, crc32("b/<kind>/<variant>"))``, so family B
images never share a random stream with family A and are reproducible in any order.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np
from pydicom.dataset import Dataset

from cdss.synth.family_b import ap as ap_view
from cdss.synth.family_b import other as other_view
from cdss.synth.family_b.detector import CR, DX_PRES, DX_PROC, Acq, draw_marker, expose, sample_acquisition
from cdss.synth.family_b.dicom import ABSENT, HeaderB, build_dataset, header_record
from cdss.synth.family_b.geometry import Camera, body_outline, clip_polygon, polygon_area, unit
from cdss.synth.family_b.lateral import LateralGeometry, render_lateral, sample_implants
from cdss.synth.family_b.render import Film
from cdss.synth.family_b.spine import LUMBAR, build_spine, sample_slip_plan
from cdss.synth.headers import sample_patient
from cdss.synth.truth import lumbar_levels, pts

__all__ = ["GENERATOR", "GENERATOR_VERSION", "OptionsB", "generate_b"]

GENERATOR = "cdss.synth.family_b"
GENERATOR_VERSION = 1
GT_NAMES = (*LUMBAR, "S1")
#: T12/T11 get ground truth when at least this share of the body is inside the exposed image
EXTRA_MIN_VISIBLE = 0.6
NUMBERING = (
    "counted caudally from T12, the lowest rib-bearing vertebra: with a sacralised L5 the "
    "transitional vertebra is L5 and S1 is the first sacral segment below it; with a lumbarised "
    "S1 the transitional (mobile-looking) segment below L5 is S1 and the sacrum proper starts at S2"
)


@dataclass(frozen=True)
class OptionsB:
    """Options of family B (see :func:`generate_b`)."""

    max_side: int | None = None
    wild_headers: bool = False
    body_part: str | None = None  # other: chest, chest_lateral, abdomen, pelvis, hip, tspine, knee, hand
    sop_class_uid: str | None = None
    bits_stored: int | None = None
    lstv: str | None = None  # force "lstv_sacralized_L5" / "lstv_lumbarized_S1"


def _rng(kind: str, seed: int, index: int, variant: str) -> np.random.Generator:
    tag = zlib.crc32(f"b/{kind}/{variant}".encode())
    return np.random.default_rng([int(seed), int(index), tag])


def _pick(rng: np.random.Generator, options: list[Any], weights: list[float]) -> Any:
    w = np.asarray(weights, float)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def _acquire(rng: np.random.Generator, variant: str, opts: OptionsB, **kw: Any) -> Acq:
    acq = sample_acquisition(rng, variant=variant, max_side=opts.max_side, **kw)
    if opts.sop_class_uid is not None:
        if opts.sop_class_uid not in (DX_PRES, DX_PROC, CR):
            raise ValueError(
                f"unsupported SOP class {opts.sop_class_uid!r} (DX For Presentation/Processing or CR)"
            )
        if opts.sop_class_uid != CR:
            acq.write_imager_spacing = True
            if acq.rescale != (1.0, 0.0):
                acq.rescale = (1.0, 0.0)
        acq.sop_class_uid = opts.sop_class_uid
        if acq.for_processing:
            acq.processing = "raw"
        elif acq.processing == "raw":
            acq.processing = "equalize"
        if not acq.for_processing and not acq.is_cr and acq.voi == "none":
            acq.voi = "window"
        if acq.for_processing:
            acq.voi = "none"
    if opts.bits_stored is not None:
        if not 8 <= opts.bits_stored <= 16:
            raise ValueError(f"bits_stored must be 8 … 16, got {opts.bits_stored}")
        acq.bits_stored = int(opts.bits_stored)
    if acq.voi == "lut" and acq.rescale != (1.0, 0.0):
        acq.voi = "window"
    return acq


def image_rect(rows: int, cols: int) -> np.ndarray:
    return np.array([[-0.5, -0.5], [cols - 0.5, -0.5], [cols - 0.5, rows - 0.5], [-0.5, rows - 0.5]])


def visible_fraction(outline_px: np.ndarray, clip: np.ndarray) -> float:
    """Share of the outline's area inside the convex polygon ``clip`` (image ∩ exposed field)."""
    area = polygon_area(outline_px)
    if area <= 0:
        return 0.0
    return float(np.clip(polygon_area(clip_polygon(outline_px, clip)) / area, 0.0, 1.0))


def spine_roi(outlines_px: list[np.ndarray], grow: float = 1.15) -> np.ndarray:
    """Convex hull of the annotated bodies, enlarged about its centre (exposure recognition ROI)."""
    hull = cv2.convexHull(np.vstack(outlines_px).astype(np.float32)).reshape(-1, 2).astype(float)
    c = hull.mean(axis=0)
    return c + (hull - c) * grow


def exposed_region(rows: int, cols: int, field_px: np.ndarray) -> np.ndarray:
    return clip_polygon(image_rect(rows, cols), field_px)


def orientation_codes(cam: Camera, anterior_x: bool = True) -> list[str]:
    """PatientOrientation of the image rows/columns from the camera (lateral or AP frames).

    In a lateral frame ``x`` is anterior (A/P); in an AP frame ``x`` is the patient's left (L/R).
    """
    inv = np.linalg.inv(cam.a)
    out = []
    for d in (inv @ np.array([1.0, 0.0]), inv @ np.array([0.0, 1.0])):
        d = d / np.hypot(*d)
        parts = [
            (abs(d[0]), ("A" if d[0] > 0 else "P") if anterior_x else ("L" if d[0] > 0 else "R")),
            (abs(d[1]), "F" if d[1] > 0 else "H"),
        ]
        parts.sort(key=lambda x: -x[0])
        code = parts[0][1] + (parts[1][1] if parts[1][0] > 0.5 * parts[0][0] else "")
        out.append(code)
    return out


@dataclass
class Framing:
    cam: Camera
    field_px: np.ndarray
    cropped: str | None
    px_per_mm: float


def _fits(px: np.ndarray, rows: int, cols: int, margin: float) -> bool:
    return bool(
        px[:, 0].min() >= margin
        and px[:, 1].min() >= margin
        and px[:, 0].max() <= cols - 1 - margin
        and px[:, 1].max() <= rows - 1 - margin
    )


def frame_spine(
    rng: np.random.Generator,
    acq: Acq,
    outlines_mm: dict[str, np.ndarray],
    *,
    names: tuple[str, ...],
    mirror: bool,
    crop_p: float,
    anterior_mm: np.ndarray,
    coll_margins: Mapping[str, tuple[float, float]],
) -> Framing:
    """Choose the camera (central ray, placement, crop) and the collimated field.

    The spine is placed off-centre at random; with probability ``crop_p`` the first or last of
    ``names`` is deliberately cut by the image edge (35–90 % of it left inside). The field is a
    rectangle around the bodies (blades along the image axes or along the spine), with margins
    drawn from ``coll_margins`` per side (anterior, posterior, top, bottom; mm).
    """
    body = np.vstack([outlines_mm[n] for n in names])
    centre = (body.min(axis=0) + body.max(axis=0)) / 2 - unit(anterior_mm) * 10.0
    for _ in range(40):
        ppm = acq.magnification / acq.pitch_mm
        cpx = np.array([(acq.columns - 1) / 2, (acq.rows - 1) / 2])
        ok = False
        for attempt in range(25):
            jit = rng.normal(0, 14.0, 2) * (1.0 - attempt / 25)
            cam = Camera.make(
                aim_mm=centre + jit,
                centre_px=cpx,
                px_per_mm=ppm,
                rotation_deg=acq.rotation_deg,
                mirror=mirror,
            )
            if _fits(cam(body), acq.rows, acq.columns, 0.02 * max(acq.rows, acq.columns)):
                ok = True
                break
        if ok:
            break
        if acq.magnification > 1.02:
            acq.magnification = max(1.0, acq.magnification * 0.95)
        else:
            acq.pitch_mm *= 1.06
    else:  # pragma: no cover - the loop always makes the body fit eventually
        raise RuntimeError("could not fit the spine into the detector")
    cropped = None
    if rng.random() < crop_p:
        end = names[0] if rng.random() < 0.55 else names[-1]
        other = names[-1] if end == names[0] else names[0]
        d = unit(cam(outlines_mm[end]).mean(axis=0) - cam(outlines_mm[other]).mean(axis=0))
        target = rng.uniform(0.35, 0.9)
        rect = image_rect(acq.rows, acq.columns)
        lo, hi = 0.0, float(max(acq.rows, acq.columns))
        base_b = cam.b.copy()
        for _ in range(30):
            mid = (lo + hi) / 2
            c2 = Camera(cam.a, base_b + d * mid)
            vf = visible_fraction(c2(outlines_mm[end]), rect)
            if vf > target:
                lo = mid
            else:
                hi = mid
        cam = Camera(cam.a, base_b + d * (lo + hi) / 2)
        cropped = end
    field_px = _collimation(rng, acq, cam, body, anterior_mm, coll_margins)
    return Framing(cam=cam, field_px=field_px, cropped=cropped, px_per_mm=cam.px_per_mm)


def _collimation(
    rng: np.random.Generator,
    acq: Acq,
    cam: Camera,
    body_mm: np.ndarray,
    anterior_mm: np.ndarray,
    margins: Mapping[str, tuple[float, float]],
) -> np.ndarray:
    rows, cols = acq.rows, acq.columns
    if acq.collimation == "open":
        return np.array([[-20, -20], [cols + 20, -20], [cols + 20, rows + 20], [-20, rows + 20]], float)
    px = cam(body_mm)
    ant = cam.vec(unit(anterior_mm))
    if rng.random() < 0.4:  # blades follow the spine (collimator turned with the patient)
        ang = float(np.arctan2(ant[1], ant[0]))
    else:
        ang = float(np.round(np.arctan2(ant[1], ant[0]) / (np.pi / 2)) * (np.pi / 2)) + np.deg2rad(
            rng.normal(0, 1.2)
        )
    u = np.array([np.cos(ang), np.sin(ang)])  # towards anterior (blade frame x)
    v = np.array([-u[1], u[0]])
    pu, pv = px @ u, px @ v
    ppm = cam.px_per_mm
    heavy = acq.collimation == "heavy"
    key = "heavy" if heavy else "normal"
    ma, mp, mt, mb = (
        rng.uniform(*margins[f"{key}_{s}"]) * ppm for s in ("anterior", "posterior", "top", "bottom")
    )
    u0, u1 = pu.min() - mp, pu.max() + ma
    v0, v1 = pv.min() - mt, pv.max() + mb
    if not heavy:  # loose blades: often beyond the detector
        u0 -= rng.uniform(0, 1) * cols * 0.3
        u1 += rng.uniform(0, 1) * cols * 0.3
        v0 -= rng.uniform(0, 1) * rows * 0.2
        v1 += rng.uniform(0, 1) * rows * 0.2
    corners = [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]
    return np.array([u * a + v * b for a, b in corners], float)


def _marker(
    rng: np.random.Generator, acq: Acq, field_px: np.ndarray, avoid_px: np.ndarray, text: str, ppm: float
) -> np.ndarray | None:
    if rng.random() > 0.85:
        return None
    region = exposed_region(acq.rows, acq.columns, field_px)
    if len(region) < 3:
        return None
    h = rng.uniform(7, 13) * ppm / acq.magnification  # on the cassette: detector-plane mm
    ctr = region.mean(axis=0)
    lo, hi = avoid_px.min(axis=0), avoid_px.max(axis=0)
    best, best_d = None, -1.0
    for p in region:
        q = p + (ctr - p) * (1.6 * h / max(np.hypot(*(ctr - p)), 1.0))
        dx = max(lo[0] - q[0], 0, q[0] - hi[0])
        dy = max(lo[1] - q[1], 0, q[1] - hi[1])
        d = float(np.hypot(dx, dy)) + rng.uniform(0, h)
        if d > best_d:
            best, best_d = q, d
    assert best is not None
    return draw_marker(
        (acq.rows, acq.columns),
        text,
        (float(best[0]), float(best[1])),
        h,
        float(rng.normal(0, 6)),
        float(rng.uniform(2.0, 4.0)),
    )


def _body_part(
    rng: np.random.Generator, opts: OptionsB, valid: list[tuple[str, float]], invalid: list[tuple[str, float]]
) -> tuple[str, bool]:
    """BodyPartExamined as written and whether it is a conformant CS value."""
    items = (
        valid + invalid + ([("Lumbar", 1.0), ("lws", 0.6), ("L SPINE LAT", 0.6)] if opts.wild_headers else [])
    )
    value = _pick(rng, [a for a, _ in items], [w for _, w in items])
    return value, value in [a for a, _ in valid]


def _patient_orientation(
    rng: np.random.Generator, acq: Acq, opts: OptionsB, codes_: list[str]
) -> tuple[list[str] | str, bool]:
    if opts.wild_headers and rng.random() < 0.2:
        return ABSENT, False
    if acq.is_cr and rng.random() < 0.4:
        return "", True
    return codes_, True


def _view_position(rng: np.random.Generator, options: list[tuple[str, float]], acq: Acq) -> str:
    vp = _pick(rng, [a for a, _ in options], [w for _, w in options])
    if vp == ABSENT and acq.is_cr:
        return ""
    return vp


def _base_truth(
    kind: str, seed: int, index: int, variant: str, ds: Dataset, acq: Acq, spec: HeaderB, scale: float
) -> dict[str, Any]:
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "family": "b",
        "kind": kind,
        "seed": int(seed),
        "index": int(index),
        "variant": variant,
        "image": {
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
            "photometric": str(ds.PhotometricInterpretation),
            "bits_stored": int(ds.BitsStored),
            "pixel_spacing_mm": acq.recorded_spacing(),
            "imager_pixel_spacing_mm": [round(acq.pitch_mm, 6)] * 2 if acq.write_imager_spacing else None,
            "patient_pixel_spacing_mm": round(acq.patient_spacing_mm, 6),
            "pixel_spacing_calibrated": acq.pixel_spacing_calibrated if acq.write_pixel_spacing else None,
            "magnification": round(acq.magnification, 4),
            "rotation_deg": round(acq.rotation_deg, 3),
            "scale": round(scale, 4),
            "noise_sigma": round(acq.noise_rel, 5),
            "variant_effects": sorted(set(acq.effects)),
            "processing": acq.processing,
            "collimation": acq.collimation,
            "grid": acq.grid,
            "stitching_seam": acq.seam,
            "detector_defects": acq.defects,
            "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        },
        "dicom": header_record(ds, spec),
    }


# ---------------------------------------------------------------------------------------- lateral
_LAT_MARGINS = {
    "normal_anterior": (25, 80),
    "normal_posterior": (70, 120),
    "normal_top": (20, 70),
    "normal_bottom": (25, 80),
    "heavy_anterior": (3, 16),
    "heavy_posterior": (22, 55),
    "heavy_top": (4, 20),
    "heavy_bottom": (4, 22),
}


def _lumbar_lateral(seed: int, index: int, variant: str, opts: OptionsB) -> tuple[Dataset, dict[str, Any]]:
    kind = "lumbar_lateral"
    rng = _rng(kind, seed, index, variant)
    hard = variant == "hard"
    patient = sample_patient(rng, age_range=(18, 92))
    acq = _acquire(rng, variant, opts, field_mm=(300.0, 430.0), aspect=(0.68, 0.9), rotation_sd=4.0)
    implants = sample_implants(rng, hard, patient.age_years)
    plan = sample_slip_plan(rng, hard)
    for lv in list(plan.slips):  # instrumented levels are (mostly) reduced
        up, lo = lv.split("-")
        if up in implants.screws and lo in implants.screws:
            plan.slips[lv] *= rng.uniform(0.0, 0.45)
            if abs(plan.slips[lv]) < 6.5:
                del plan.slips[lv]
    spine = build_spine(
        rng, age=patient.age_years, sex=patient.sex, plan=plan, hard=hard, force_lstv=opts.lstv
    )
    outlines = {n: body_outline(v.quad, v.shape) for n, v in spine.verts.items()}
    faces_left = rng.random() < 0.55
    ant = spine.verts["L3"].quad[0] - spine.verts["L3"].quad[1]
    framing = frame_spine(
        rng,
        acq,
        outlines,
        names=GT_NAMES,
        mirror=faces_left,
        crop_p=0.35 if hard else 0.1,
        anterior_mm=ant,
        coll_margins=_LAT_MARGINS,
    )
    cam = framing.cam
    film = Film(acq.rows, acq.columns, cam, rng)
    aim = cam.inverse()(np.array([(acq.columns - 1) / 2, (acq.rows - 1) / 2]))
    drawn = render_lateral(film, spine, LateralGeometry(aim, acq.sod_mm), implants, rng)
    att = film.attenuation()
    view = _view_position(rng, [("LL", 35), ("RL", 8), ("LATERAL", 20), ("", 12), (ABSENT, 25)], acq)
    letter = "R" if view == "RL" else ("L" if view == "LL" else str(rng.choice(["L", "R"])))
    text = _pick(rng, [letter, "LAT", f"{letter} LAT"], [8, 1, 1])
    body_px = cam(np.vstack([outlines[n] for n in GT_NAMES]))
    lead = _marker(rng, acq, framing.field_px, body_px, text, framing.px_per_mm)
    if lead is not None:
        att += lead
    roi = spine_roi([cam(outlines[n]) for n in GT_NAMES], rng.uniform(1.1, 1.5))
    exposure = expose(att, acq, rng, field_px=framing.field_px, roi_px=roi)
    body_part, bp_ok = _body_part(
        rng, opts, [("LSPINE", 45), ("LUMBAR SPINE", 15), ("SPINE", 8), (ABSENT, 20)], [("L-SPINE", 12)]
    )
    po, po_ok = _patient_orientation(rng, acq, opts, orientation_codes(cam, anterior_x=True))
    spec = HeaderB(
        body_part=body_part,
        view_position=view,
        patient_orientation=po,
        series_description=_pick(
            rng,
            [
                "LSPINE LAT",
                "L-Spine lateral",
                "LUMBAR SPINE LAT",
                "LWS lat.",
                "Rachis lombaire profil",
                "Colonna lombare LL",
                "LAT",
                "LS lat standing",
                "",
            ],
            [5, 3, 3, 2, 1, 1, 2, 1, 1],
        ),
        protocol_name=_pick(rng, ["LSPINE LATERAL", "L-SPINE 2V", "Lumbar lat", "LWS 2 Eb."], [3, 2, 2, 1]),
        study_description=_pick(
            rng, ["XR SPINE LUMBAR 2-3 VIEWS", "L-SPINE", "Roentgen LWS", "RX RACHIS LOMBAIRE"], [3, 2, 1, 1]
        ),
        image_laterality="U",
        anatomy="LumbarSpine",
        conformant=bp_ok and po_ok,
    )
    ds = build_dataset(
        seed=seed,
        index=index,
        namespace=f"b/{kind}/{variant}/",
        acq=acq,
        exposure=exposure,
        spec=spec,
        patient=patient,
        rng=rng,
    )
    gt = _base_truth(kind, seed, index, variant, ds, acq, spec, spine.size * acq.magnification / 1.15)
    gt["anterior"] = "left" if faces_left else "right"
    region = exposed_region(acq.rows, acq.columns, framing.field_px)
    corners = {n: np.round(cam(spine.verts[n].quad), 3) for n in spine.verts}
    verts: dict[str, Any] = {}
    for n in ("T11", "T12", *GT_NAMES):
        o = cam(outlines[n])
        vf = visible_fraction(o, region)
        if n in GT_NAMES or vf >= EXTRA_MIN_VISIBLE:
            verts[n] = {"corners": pts(corners[n], 3), "outline": pts(o), "visible_fraction": round(vf, 4)}
    gt["vertebrae"] = verts
    levels = lumbar_levels(corners)
    for level in levels:
        level["fully_visible"] = bool(
            verts[level["upper"]]["visible_fraction"] > 0.999
            and verts[level["lower"]]["visible_fraction"] > 0.999
        )
    gt["levels"] = levels
    gt["planned_slips"] = {k: round(v, 3) for k, v in plan.slips.items()}
    gt["anomalies"] = list(spine.anomalies)
    gt["implants"] = implants.describe()
    gt["field"] = {"cropped_end": framing.cropped, "polygon": pts(framing.field_px)}
    gt["numbering"] = NUMBERING
    gt["spine"] = {
        "sacral_slope_deg": round(spine.ss_deg, 2),
        "pelvic_incidence_deg": round(spine.pi_deg, 2),
        "lumbar_lordosis_target_deg": round(spine.ll_deg, 2),
        "cobb_deg": round(spine.cobb_deg, 1),
        "degeneration": round(spine.degeneration, 3),
        "bone_density": round(spine.bone_density, 3),
        "patient_rotation_deg": round(float(np.degrees(spine.patient_rot)), 2),
        "drawn": drawn,
    }
    gt["patient"] = {"age_years": patient.age_years, "sex": patient.sex}
    return ds, gt


# ---------------------------------------------------------------------------------------- AP
_AP_MARGINS = {
    "normal_anterior": (60, 140),
    "normal_posterior": (60, 140),
    "normal_top": (20, 70),
    "normal_bottom": (25, 80),
    "heavy_anterior": (12, 45),
    "heavy_posterior": (12, 45),
    "heavy_top": (4, 20),
    "heavy_bottom": (4, 25),
}


def _image_side_order(cp: np.ndarray) -> np.ndarray:
    """AP corners (superior pair, inferior pair) reordered by image side: SL, SR, IR, IL."""
    sup = cp[:2] if cp[0, 0] <= cp[1, 0] else cp[[1, 0]]
    inf = cp[2:] if cp[2, 0] >= cp[3, 0] else cp[[3, 2]]
    return np.array([sup[0], sup[1], inf[0], inf[1]])


def _lumbar_ap(seed: int, index: int, variant: str, opts: OptionsB) -> tuple[Dataset, dict[str, Any]]:
    kind = "lumbar_ap"
    rng = _rng(kind, seed, index, variant)
    hard = variant == "hard"
    patient = sample_patient(rng, age_range=(18, 92))
    acq = _acquire(rng, variant, opts, field_mm=(300.0, 430.0), aspect=(0.72, 0.95), rotation_sd=3.0)
    if "rotation_90" in acq.effects:
        acq.rotation_deg = float(np.clip(rng.normal(0, 12), -25, 25))
        acq.effects.remove("rotation_90")
    plan = sample_slip_plan(rng, hard)  # slips shape the column; AP ground truth has no levels
    spine = build_spine(
        rng, age=patient.age_years, sex=patient.sex, plan=plan, hard=hard, force_lstv=opts.lstv
    )
    quads = ap_view.ap_quads(spine)
    shapes = {n: ap_view._ap_shape(v) for n, v in spine.verts.items()}
    outlines = {n: body_outline(q, shapes[n]) for n, q in quads.items()}
    mirrored = rng.random() < 0.08  # displayed as seen from behind
    framing = frame_spine(
        rng,
        acq,
        outlines,
        names=GT_NAMES,
        mirror=mirrored,
        crop_p=0.3 if hard else 0.08,
        anterior_mm=np.array([1.0, 0.0]),
        coll_margins=_AP_MARGINS,
    )
    cam = framing.cam
    film = Film(acq.rows, acq.columns, cam, rng)
    aim = cam.inverse()(np.array([(acq.columns - 1) / 2, (acq.rows - 1) / 2]))
    extra = ap_view.render_ap(film, spine, ap_view.APGeometry(aim, acq.sod_mm), rng)
    att = film.attenuation()
    view = _view_position(rng, [("AP", 55), ("PA", 8), ("", 12), (ABSENT, 25)], acq)
    body_px = cam(np.vstack([outlines[n] for n in GT_NAMES]))
    lead = _marker(rng, acq, framing.field_px, body_px, str(rng.choice(["L", "R"])), framing.px_per_mm)
    if lead is not None:
        att += lead
    side = cam.vec(np.array([rng.uniform(40, 90), 0.0]))  # AP: include the psoas and flanks
    roi = spine_roi([cam(outlines[n]) + d for n in GT_NAMES for d in (side, -side)], 1.1)
    exposure = expose(att, acq, rng, field_px=framing.field_px, roi_px=roi)
    body_part, bp_ok = _body_part(
        rng, opts, [("LSPINE", 45), ("LUMBAR SPINE", 15), ("SPINE", 8), (ABSENT, 20)], [("L-SPINE", 12)]
    )
    po, po_ok = _patient_orientation(rng, acq, opts, orientation_codes(cam, anterior_x=False))
    spec = HeaderB(
        body_part=body_part,
        view_position=view,
        patient_orientation=po,
        series_description=_pick(
            rng,
            ["LSPINE AP", "L-Spine AP", "LUMBAR SPINE AP", "LWS a.p.", "Rachis lombaire face", "AP", ""],
            [5, 3, 3, 2, 1, 2, 1],
        ),
        protocol_name=_pick(rng, ["LSPINE AP", "L-SPINE 2V", "Lumbar ap", "LWS 2 Eb."], [3, 2, 2, 1]),
        study_description=_pick(
            rng, ["XR SPINE LUMBAR 2-3 VIEWS", "L-SPINE", "Roentgen LWS", "RX RACHIS LOMBAIRE"], [3, 2, 1, 1]
        ),
        image_laterality="U",
        anatomy="LumbarSpine",
        conformant=bp_ok and po_ok,
    )
    ds = build_dataset(
        seed=seed,
        index=index,
        namespace=f"b/{kind}/{variant}/",
        acq=acq,
        exposure=exposure,
        spec=spec,
        patient=patient,
        rng=rng,
    )
    gt = _base_truth(kind, seed, index, variant, ds, acq, spec, spine.size * acq.magnification / 1.15)
    region = exposed_region(acq.rows, acq.columns, framing.field_px)
    verts: dict[str, Any] = {}
    for n in ("T11", "T12", *GT_NAMES):
        o = cam(outlines[n])
        vf = visible_fraction(o, region)
        if n in GT_NAMES or vf >= EXTRA_MIN_VISIBLE:
            cp = _image_side_order(np.round(cam(quads[n][[1, 0, 3, 2]]), 3))
            verts[n] = {"corners": pts(cp, 3), "outline": pts(o), "visible_fraction": round(vf, 4)}
    gt["vertebrae"] = verts
    gt["levels"] = []
    pv = extra["per_vertebra"]
    gt["ap"] = {
        "patient_right_on": "right" if mirrored else "left",
        "pedicles": {n: [pts(cam(p)) for p in pv[n]["pedicles"]] for n in LUMBAR},
        "spinous_processes": {n: pts(cam(pv[n]["spinous"][0])) for n in LUMBAR},
        "transverse_processes": {n: [pts(cam(p)) for p in pv[n]["transverse"]] for n in LUMBAR},
    }
    gt["anomalies"] = list(spine.anomalies)
    gt["implants"] = []
    gt["field"] = {"cropped_end": framing.cropped, "polygon": pts(framing.field_px)}
    gt["numbering"] = NUMBERING
    gt["spine"] = {"cobb_deg": round(spine.cobb_deg, 1), "degeneration": round(spine.degeneration, 3)}
    gt["patient"] = {"age_years": patient.age_years, "sex": patient.sex}
    return ds, gt


# ---------------------------------------------------------------------------------------- other
_OTHER_HEADERS: dict[str, dict[str, Any]] = {
    "chest": {
        "bp": "CHEST",
        "series": ["CHEST PA", "Thorax p.a.", "CHEST 1V"],
        "study": "XR CHEST",
        "anatomy": "Chest",
    },
    "chest_lateral": {
        "bp": "CHEST",
        "series": ["CHEST LAT", "Thorax seitl.", "CHEST LATERAL"],
        "study": "XR CHEST 2V",
        "anatomy": "Chest",
    },
    "abdomen": {
        "bp": "ABDOMEN",
        "series": ["ABDOMEN AP", "Abdomen leer", "KUB"],
        "study": "XR ABDOMEN",
        "anatomy": "Abdomen",
    },
    "pelvis": {
        "bp": "PELVIS",
        "series": ["PELVIS AP", "Becken a.p.", "BASSIN FACE"],
        "study": "XR PELVIS",
        "anatomy": "Pelvis",
    },
    "hip": {
        "bp": "HIP",
        "series": ["HIP {side} AP", "Huefte {side}", "HIP AP"],
        "study": "XR HIP",
        "anatomy": "HipJoint",
    },
    "tspine": {
        "bp": "TSPINE",
        "series": ["TSPINE LAT", "BWS seitl.", "T-Spine lateral"],
        "study": "XR SPINE THORACIC",
        "anatomy": "ThoracicSpine",
    },
    "knee": {
        "bp": "KNEE",
        "series": ["KNEE {side} AP", "Knie {side} a.p.", "KNEE AP"],
        "study": "XR KNEE",
        "anatomy": "Knee",
    },
    "hand": {
        "bp": "HAND",
        "series": ["HAND {side} PA", "Hand {side} d.p.", "HAND PA"],
        "study": "XR HAND",
        "anatomy": "Hand",
    },
}


def _other(seed: int, index: int, variant: str, opts: OptionsB) -> tuple[Dataset, dict[str, Any]]:
    kind = "other"
    rng = _rng(kind, seed, index, variant)
    patient = sample_patient(rng, age_range=(8, 92))
    scene = other_view.build_other(rng, opts.body_part, sex=patient.sex, age=patient.age_years)
    acq = _acquire(rng, variant, opts, field_mm=scene.field_mm, aspect=scene.aspect, rotation_sd=3.0)
    if "rotation_90" in acq.effects:
        acq.rotation_deg = float(rng.normal(0, 10))
        acq.effects.remove("rotation_90")
    region = scene.region
    for _ in range(40):
        ppm = acq.magnification / acq.pitch_mm
        cpx = np.array([(acq.columns - 1) / 2, (acq.rows - 1) / 2])
        centre = (region.min(axis=0) + region.max(axis=0)) / 2 + rng.normal(0, 8, 2)
        cam = Camera.make(
            aim_mm=centre, centre_px=cpx, px_per_mm=ppm, rotation_deg=acq.rotation_deg, mirror=False
        )
        if _fits(cam(region), acq.rows, acq.columns, -0.05 * max(acq.rows, acq.columns)):
            break
        acq.magnification = max(1.0, acq.magnification * 0.95)
        if acq.magnification <= 1.0:
            acq.pitch_mm *= 1.06
    margins = {
        f"{m}_{s}": ((10, 40) if m == "heavy" else (30, 120))
        for m in ("heavy", "normal")
        for s in ("anterior", "posterior", "top", "bottom")
    }
    field_px = _collimation(rng, acq, cam, region, np.array([1.0, 0.0]), margins)
    film = Film(acq.rows, acq.columns, cam, rng)
    aim = cam.inverse()(np.array([(acq.columns - 1) / 2, (acq.rows - 1) / 2]))
    scene.draw(film, aim, acq.sod_mm, rng)
    att = film.attenuation()
    lead = _marker(rng, acq, field_px, cam(region), scene.side or str(rng.choice(["L", "R"])), cam.px_per_mm)
    if lead is not None:
        att += lead
    exposure = expose(att, acq, rng, field_px=field_px)
    key = (
        "chest_lateral"
        if scene.part == "chest" and scene.projection == "LATERAL"
        else ("tspine" if scene.part == "thoracic_spine" else scene.part)
    )
    h = _OTHER_HEADERS[key]
    misleading = rng.random() < 0.25
    side = scene.side or ""
    if misleading:
        body_part = _pick(rng, ["LSPINE", "LUMBAR SPINE", "SPINE"], [3, 2, 1])
        series = _pick(rng, ["LSPINE LAT", "L-Spine AP", "LUMBAR SPINE LAT"], [2, 1, 1])
        view = _pick(rng, ["LL", "AP", "LATERAL"], [2, 2, 1])
        anatomy = "LumbarSpine"
    else:
        body_part = h["bp"] if rng.random() < 0.85 else ABSENT
        series = str(_pick(rng, h["series"], [3, 2, 1])).format(side=side).strip()
        view = (
            scene.projection
            if scene.projection != "LATERAL"
            else _pick(rng, ["LL", "LATERAL", "RL"], [3, 2, 1])
        )
        anatomy = h["anatomy"]
    view = view if rng.random() < 0.85 else (ABSENT if not acq.is_cr else "")
    po_codes = orientation_codes(cam, anterior_x=scene.anterior_x)
    po, po_ok = _patient_orientation(rng, acq, opts, po_codes)
    spec = HeaderB(
        body_part=body_part,
        view_position=view,
        patient_orientation=po,
        series_description=series,
        protocol_name=series,
        study_description=h["study"],
        image_laterality=scene.side or "U",
        anatomy=anatomy,
        conformant=po_ok,
    )
    ds = build_dataset(
        seed=seed,
        index=index,
        namespace=f"b/{kind}/{variant}/",
        acq=acq,
        exposure=exposure,
        spec=spec,
        patient=patient,
        rng=rng,
    )
    gt = _base_truth(kind, seed, index, variant, ds, acq, spec, acq.magnification / 1.15)
    gt["other"] = {
        "body_part": scene.part,
        "projection": scene.projection,
        "side": scene.side,
        "misleading_tags": bool(misleading),
    }
    gt["patient"] = {"age_years": patient.age_years, "sex": patient.sex}
    return ds, gt


_BUILDERS = {
    "lumbar_lateral": _lumbar_lateral,
    "lumbar_ap": _lumbar_ap,
    "other": _other,
}


def generate_b(
    kind: str, *, seed: int, index: int, variant: str = "standard", **options: Any
) -> tuple[Dataset, dict[str, Any]]:
    """Generate one family B radiograph.

    Parameters
    ----------
    kind
        ``lumbar_lateral``, ``lumbar_ap`` or ``other`` (family B has no cervical obliques).
    seed, index, variant
        Reproducibility: same arguments, same pixels, headers, UIDs and ground truth. Variants:
        ``standard``, ``hard`` (more implants, low-dose noise, rotation, heavy collimation,
        cropped fields, grid lines, seams, defects), and ``monochrome1``/``rotated``/``noisy``.
    options
        See :class:`OptionsB`.

    Returns
    -------
    (dataset, truth)
        Dataset in Explicit VR Little Endian; ground truth in (column, row) source pixels.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"family b has no kind {kind!r}; choose one of {sorted(_BUILDERS)}")
    known = {f.name for f in fields(OptionsB)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown options for family b {kind}: {unknown} (known: {sorted(known)})")
    if variant not in ("standard", "hard", "monochrome1", "rotated", "noisy"):
        raise ValueError(f"unknown variant {variant!r} for family b")
    return _BUILDERS[kind](int(seed), int(index), str(variant), OptionsB(**options))
