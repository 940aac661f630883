"""The overlay renderer: the SC pixels, ``render_overlay`` for thumbnails and ``cdss render``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import typer
from typer.testing import CliRunner

from cdss.analysis.types import LumbarResult, Vertebra
from cdss.encode import ResultKind
from cdss.encode.overlay import LAYERS, Overlay, overlay_from_gsps
from cdss.encode.seg import VERTEBRA_RGB
from cdss.render import DrawError, RenderError, draw_overlay, overlay_for_result, render_files, render_overlay
from tests.encode_corpus import Case, build_case


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
