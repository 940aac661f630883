"""The overlay renderer: the SC pixels, ``render_overlay`` for thumbnails and ``cdss render``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import typer
from typer.testing import CliRunner

from cdss.analysis.types import LumbarResult, Vertebra
from cdss.encode import ResultKind
from cdss.encode.common import from_image_coordinates
from cdss.encode.overlay import LAYERS, Overlay, overlay_from_gsps
from cdss.encode.seg import VERTEBRA_RGB
from cdss.render import (
    DrawError,
    RenderError,
    draw_overlay,
    overlay_for_result,
    render_files,
    render_overlay,
    source_display_u8,
)
from tests.encode_corpus import Case, build_case
from tests.peers import require_binary


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    out = tmp_path_factory.mktemp("render")
    names = ("dx_mono1_for", "cr_mono1_cervical_left_normal", "dx_lateral_slips")
    return {n: build_case(n, out) for n in names}


def _near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    return int((np.abs(img.astype(int) - np.array(rgb)).max(axis=2) <= tol).sum())


@pytest.mark.parametrize("name", ["dx_mono1_for", "cr_mono1_cervical_left_normal"])
def test_render_overlay_is_exactly_the_secondary_capture(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    rgb = render_overlay(case.source, case.result)
    assert rgb.dtype == np.uint8 and rgb.shape == (*case.result.image_shape, 3)
    sc = pydicom.dcmread(case.paths["SC"]).pixel_array
    np.testing.assert_array_equal(rgb, sc)


def test_overlay_survives_the_gsps_round_trip(cases: dict[str, Case]) -> None:
    case = cases["dx_lateral_slips"]
    built = overlay_for_result(case.source, case.result)
    read = overlay_from_gsps(case.ds(ResultKind.GSPS), case.result.image_shape)
    assert [t.text for t in read.labels] == [
        t.text for t in sorted(built.labels, key=lambda t: LAYERS[t.layer].order)
    ]
    assert len(read.graphics) == len(built.graphics)
    assert {n: s.rgb for n, s in read.layers.items()} == {s.name: s.rgb for s in built.used_layers()}


def test_render_files_draws_seg_outlines_and_gsps(cases: dict[str, Case]) -> None:
    case = cases["dx_lateral_slips"]
    assert isinstance(case.result, LumbarResult)
    seg, gsps = case.ds(ResultKind.SEG), case.ds(ResultKind.GSPS)
    both = render_files(case.source, segs=[seg], gsps=[gsps])
    only_gsps = render_files(case.source, gsps=[gsps])
    only_seg = render_files(case.source, segs=[seg])
    assert both.shape == only_gsps.shape == (*case.result.image_shape, 3)
    l5 = VERTEBRA_RGB[Vertebra.L5]  # orange, not a GSPS layer colour
    assert _near(only_seg, l5, 30) > 50
    assert _near(only_gsps, l5, 30) == 0
    # The GSPS caution/summary text (amber layer) is drawn, never by the SEG alone.
    assert _near(only_gsps, LAYERS["AI_INFO"].rgb, 20) > 20
    assert _near(only_seg, LAYERS["AI_INFO"].rgb, 20) == 0
    assert _near(both, l5, 30) > 50 and _near(both, LAYERS["AI_INFO"].rgb, 20) > 20


def test_render_files_refuses_objects_of_another_image(cases: dict[str, Case]) -> None:
    a, b = cases["dx_lateral_slips"], cases["dx_mono1_for"]
    with pytest.raises(RenderError, match="does not reference the source instance"):
        render_files(a.source, gsps=[b.ds(ResultKind.GSPS)])
    with pytest.raises(RenderError, match="does not reference the source instance"):
        render_files(a.source, segs=[b.ds(ResultKind.SEG)])
    with pytest.raises(RenderError, match="at least one SEG or GSPS"):
        render_files(a.source)


def test_draw_overlay_checks_the_image_size() -> None:
    with pytest.raises(DrawError, match="overlay was made for"):
        draw_overlay(np.zeros((10, 10), np.uint8), Overlay(shape=(12, 10)))


def _cli() -> typer.Typer:
    from cdss.cli.render import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command so Typer keeps sub-command names
        pass

    return app


def test_cli_writes_a_png(cases: dict[str, Case], tmp_path: Path) -> None:
    case = cases["dx_mono1_for"]
    out = tmp_path / "overlay.png"
    args = [
        "render",
        str(case.paths["source"]),
        "--seg",
        str(case.paths["SEG"]),
        "--gsps",
        str(case.paths["GSPS"]),
    ]
    res = CliRunner().invoke(_cli(), [*args, "-o", str(out), "--max-size", "200"])
    assert res.exit_code == 0, res.output
    img = cv2.imread(str(out))
    assert img is not None and max(img.shape[:2]) == 200
    assert img.shape[0] == 200  # rows are the longer side here


def test_cli_reports_errors(cases: dict[str, Case], tmp_path: Path) -> None:
    case = cases["dx_mono1_for"]
    res = CliRunner().invoke(_cli(), ["render", str(case.paths["source"]), "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 2
    assert "at least one SEG or GSPS" in res.output


def test_render_is_registered_on_the_cdss_app() -> None:
    from cdss.cli import app

    names = {c.name for c in app.registered_commands}
    assert "render" in names


# -- a GSPS-capable implementation reads what cdss render draws ---------------------------------


def _dcmtk_presentation(dcmp2pgm: str, source: Path, gsps: Path, out: Path) -> tuple[np.ndarray, dict]:
    """DCMTK's rendering of ``source`` through ``gsps`` (dcmp2pgm: the dcmpstat library the GSPS
    viewer DICOMscope is built on) and the annotations it read, per layer."""
    proc = subprocess.run(
        [dcmp2pgm, "-v", "-p", str(gsps), str(source), str(out)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    layers: dict[str, dict] = {}
    layer: dict | None = None
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.removeprefix("I: ").strip()
        if m := re.match(r"Graphic Layer #\d+ \[(.+)\]", line):
            layer = layers.setdefault(m.group(1), {"texts": [], "graphics": []})
        elif layer is not None and (m := re.match(r'text \d+: "(.*)"$', line)):
            layer["texts"].append({"text": m.group(1)})
        elif layer is not None and (m := re.match(r"anchor point: ([-\d.]+)\\([-\d.]+) ", line)):
            layer["texts"][-1]["anchor"] = (float(m.group(1)), float(m.group(2)))
        elif layer is not None and (m := re.match(r"bounding box: TLHC=([-\d.]+)\\([-\d.]+) ", line)):
            layer["texts"][-1]["tlhc"] = (float(m.group(1)), float(m.group(2)))
        elif layer is not None and (m := re.match(r"graphic \d+: points=(\d+) type=(\w+)", line)):
            layer["graphics"].append((m.group(2), int(m.group(1))))
    return cv2.imread(str(out), cv2.IMREAD_UNCHANGED), layers


@pytest.mark.integration
@pytest.mark.parametrize("name", ["dx_grades_2_4_not_measured", "dx_mono1_for"])
def test_dcmtk_presentation_state_reading_matches_cdss_render(name: str, tmp_path: Path) -> None:
    """DCMTK (dcmp2pgm, the presentation-state library behind the DICOMscope GSPS viewer) reads
    exactly the text, anchors and graphics that ``cdss render`` draws from the same GSPS, and its
    grey-scale rendering through the GSPS (VOI window, INVERSE for MONOCHROME1) has the bone
    bright like ``cdss render``'s (docs/viewer.md compares the pictures)."""
    dcmp2pgm = require_binary("dcmp2pgm", "dcmtk")
    case = build_case(name, tmp_path)
    grey, layers = _dcmtk_presentation(dcmp2pgm, case.paths["source"], case.paths["GSPS"], tmp_path / "o.pgm")
    ov = overlay_from_gsps(case.ds(ResultKind.GSPS), case.result.image_shape)
    assert set(layers) == set(ov.layers)
    for layer_name, read in layers.items():
        ours = [t for t in ov.labels if t.layer == layer_name]
        assert [t["text"] for t in read["texts"]] == [t.text for t in ours], layer_name
        for dcmtk_text, label in zip(read["texts"], ours, strict=True):
            # DCMTK reports DICOM image coordinates (0\\0 = the top-left pixel's corner); cdss
            # render's are pixel centres: the same place is half a pixel apart in numbers
            np.testing.assert_allclose(
                from_image_coordinates(np.array(dcmtk_text["tlhc"])), label.box[:2], atol=1e-2
            )
            if label.anchor is not None:
                np.testing.assert_allclose(
                    from_image_coordinates(np.array(dcmtk_text["anchor"])), label.anchor, atol=1e-2
                )
        graphics = [(("point" if g.kind == "point" else "polyline"), len(g.points)) for g in ov.graphics]
        assert read["graphics"] == [
            g for g, o in zip(graphics, ov.graphics, strict=True) if o.layer == layer_name
        ]
    # The grey-scale pipeline: DCMTK through the GSPS vs cdss render's background (display polarity).
    assert grey.shape == tuple(case.result.image_shape)
    ours = source_display_u8(case.source).astype(float)
    r = np.corrcoef(grey.astype(float).ravel(), ours.ravel())[0, 1]
    assert r > 0.95, f"DCMTK's rendering through the GSPS does not follow cdss render's (r = {r:.3f})"
    if isinstance(case.result, LumbarResult):
        bone = np.zeros(grey.shape, bool)
        for v in case.result.vertebrae:
            bone |= v.mask
        assert grey[bone].mean() > grey[~bone].mean() + 40  # bone bright, also for MONOCHROME1
