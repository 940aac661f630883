"""Entry point: one synthetic radiograph (DICOM dataset + ground truth) per (kind, seed, index).

Every image is fully determined by ``(kind, seed, index, variant, options)``: the random
generator is seeded with all of them, so images can be generated in any order or in parallel.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from cdss.synth.acquisition import (
    CR_IMAGE_STORAGE,
    DX_FOR_PRESENTATION,
    DX_FOR_PROCESSING,
    Acquisition,
    Variant,
    draw_marker,
    expose,
    sample_acquisition,
)
from cdss.synth.cervical import NARROWING_THRESHOLD, build_oblique
from cdss.synth.family_b import generate_b
from cdss.synth.headers import HeaderSpec, build_dataset, sample_patient
from cdss.synth.lumbar import build_ap, build_lateral, sample_slips
from cdss.synth.other import BodyPart, build_other
from cdss.synth.raster import Canvas
from cdss.synth.scene import Scene, frame_scene, render_scene
from cdss.synth.shapes import Affine
from cdss.synth.truth import GENERATOR_VERSION, dicom_block, image_block, lumbar_levels, pts, thoracic_truth

__all__ = ["Kind", "generate"]


class Kind(StrEnum):
    """What a synthetic image shows (the ``kind`` of the ground truth)."""

    LUMBAR_LATERAL = "lumbar_lateral"
    LUMBAR_AP = "lumbar_ap"
    CERVICAL_OBLIQUE = "cervical_oblique"
    OTHER = "other"


def _uid_namespace(kind: str, variant: str) -> str:
    """UIDs differ between kinds and variants of the same (seed, index): they are different images."""
    return f"{kind}/{variant}/"


def _rng(kind: str, seed: int, index: int, variant: str) -> np.random.Generator:
    tag = zlib.crc32(f"{kind}/{variant}".encode())
    return np.random.default_rng([int(seed), int(index), tag])


def _choice(rng: np.random.Generator, options: list[Any], weights: list[float]) -> Any:
    w = np.asarray(weights, float)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


@dataclass
class _Framed:
    to_px: Affine
    zoom: float
    canvas: Canvas


def _frame_and_render(scene: Scene, acq: Acquisition, mirror: bool, rng: np.random.Generator) -> _Framed:
    px_per_mm = acq.magnification * acq.scale / acq.imager_spacing_mm
    to_px, zoom = frame_scene(
        scene,
        rows=acq.rows,
        columns=acq.columns,
        px_per_mm=px_per_mm,
        rotation_deg=acq.rotation_deg,
        mirror=mirror,
        rng=rng,
    )
    acq.scale *= zoom
    canvas = Canvas(acq.rows, acq.columns, to_px, rng, texture_angle_rad=np.deg2rad(acq.rotation_deg))
    render_scene(scene, canvas)
    return _Framed(to_px, zoom, canvas)


def _collimation(rng: np.random.Generator, acq: Acquisition, keep_px: np.ndarray) -> np.ndarray:
    """Collimated field polygon (image px): a rectangle around the region of interest, or open."""
    rows, cols = acq.rows, acq.columns
    if rng.random() < 0.15:
        return np.array([[-10, -10], [cols + 10, -10], [cols + 10, rows + 10], [-10, rows + 10]], float)
    lo, hi = keep_px.min(axis=0), keep_px.max(axis=0)
    mm = acq.magnification / acq.imager_spacing_mm
    # each blade sits somewhere between "just outside the anatomy of interest" and the image
    # edge; most departments collimate loosely (or the DR crops to the field), so the field
    # usually fills most of the image
    inner = np.concatenate([lo - rng.uniform(8, 20, size=2) * mm, hi + rng.uniform(8, 20, size=2) * mm])
    outer = np.array([-0.02 * cols, -0.02 * rows, 1.02 * cols, 1.02 * rows])
    t = rng.beta(1.2, 2.5, size=4)  # 0 = at the image edge
    edges = outer + (inner - outer) * t
    edges[:2] = np.minimum(edges[:2], inner[:2])
    edges[2:] = np.maximum(edges[2:], inner[2:])
    c0, r0, c1, r1 = (float(v) for v in edges)
    rect = np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1]])
    ang = np.deg2rad(rng.normal(0, 1.0))
    ctr = rect.mean(axis=0)
    return Affine.rotate(ang, (float(ctr[0]), float(ctr[1])))(rect)


def _marker(
    rng: np.random.Generator, acq: Acquisition, letter: str, field_px: np.ndarray, avoid_px: np.ndarray
) -> np.ndarray:
    """Lead side marker inside the field, in a corner away from the anatomy of interest."""
    mm = acq.magnification / acq.imager_spacing_mm
    h = rng.uniform(9, 16) * mm
    lo = np.maximum(field_px.min(axis=0), [0, 0]) + 1.2 * h
    hi = np.minimum(field_px.max(axis=0), [acq.columns - 1, acq.rows - 1]) - 1.2 * h
    a_lo, a_hi = avoid_px.min(axis=0), avoid_px.max(axis=0)
    best = None
    for _ in range(12):
        p = np.array([rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])])
        inside = np.all(p > a_lo - h) and np.all(p < a_hi + h)
        if not inside:
            best = p
            break
        best = p if best is None else best
    assert best is not None
    return draw_marker(
        (acq.rows, acq.columns),
        letter,
        (float(best[0]), float(best[1])),
        h,
        float(rng.normal(0, 8)),
        boxed=bool(rng.random() < 0.4),
        value=float(rng.uniform(1.5, 4.0)),
    )


@dataclass(frozen=True)
class Options:
    """Choices common to all kinds.

    Attributes
    ----------
    max_side
        Shrink the detector grid so the longest image side is at most this many pixels (the
        pixel pitch grows accordingly, the anatomy keeps its size in mm) — for small fixtures.
    wild_headers
        Also use real-world header spellings that are not valid DICOM (``BodyPartExamined``
        "L-SPINE", "Lumbar", ...) for about a third of the images. Off by default so files pass
        ``dciodvfy``; the ground truth records ``dicom.conformant``.
    """

    max_side: int | None = None
    wild_headers: bool = False
    laterality: str | None = None  # cervical oblique: "L", "R" or None (random)
    abnormal: bool | None = None  # cervical oblique: force the label (None: 50 %)
    body_part: str | None = None  # other: chest, hand, knee, pelvis, skull (None: random)
    sop_class_uid: str | None = None  # force DX For Presentation / For Processing / CR
    uid_tag: str = ""  # distinguishes the instances of one acquisition (For Processing pair)
    spacing: str | None = None  # force "both", "imager", "pixel" or "none" (none/pixel: CR only)
    patient_orientation: bool | None = None  # force PatientOrientation present/empty (empty: CR only)
    bits_stored: int | None = None  # force 12 … 16


def _acquire(rng: np.random.Generator, variant: Variant, opts: Options, **kw: Any) -> Acquisition:
    acq = sample_acquisition(rng, variant, **kw)
    if opts.sop_class_uid is not None:
        if opts.sop_class_uid not in (DX_FOR_PRESENTATION, DX_FOR_PROCESSING, CR_IMAGE_STORAGE):
            raise ValueError(f"unsupported SOP class {opts.sop_class_uid!r}")
        if opts.sop_class_uid != CR_IMAGE_STORAGE and acq.is_cr:
            acq.write_imager_spacing = True
            acq.write_patient_orientation = True
        acq.sop_class_uid = opts.sop_class_uid
    if opts.spacing is not None:
        if opts.spacing not in ("both", "imager", "pixel", "none"):
            raise ValueError(f"spacing must be both, imager, pixel or none; got {opts.spacing!r}")
        if opts.spacing in ("pixel", "none") and not acq.is_cr:
            raise ValueError(
                "DX requires ImagerPixelSpacing (Type 1); use sop_class_uid=CR for files without it"
            )
        acq.write_imager_spacing = opts.spacing in ("both", "imager")
        acq.write_pixel_spacing = opts.spacing in ("both", "pixel")
    if opts.bits_stored is not None:
        if not 8 <= opts.bits_stored <= 16:
            raise ValueError(f"bits_stored must be 8 … 16, got {opts.bits_stored}")
        acq.bits_stored = int(opts.bits_stored)
    if opts.patient_orientation is not None:
        if not opts.patient_orientation and not acq.is_cr:
            raise ValueError("DX requires PatientOrientation; use sop_class_uid=CR for files without it")
        acq.write_patient_orientation = opts.patient_orientation
    if opts.max_side and max(acq.rows, acq.columns) > opts.max_side:
        f = opts.max_side / max(acq.rows, acq.columns)
        acq.rows = max(16, round(acq.rows * f))
        acq.columns = max(16, round(acq.columns * f))
        acq.imager_spacing_mm = round(acq.imager_spacing_mm / f, 4)
        acq.blur_px *= f
        acq.detector_blur_px *= f
        acq.noise_rel *= f  # bigger pixels collect more photons
    return acq


def _spelling(
    rng: np.random.Generator,
    opts: Options,
    valid: list[tuple[str | None, float]],
    wild: list[tuple[str, float]],
) -> tuple[str | None, bool]:
    """Choose a header spelling; the second value says whether it is valid DICOM."""
    if opts.wild_headers and wild and rng.random() < 0.35:
        return _choice(rng, [w for w, _ in wild], [p for _, p in wild]), False
    return _choice(rng, [v for v, _ in valid], [p for _, p in valid]), True


def _lumbar_lateral(seed: int, index: int, variant: Variant, opts: Options) -> tuple[Dataset, dict[str, Any]]:
    rng = _rng(Kind.LUMBAR_LATERAL, seed, index, variant)
    patient = sample_patient(rng, age_range=(20, 88))
    acq = _acquire(
        rng, variant, opts, rows_range=(1900, 2600), aspect_range=(0.62, 0.85), field_mm=(340.0, 430.0)
    )
    plan = sample_slips(rng)
    spine = build_lateral(rng, plan, age=patient.age_years)
    view = _choice(rng, ["LL", "RL", "LATERAL", None], [0.45, 0.1, 0.25, 0.2])
    faces_left = rng.random() < (0.3 if view == "RL" else 0.75)
    framed = _frame_and_render(spine.scene, acq, mirror=faces_left, rng=rng)
    to_px = framed.to_px
    # ground truth is rounded once; the levels are computed from exactly the stored numbers
    corners = {k: np.round(to_px(v), 3) for k, v in spine.corners.items()}
    outlines = {k: to_px(v) for k, v in spine.outlines.items()}
    keep = np.vstack([outlines[n] for n in ("L1", "L2", "L3", "L4", "L5", "S1")])
    field_px = _collimation(rng, acq, to_px(np.vstack(spine.scene.field_hint)))
    letter = "R" if view == "RL" else ("L" if view == "LL" else str(rng.choice(["L", "R"])))
    lead = _marker(rng, acq, letter, field_px, keep) if rng.random() < 0.85 else None
    exposure = expose(framed.canvas.attenuation(), acq, rng, field_px=field_px, lead=lead)
    body_part, conformant = _spelling(
        rng,
        opts,
        [("LSPINE", 5), ("LUMBAR SPINE", 2), ("L SPINE", 1), ("SPINE", 1), (None, 1)],
        [("L-SPINE", 2), ("Lumbar", 1), ("LWS", 1)],
    )
    spec = HeaderSpec(
        body_part=body_part,
        view_position=view,
        series_description=_choice(
            rng,
            ["L-SPINE LAT", "LUMBAR SPINE LATERAL", "LWS seitlich", "L SPINE LAT", "Lat"],
            [4, 2, 1, 2, 1],
        ),
        protocol_name=_choice(rng, ["L-SPINE LAT", "LSPINE 2 VIEWS", "Lumbar spine lateral"], [3, 1, 1]),
        study_description=_choice(rng, ["XR LUMBAR SPINE 2 VIEWS", "XR L-SPINE", "Roentgen LWS"], [3, 2, 1]),
        image_laterality="U",
        patient_orientation=["P", "F"] if faces_left else ["A", "F"],
        anatomy="LumbarSpine",
    )
    ds = build_dataset(
        seed=seed,
        index=index,
        acq=acq,
        exposure=exposure,
        spec=spec,
        patient=patient,
        rng=rng,
        acquisition_uid_tag=opts.uid_tag,
        uid_namespace=_uid_namespace(Kind.LUMBAR_LATERAL, variant),
        series_number=2 if acq.for_processing else 1,
    )
    gt = _base_truth(Kind.LUMBAR_LATERAL, seed, index, variant, ds, acq)
    gt["dicom"]["conformant"] = conformant
    gt["anterior"] = "left" if faces_left else "right"
    gt["vertebrae"] = {
        n: {"corners": pts(corners[n], 3), "outline": pts(outlines[n])}
        for n in ("L1", "L2", "L3", "L4", "L5", "S1")
    }
    gt["levels"] = lumbar_levels(corners)
    gt["thoracic"] = thoracic_truth(corners, outlines, (int(ds.Rows), int(ds.Columns)))
    gt["planned_slips"] = {k: round(v, 3) for k, v in plan.slips.items()}
    gt["patient"] = {"age_years": patient.age_years, "sex": patient.sex}
    return ds, gt


def _base_truth(
    kind: str, seed: int, index: int, variant: Variant, ds: Dataset, acq: Acquisition
) -> dict[str, Any]:
    return {
        "generator": "cdss.synth",
        "generator_version": GENERATOR_VERSION,
        "kind": str(kind),
        "seed": int(seed),
        "index": int(index),
        "variant": variant.value,
        "image": image_block(ds, acq, rotation_deg=acq.rotation_deg, scale=acq.scale),
        "dicom": dicom_block(ds),
    }


def _cervical_oblique(
    seed: int, index: int, variant: Variant, opts: Options
) -> tuple[Dataset, dict[str, Any]]:
    rng = _rng(Kind.CERVICAL_OBLIQUE, seed, index, variant)
    patient = sample_patient(rng, age_range=(25, 85))
    acq = _acquire(
        rng, variant, opts, rows_range=(1400, 2300), aspect_range=(0.75, 0.95), field_mm=(210.0, 270.0)
    )
    lat = opts.laterality if opts.laterality is not None else str(rng.choice(["L", "R"]))
    if lat not in ("L", "R"):
        raise ValueError(f"laterality must be 'L' or 'R', got {lat!r}")
    abnormal = bool(rng.random() < 0.5) if opts.abnormal is None else bool(opts.abnormal)
    anatomy = build_oblique(rng, abnormal=abnormal, age=patient.age_years)
    # right views face the image left, left views are their mirror image
    faces_left = lat == "R"
    framed = _frame_and_render(anatomy.scene, acq, mirror=faces_left, rng=rng)
    to_px = framed.to_px
    roi_px = to_px(anatomy.roi_points)
    field_px = _collimation(rng, acq, to_px(np.vstack(anatomy.scene.field_hint)))
    lead = _marker(rng, acq, lat, field_px, roi_px) if rng.random() < 0.95 else None
    exposure = expose(framed.canvas.attenuation(), acq, rng, field_px=field_px, lead=lead)
    # anterior obliques show the foramina of the side near the detector, posterior the far side
    view = _choice(rng, ["RAO", "LPO", None] if lat == "R" else ["LAO", "RPO", None], [0.45, 0.4, 0.15])
    body_part, conformant = _spelling(
        rng,
        opts,
        [("CSPINE", 5), ("CERVICAL SPINE", 2), ("C SPINE", 2), ("NECK", 1), (None, 1)],
        [("C-SPINE", 2), ("Cervical", 1), ("HWS", 1)],
    )
    side = "RT" if lat == "R" else "LT"
    spec = HeaderSpec(
        body_part=body_part,
        view_position=view,
        series_description=_choice(
            rng, [f"C-SPINE OBL {side}", f"C SPINE OBLIQUE {lat}", f"HWS schraeg {lat}", "Obl"], [4, 2, 1, 1]
        ),
        protocol_name=_choice(
            rng, [f"C-SPINE OBL {side}", "CSPINE OBLIQUES", "Cervical spine oblique"], [3, 1, 1]
        ),
        study_description=_choice(
            rng, ["XR CERVICAL SPINE 4 VIEWS", "XR C-SPINE OBLIQUES", "Roentgen HWS"], [3, 2, 1]
        ),
        image_laterality="U",
        patient_orientation=["P", "F"] if faces_left else ["A", "F"],
        anatomy="CervicalSpine",
    )
    ds = build_dataset(
        seed=seed,
        index=index,
        acq=acq,
        exposure=exposure,
        spec=spec,
        patient=patient,
        rng=rng,
        acquisition_uid_tag=opts.uid_tag,
        uid_namespace=_uid_namespace(Kind.CERVICAL_OBLIQUE, variant),
        series_number=2 if acq.for_processing else 1,
    )
    gt = _base_truth(Kind.CERVICAL_OBLIQUE, seed, index, variant, ds, acq)
    gt["dicom"]["conformant"] = conformant
    gt["anterior"] = "left" if faces_left else "right"
    lo = np.clip(roi_px.min(axis=0), 0, [acq.columns - 1, acq.rows - 1])
    hi = np.clip(roi_px.max(axis=0), 0, [acq.columns - 1, acq.rows - 1])
    worst = max(f.narrowing for f in anatomy.foramina)
    gt["cervical"] = {
        "laterality": lat,
        "label": "abnormal" if worst >= NARROWING_THRESHOLD else "normal",
        "threshold": NARROWING_THRESHOLD,
        "roi": [
            round(float(lo[0]), 2),
            round(float(lo[1]), 2),
            round(float(hi[0]), 2),
            round(float(hi[1]), 2),
        ],
        "foramina": [
            {
                "level": f.level,
                "narrowing": round(f.narrowing, 4),
                "nominal_area_px": round(f.nominal_area * to_px.linear_scale**2, 3),
                "cause": f.cause,
                "outline": pts(to_px(f.outline)),
                "centre": pts(to_px(f.outline).mean(axis=0, keepdims=True))[0],
            }
            for f in anatomy.foramina
        ],
        "vertebrae": {
            n: {"corners": pts(to_px(anatomy.bodies[n]), 3), "outline": pts(to_px(anatomy.outlines[n]))}
            for n in anatomy.bodies
        },
    }
    gt["patient"] = {"age_years": patient.age_years, "sex": patient.sex}
    return ds, gt


def _lumbar_ap(seed: int, index: int, variant: Variant, opts: Options) -> tuple[Dataset, dict[str, Any]]:
    rng = _rng(Kind.LUMBAR_AP, seed, index, variant)
    patient = sample_patient(rng, age_range=(20, 88))
    acq = _acquire(
        rng, variant, opts, rows_range=(1900, 2600), aspect_range=(0.7, 0.9), field_mm=(340.0, 430.0)
    )
    spine = build_ap(rng, age=patient.age_years)
    mirrored = rng.random() < 0.08  # displayed as seen from behind (PA-style)
    view = _choice(rng, ["AP", "PA", None], [0.75, 0.1, 0.15])
    framed = _frame_and_render(spine.scene, acq, mirror=mirrored, rng=rng)
    to_px = framed.to_px
    keep = to_px(np.vstack([spine.outlines[n] for n in spine.outlines]))
    field_px = _collimation(rng, acq, to_px(np.vstack(spine.scene.field_hint)))
    letter = str(rng.choice(["L", "R"]))
    lead = _marker(rng, acq, letter, field_px, keep) if rng.random() < 0.85 else None
    exposure = expose(framed.canvas.attenuation(), acq, rng, field_px=field_px, lead=lead)
    body_part, conformant = _spelling(
        rng,
        opts,
        [("LSPINE", 5), ("LUMBAR SPINE", 2), ("L SPINE", 1), ("SPINE", 1), (None, 1)],
        [("L-SPINE", 2), ("Lumbar", 1), ("LWS", 1)],
    )
    spec = HeaderSpec(
        body_part=body_part,
        view_position=view,
        series_description=_choice(
            rng, ["L-SPINE AP", "LUMBAR SPINE AP", "LWS ap", "L SPINE AP"], [4, 2, 1, 2]
        ),
        protocol_name=_choice(rng, ["L-SPINE AP", "LSPINE 2 VIEWS", "Lumbar spine AP"], [3, 1, 1]),
        study_description=_choice(rng, ["XR LUMBAR SPINE 2 VIEWS", "XR L-SPINE", "Roentgen LWS"], [3, 2, 1]),
        image_laterality="U",
        patient_orientation=["R", "F"] if mirrored else ["L", "F"],
        anatomy="LumbarSpine",
    )
    ds = build_dataset(
        seed=seed,
        index=index,
        acq=acq,
        exposure=exposure,
        spec=spec,
        patient=patient,
        rng=rng,
        acquisition_uid_tag=opts.uid_tag,
        uid_namespace=_uid_namespace(Kind.LUMBAR_AP, variant),
        series_number=2 if acq.for_processing else 1,
    )
    gt = _base_truth(Kind.LUMBAR_AP, seed, index, variant, ds, acq)
    gt["dicom"]["conformant"] = conformant
    vertebrae = {}
    for n, c in spine.corners.items():
        cp = to_px(c)
        if mirrored:  # keep the corner order by image side: superior-left, superior-right, ...
            cp = cp[[1, 0, 3, 2]]
        vertebrae[n] = {"corners": pts(cp, 3), "outline": pts(to_px(spine.outlines[n]))}
    gt["vertebrae"] = vertebrae
    gt["thoracic"] = thoracic_truth(
        {n: to_px(c)[[1, 0, 3, 2]] if mirrored else to_px(c) for n, c in spine.thoracic_corners.items()},
        {n: to_px(o) for n, o in spine.thoracic_outlines.items()},
        (int(ds.Rows), int(ds.Columns)),
    )
    gt["levels"] = []
    gt["ap"] = {
        "patient_right_on": "right" if mirrored else "left",
        "pedicles": {n: [pts(to_px(p)) for p in v] for n, v in spine.pedicles.items()},
        "spinous_processes": {n: pts(to_px(v)) for n, v in spine.spinous.items()},
        "transverse_processes": {n: [pts(to_px(p)) for p in v] for n, v in spine.transverse.items()},
    }
    gt["patient"] = {"age_years": patient.age_years, "sex": patient.sex}
    return ds, gt


_OTHER_HEADERS: dict[BodyPart, dict[str, Any]] = {
    BodyPart.CHEST: {
        "valid": [("CHEST", 6), (None, 1)],
        "wild": [("Thorax", 1), ("LUNGS", 1)],
        "series": ["CHEST PA", "THORAX PA", "Chest"],
        "study": "XR CHEST 1 VIEW",
        "anatomy": "Chest",
    },
    BodyPart.HAND: {
        "valid": [("HAND", 6), (None, 1)],
        "wild": [("Hand", 1)],
        "series": ["HAND PA", "HAND {side}", "Hand pa"],
        "study": "XR HAND",
        "anatomy": "Hand",
    },
    BodyPart.KNEE: {
        "valid": [("KNEE", 6), (None, 1)],
        "wild": [("Knee", 1), ("KNIE", 1)],
        "series": ["KNEE AP", "KNEE {side} AP", "Knie ap"],
        "study": "XR KNEE 2 VIEWS",
        "anatomy": "Knee",
    },
    BodyPart.PELVIS: {
        "valid": [("PELVIS", 5), ("HIP", 1), (None, 1)],
        "wild": [("Becken", 1)],
        "series": ["PELVIS AP", "BECKEN ap", "Pelvis"],
        "study": "XR PELVIS",
        "anatomy": "Pelvis",
    },
    BodyPart.SKULL: {
        "valid": [("SKULL", 5), ("HEAD", 1), (None, 1)],
        "wild": [("Schaedel", 1)],
        "series": ["SKULL {view}", "SKULL", "Schaedel"],
        "study": "XR SKULL",
        "anatomy": "Skull",
    },
}


def _other(seed: int, index: int, variant: Variant, opts: Options) -> tuple[Dataset, dict[str, Any]]:
    rng = _rng(Kind.OTHER, seed, index, variant)
    patient = sample_patient(rng, age_range=(5, 90))
    part = BodyPart(opts.body_part) if opts.body_part is not None else None
    view = build_other(rng, part)
    acq = _acquire(
        rng,
        variant,
        opts,
        rows_range=(1400, 2600),
        aspect_range=view.aspect,
        field_mm=view.field_mm,
        cr_fraction=0.4,
    )
    framed = _frame_and_render(view.scene, acq, mirror=False, rng=rng)
    to_px = framed.to_px
    keep = to_px(np.vstack(view.scene.keep_inside))
    field_px = _collimation(rng, acq, to_px(np.vstack(view.scene.field_hint)))
    letter = view.side or str(rng.choice(["L", "R"]))
    lead = _marker(rng, acq, letter, field_px, keep) if rng.random() < 0.9 else None
    exposure = expose(framed.canvas.attenuation(), acq, rng, field_px=field_px, lead=lead)
    h = _OTHER_HEADERS[view.part]
    body_part, conformant = _spelling(rng, opts, h["valid"], h["wild"])
    series = _choice(rng, h["series"], [3, 1, 1]).format(side=view.side or "", view=view.view).strip()
    spec = HeaderSpec(
        body_part=body_part,
        view_position=_choice(rng, [view.view, None], [0.85, 0.15]),
        series_description=series,
        protocol_name=series,
        study_description=h["study"],
        image_laterality=view.side or "U",
        patient_orientation=["L", "F"] if view.view != "LL" else ["A", "F"],
        anatomy=h["anatomy"],
    )
    ds = build_dataset(
        seed=seed,
        index=index,
        acq=acq,
        exposure=exposure,
        spec=spec,
        patient=patient,
        rng=rng,
        acquisition_uid_tag=opts.uid_tag,
        uid_namespace=_uid_namespace(Kind.OTHER, variant),
        series_number=2 if acq.for_processing else 1,
    )
    gt = _base_truth(Kind.OTHER, seed, index, variant, ds, acq)
    gt["dicom"]["conformant"] = conformant
    gt["other"] = {"body_part": view.part.value, "projection": view.view, "side": view.side}
    gt["patient"] = {"age_years": patient.age_years, "sex": patient.sex}
    return ds, gt


_BUILDERS = {
    Kind.LUMBAR_LATERAL: _lumbar_lateral,
    Kind.LUMBAR_AP: _lumbar_ap,
    Kind.CERVICAL_OBLIQUE: _cervical_oblique,
    Kind.OTHER: _other,
}


def generate(
    kind: Kind | str,
    *,
    seed: int,
    index: int,
    variant: Variant | str = Variant.STANDARD,
    family: str = "a",
    **options: Any,
) -> tuple[Dataset, dict[str, Any]]:
    """Generate one synthetic radiograph.

    Parameters
    ----------
    kind
        What to show (:class:`Kind`).
    seed, index
        Reproducibility: the same (kind, seed, index, variant) gives the same pixels, headers,
        UIDs and ground truth.
    variant
        Image-quality variant (:class:`~cdss.synth.acquisition.Variant`).
    family
        ``"a"`` (this module, the default) or ``"b"``: the independently designed second family
        :mod:`cdss.synth.family_b` (lumbar lateral, lumbar AP and other; its options are
        :class:`cdss.synth.family_b.OptionsB`).
    options
        ``max_side`` and ``wild_headers`` (see :class:`Options`), and kind-specific choices.

    Returns
    -------
    (dataset, truth)
        A DICOM dataset with uncompressed pixel data (Explicit VR Little Endian) and the
        ground-truth dictionary (coordinates in (column, row) source pixels).
    """
    k = Kind(kind)
    v = Variant(variant)
    if family == "b":
        return generate_b(k.value, seed=seed, index=index, variant=v.value, **options)
    if family != "a":
        raise ValueError(f"family must be 'a' or 'b', got {family!r}")
    known = {f.name for f in fields(Options)}
    common = {key: options.pop(key) for key in list(options) if key in known}
    if options:
        raise TypeError(f"unknown options for {k.value}: {sorted(options)}")
    return _BUILDERS[k](int(seed), int(index), v, Options(**common))


def generate_pair(
    kind: Kind | str, *, seed: int, index: int, variant: Variant | str = Variant.STANDARD, **options: Any
) -> list[tuple[Dataset, dict[str, Any]]]:
    """One acquisition stored twice: DX For Processing and DX For Presentation.

    Both share patient, study, geometry and quantum noise (same random stream); they differ in
    SOP class, series and instance UIDs and in the processing of the pixel values (raw log
    signal vs. contrast-processed). The ground truth is identical apart from the ``dicom`` and
    ``image`` blocks; each records the other's SOP Instance UID as ``pair_sop_instance_uid``.

    Returns
    -------
    [(for_processing, truth), (for_presentation, truth)]
    """
    if options.get("family", "a") != "a":
        raise ValueError("generate_pair exists for family a only")
    options.pop("family", None)
    out = []
    for sop, tag in ((DX_FOR_PROCESSING, "proc"), (DX_FOR_PRESENTATION, "pres")):
        out.append(
            generate(kind, seed=seed, index=index, variant=variant, sop_class_uid=sop, uid_tag=tag, **options)
        )
    (a, ta), (b, tb) = out
    ta["dicom"]["pair_sop_instance_uid"] = str(b.SOPInstanceUID)
    tb["dicom"]["pair_sop_instance_uid"] = str(a.SOPInstanceUID)
    return out
