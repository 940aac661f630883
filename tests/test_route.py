"""Routing on real-world tag combinations (body part, view, laterality, descriptions, codes)."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cdss.analysis.types import Laterality
from cdss.config import Analysis, RouteRule, RouteSettings
from cdss.route import BodyRegion, View, body_region, oblique_laterality, projection, route

LL = Analysis.LUMBAR_LATERAL
LAP = Analysis.LUMBAR_AP
CO = Analysis.CERVICAL_OBLIQUE
NA = Analysis.NOT_APPLICABLE
R, L = Laterality.RIGHT, Laterality.LEFT

DX = "1.2.840.10008.5.1.4.1.1.1.1"
SC = "1.2.840.10008.5.1.4.1.1.7"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _ds(**tags: Any) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = tags.pop("SOPClassUID", DX)
    ds.Modality = tags.pop("Modality", "DX")
    for keyword, value in tags.items():
        if value is None:
            continue
        setattr(ds, keyword, value)
    return ds


# (id, tags, expected analysis, expected laterality)
CASES: list[tuple[str, dict[str, Any], Analysis, Laterality | None]] = [
    # --- lumbar lateral -------------------------------------------------------------------
    ("lspine-ll", {"BodyPartExamined": "LSPINE", "ViewPosition": "LL"}, LL, None),
    ("lspine-rl", {"BodyPartExamined": "LSPINE", "ViewPosition": "RL"}, LL, None),
    ("lspine-lat-text-vp", {"BodyPartExamined": "LSPINE", "ViewPosition": "LATERAL"}, LL, None),
    ("l-spine-lower-case", {"BodyPartExamined": "l-spine", "ViewPosition": "ll"}, LL, None),
    ("l-space-spine", {"BodyPartExamined": "L SPINE", "SeriesDescription": "Lat"}, LL, None),
    ("lumbar", {"BodyPartExamined": "LUMBAR", "ViewPosition": "LL"}, LL, None),
    ("lumbar-spine", {"BodyPartExamined": "LUMBAR SPINE", "ViewPosition": "RL"}, LL, None),
    ("ls-spine", {"BodyPartExamined": "LS SPINE", "SeriesDescription": "LS SPINE LAT"}, LL, None),
    ("lws-german", {"BodyPartExamined": "LWS", "SeriesDescription": "LWS seitlich"}, LL, None),
    ("lws-german-umlaut", {"SeriesDescription": "Lendenwirbelsäule seitl."}, LL, None),
    ("columna-lumbar", {"BodyPartExamined": "COLUMNA LUMBAR", "SeriesDescription": "Perfil"}, LL, None),
    ("rachis-lombaire", {"StudyDescription": "Rachis lombaire", "SeriesDescription": "Profil"}, LL, None),
    ("no-body-part-desc", {"SeriesDescription": "L-SPINE LAT"}, LL, None),
    ("protocol-only", {"ProtocolName": "Lumbar Spine Lateral"}, LL, None),
    (
        "spine-generic-refined",
        {"BodyPartExamined": "SPINE", "SeriesDescription": "lumbar spine lat"},
        LL,
        None,
    ),
    (
        "view-code-sct-lateral",
        {"BodyPartExamined": "LSPINE", "ViewCodeSequence": [_code("399067008", "SCT", "lateral")]},
        LL,
        None,
    ),
    (
        "view-code-srt-legacy-left-lateral",
        {"BodyPartExamined": "LSPINE", "ViewCodeSequence": [_code("R-10236", "SRT", "left lateral")]},
        LL,
        None,
    ),
    (
        "anatomic-region-code",
        {
            "AnatomicRegionSequence": [_code("122496007", "SCT", "Lumbar spine")],
            "ViewPosition": "LL",
        },
        LL,
        None,
    ),
    (
        "anatomic-region-srt",
        {"AnatomicRegionSequence": [_code("T-11503", "SRT", "Lumbar spine")], "ViewPosition": "LL"},
        LL,
        None,
    ),
    ("cr-modality", {"Modality": "CR", "BodyPartExamined": "LSPINE", "ViewPosition": "LL"}, LL, None),
    ("flexion-lateral", {"BodyPartExamined": "LSPINE", "SeriesDescription": "LAT FLEX"}, LL, None),
    # --- lumbar AP / PA ------------------------------------------------------------------
    ("lspine-ap", {"BodyPartExamined": "LSPINE", "ViewPosition": "AP"}, LAP, None),
    ("lspine-pa", {"BodyPartExamined": "LSPINE", "ViewPosition": "PA"}, LAP, None),
    ("lspine-ap-dots", {"BodyPartExamined": "LSPINE", "SeriesDescription": "L-Spine a.p."}, LAP, None),
    ("lws-ap-german", {"SeriesDescription": "LWS a.p. stehend"}, LAP, None),
    (
        "view-code-pa",
        {"BodyPartExamined": "LSPINE", "ViewCodeSequence": [_code("272479007", "SCT", "postero-anterior")]},
        LAP,
        None,
    ),
    (
        "view-code-legacy-pa",
        {"BodyPartExamined": "LSPINE", "ViewCodeSequence": [_code("R-10214", "SRT", "postero-anterior")]},
        LAP,
        None,
    ),
    (
        "view-code-meaning-only",
        {"BodyPartExamined": "LSPINE", "ViewCodeSequence": [_code("99999", "99LOCAL", "antero-posterior")]},
        LAP,
        None,
    ),
    ("rachis-lombaire-face", {"BodyPartExamined": "RACHIS LOMBAIRE", "SeriesDescription": "face"}, LAP, None),
    # --- cervical oblique ---------------------------------------------------------------
    ("cspine-rao", {"BodyPartExamined": "CSPINE", "ViewPosition": "RAO"}, CO, R),
    ("cspine-lao", {"BodyPartExamined": "CSPINE", "ViewPosition": "LAO"}, CO, L),
    ("cspine-lpo-shows-right", {"BodyPartExamined": "CSPINE", "ViewPosition": "LPO"}, CO, R),
    ("cspine-rpo-shows-left", {"BodyPartExamined": "CSPINE", "ViewPosition": "RPO"}, CO, L),
    ("c-spine-obl-rt", {"BodyPartExamined": "C-SPINE", "SeriesDescription": "C-SPINE OBL RT"}, CO, R),
    ("cspine-lt-obl", {"BodyPartExamined": "CSPINE", "SeriesDescription": "LT OBL"}, CO, L),
    ("right-oblique-words", {"BodyPartExamined": "CERVICAL", "SeriesDescription": "Right Oblique"}, CO, R),
    ("left-oblique-protocol", {"ProtocolName": "C Spine Left Oblique"}, CO, L),
    ("neck-obl-unknown-side", {"BodyPartExamined": "NECK", "SeriesDescription": "NECK OBL"}, CO, None),
    ("hws-schraeg-re", {"BodyPartExamined": "HWS", "SeriesDescription": "HWS schräg re."}, CO, R),
    ("hws-schraeg-li", {"SeriesDescription": "HWS schraeg links"}, CO, L),
    (
        "image-laterality",
        {"BodyPartExamined": "CSPINE", "SeriesDescription": "OBLIQUE", "ImageLaterality": "L"},
        CO,
        L,
    ),
    (
        "view-code-lao",
        {
            "BodyPartExamined": "CSPINE",
            "ViewCodeSequence": [
                _code(codes.cid4010.LeftAnteriorOblique.value, "SCT", "left anterior oblique")
            ],
        },
        CO,
        L,
    ),
    (
        "view-code-lpo-legacy",
        {
            "BodyPartExamined": "CSPINE",
            "ViewCodeSequence": [_code("R-10212", "SRT", "left posterior oblique")],
        },
        CO,
        R,
    ),
    ("cspine-oblique-no-side", {"BodyPartExamined": "CSPINE", "ViewPosition": "OBL"}, CO, None),
    (
        "columna-cervical-es",
        {"BodyPartExamined": "COLUMNA CERVICAL", "SeriesDescription": "oblicua derecha"},
        CO,
        R,
    ),
    # --- not applicable -------------------------------------------------------------------
    ("cspine-lateral", {"BodyPartExamined": "CSPINE", "ViewPosition": "LL"}, NA, None),
    ("cspine-ap", {"BodyPartExamined": "CSPINE", "ViewPosition": "AP"}, NA, None),
    ("lspine-oblique", {"BodyPartExamined": "LSPINE", "ViewPosition": "RPO"}, NA, None),
    ("lspine-no-view", {"BodyPartExamined": "LSPINE"}, NA, None),
    ("lspine-two-views-in-text", {"BodyPartExamined": "LSPINE", "SeriesDescription": "AP + LAT"}, NA, None),
    ("lspine-decubitus", {"BodyPartExamined": "LSPINE", "ViewPosition": "LLD"}, NA, None),
    ("tspine", {"BodyPartExamined": "TSPINE", "ViewPosition": "LL"}, NA, None),
    ("bws-german", {"SeriesDescription": "BWS seitlich"}, NA, None),
    ("whole-spine", {"BodyPartExamined": "SPINE", "ViewPosition": "LL"}, NA, None),
    ("chest", {"BodyPartExamined": "CHEST", "ViewPosition": "PA"}, NA, None),
    ("chest-despite-description", {"BodyPartExamined": "CHEST", "SeriesDescription": "LSPINE LAT"}, NA, None),
    ("femoral-neck", {"SeriesDescription": "Femoral neck oblique"}, NA, None),
    ("knee", {"BodyPartExamined": "KNEE", "ViewPosition": "LL"}, NA, None),
    ("nothing", {}, NA, None),
    ("ct-lspine", {"Modality": "CT", "BodyPartExamined": "LSPINE", "ViewPosition": "LL"}, NA, None),
    ("mr-cspine", {"Modality": "MR", "BodyPartExamined": "CSPINE", "ViewPosition": "RAO"}, NA, None),
    (
        "derived-sc-overlay",
        {
            "SOPClassUID": SC,
            "Modality": "OT",
            "ImageType": ["DERIVED", "SECONDARY"],
            "BodyPartExamined": "LSPINE",
            "ViewPosition": "LL",
        },
        NA,
        None,
    ),
    # --- secondary capture of a radiograph ------------------------------------------------
    (
        "sc-original",
        {
            "SOPClassUID": SC,
            "Modality": "OT",
            "ImageType": ["ORIGINAL", "PRIMARY"],
            "SeriesDescription": "LSPINE LAT",
        },
        LL,
        None,
    ),
]


@pytest.mark.parametrize(
    ("tags", "analysis", "laterality"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_builtin_routing_table(
    tags: dict[str, Any], analysis: Analysis, laterality: Laterality | None
) -> None:
    decision = route(_ds(**tags), RouteSettings(), "MODALITY")
    assert decision.analysis is analysis, decision.reason
    assert decision.laterality is laterality, decision.reason
    assert decision.reason


def test_unknown_view_words_give_a_reason() -> None:
    decision = route(_ds(BodyPartExamined="CSPINE", SeriesDescription="Swimmer view"), RouteSettings())
    assert decision.analysis is NA
    assert "view not recognised" in decision.reason


def test_reason_names_the_deciding_tags_without_patient_data() -> None:
    ds = _ds(BodyPartExamined="LSPINE", ViewPosition="LL", PatientName="Doe^Jane", PatientID="12345")
    decision = route(ds, RouteSettings())
    assert "BodyPartExamined='LSPINE'" in decision.reason
    assert "ViewPosition='LL'" in decision.reason
    assert "Doe" not in decision.reason and "12345" not in decision.reason


def test_site_rules_come_first_and_match_case_insensitively() -> None:
    settings = RouteSettings(
        rules=[
            RouteRule(analysis=LAP, modality=["cr"], body_part=["*"], series_description_contains="scout"),
            RouteRule(analysis=CO, calling_aet=["NECKROOM"], view=["obl"]),
        ]
    )
    scout = route(_ds(Modality="CR", SeriesDescription="Lumbar SCOUT lat"), settings, "X")
    assert scout.analysis is LAP
    assert scout.reason.startswith("site rule #1")
    # Rule 2 only for its calling AE; the side still comes from the tags.
    neck = _ds(SeriesDescription="whatever OBL LT")
    assert route(neck, settings, "NECKROOM").analysis is CO
    assert route(neck, settings, "NECKROOM").laterality is L
    assert route(neck, settings, "OTHER").analysis is NA


def test_rule_with_specific_values_does_not_match_missing_tags() -> None:
    settings = RouteSettings(rules=[RouteRule(analysis=LL, body_part=["LSPINE"], view=["LAT"])])
    assert route(_ds(ViewPosition="LL"), settings).analysis is NA  # no body part at all
    assert route(_ds(BodyPartExamined="L-SPINE", ViewPosition="LL"), settings).reason.startswith("site rule")


def test_rule_body_part_matches_raw_value_too() -> None:
    settings = RouteSettings(rules=[RouteRule(analysis=LL, body_part=["XYZ-SPECIAL"])])
    assert route(_ds(BodyPartExamined="xyz-special"), settings).analysis is LL


def test_builtin_rules_can_be_disabled() -> None:
    settings = RouteSettings(use_builtin_rules=False)
    decision = route(_ds(BodyPartExamined="LSPINE", ViewPosition="LL"), settings)
    assert decision.analysis is NA
    assert "disabled" in decision.reason


def test_derived_secondary_capture_is_never_routed_even_by_a_site_rule() -> None:
    settings = RouteSettings(rules=[RouteRule(analysis=LL)])
    ds = _ds(SOPClassUID=SC, Modality="OT", ImageType=["DERIVED", "SECONDARY"])
    assert route(ds, settings).analysis is NA


def test_helpers_expose_normalised_values() -> None:
    ds = _ds(BodyPartExamined="L-SPINE", ViewPosition="RAO")
    region = body_region(ds)
    view = projection(ds)
    side = oblique_laterality(ds)
    assert region is not None and region.value is BodyRegion.LSPINE
    assert view is not None and view.value is View.OBL
    assert side is not None and side.value is R


def test_malformed_values_do_not_break_routing() -> None:
    ds = Dataset()
    ds.Modality = "DX"
    ds.BodyPartExamined = "LSPINE"
    ds.ViewCodeSequence = [Dataset()]  # an item without a code
    ds.ViewPosition = ""
    decision = route(ds, RouteSettings())
    assert decision.analysis is NA


@pytest.mark.parametrize("kind", ["lumbar_lateral", "lumbar_ap", "cervical_oblique", "other"])
def test_routing_agrees_with_synthetic_ground_truth(kind: str) -> None:
    """cdss.synth writes real-world header spellings (``wild_headers``); routing must recover the kind."""
    from cdss.synth import generate

    expected = {
        "lumbar_lateral": LL,
        "lumbar_ap": LAP,
        "cervical_oblique": CO,
        "other": NA,
    }[kind]
    for index in range(6):
        ds, truth = generate(kind, seed=7, index=index, max_side=192, wild_headers=True)
        decision = route(ds, RouteSettings(), "MODALITY")
        assert decision.analysis is expected, (index, decision.reason)
        if kind == "cervical_oblique":
            # The synthetic headers always name the side somewhere (ViewPosition, text, laterality).
            assert decision.laterality is Laterality(truth["cervical"]["laterality"]), (
                index,
                decision.reason,
            )
