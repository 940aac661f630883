"""Flip averaging of the lumbar analysis (``flip_average``): the shipped model on a held-out image.

With flip averaging every level is measured on the mean of the corner fits of the image and of
its mirror image. Checked: the mirrored pass's outlines, mirrored back, lie on the vertebrae of
the straight pass and are named the same by the anatomical chain (a mask left mirrored would land on the other side of the image and pair
nothing); every level is paired; measuring the mirror image gives nearly the same slips. Not
exactly the same: the spine crop comes from a first pass on the (mirrored) whole image, and the
model is not mirror-equivariant, so the crop box moves by a few pixels and the slips by up to
~2 pp (the model's own noise, which the averaging halves).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cdss.analysis.lumbar.analyzer import LumbarAnalyzer
from cdss.analysis.pixels import display_image
from cdss.analysis.types import LevelStatus, LumbarView

HELDOUT = Path(__file__).resolve().parent.parent / "fixtures" / "heldout" / "lumbar"

pytestmark = pytest.mark.slow


def test_flip_averaged_slips_are_mirror_invariant_and_close_to_the_truth() -> None:
    dcm = sorted(HELDOUT.glob("*standard*.dcm"))[0]
    truth = {
        lv["level"]: lv["slip_percent"] for lv in json.loads(dcm.with_suffix(".json").read_text())["levels"]
    }
    display = display_image(pydicom.dcmread(dcm))
    analyzer = LumbarAnalyzer.load(None, "cpu")
    analyzer.flip_average = True
    analyzer.edge_refine = False

    def slips(image: np.ndarray) -> tuple[dict[str, float], list[str]]:
        res = analyzer.analyse(np.ascontiguousarray(image), LumbarView.LATERAL)
        measured = {
            f"{m.upper.value}-{m.lower.value}": float(m.slip_percent)
            for m in res.levels
            if m.status is LevelStatus.MEASURED and m.slip_percent is not None
        }
        return measured, res.notes

    prepared = analyzer.prepare(display)
    first = analyzer._predict([prepared.model_input])
    crop = analyzer._crop_around_spine(prepared, first[0])
    assert crop is not None
    straight_c = analyzer.candidates(analyzer._predict([crop.model_input])[0], crop)
    mirror_in = np.ascontiguousarray(crop.model_input[:, ::-1])
    mirror_c = analyzer.candidates(analyzer._predict([mirror_in])[0], crop, mirrored=True)
    a_named = {f.label: f.outline for f in analyzer.name_bodies(straight_c).found}
    b_named = {f.label: f.outline for f in analyzer.name_bodies(mirror_c).found}
    assert len(a_named) == 6 and a_named.keys() == b_named.keys()
    for label, a in a_named.items():  # mirrored back onto the same bodies, named the same
        b = b_named[label]
        size = float(np.max(a.max(axis=0) - a.min(axis=0)))
        assert np.hypot(*(a.mean(axis=0) - b.mean(axis=0))) < 0.05 * size

    straight, notes = slips(display)
    mirrored, notes_m = slips(display[:, ::-1])
    assert any(n.startswith("flip averaging: 6 vertebra(e)") for n in notes), notes
    assert any(n.startswith("flip averaging: 6 vertebra(e)") for n in notes_m), notes_m
    # a level may be abstained on (3.0.0: L5-S1 of this image, confidence 0.34): compare the
    # levels both passes measured, which must be most of them
    common = straight.keys() & mirrored.keys()
    assert len(common) >= 4 and common <= truth.keys(), (straight, mirrored)
    for level in common:
        value = straight[level]
        assert value == pytest.approx(mirrored[level], abs=3.0), (level, value, mirrored[level])
        assert value == pytest.approx(truth[level], abs=8.0), (level, value, truth[level])
