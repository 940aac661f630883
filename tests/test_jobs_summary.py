"""The job summary: one typed object, read back exactly as written, old and odd rows still read."""

from __future__ import annotations

import json

import numpy as np

from cdss.analysis.types import (
    CervicalResult,
    Laterality,
    LevelMeasurement,
    LevelStatus,
    LumbarResult,
    LumbarView,
    MeyerdingGrade,
    ModelInfo,
    Normality,
    SlipDirection,
    Vertebra,
    VertebraSegment,
)
from cdss.jobs.summary import JobSummary, ResultRef
from tests.api_helpers import CERVICAL_SUMMARY, CERVICAL_TEXT, LUMBAR_SUMMARY, LUMBAR_TEXT

MODEL = ModelInfo("cdss-lumbar-seg", "2.0.0", "ab" * 32, "YOLO11n-seg")


def _lumbar() -> LumbarResult:
    seg = VertebraSegment(Vertebra.L4, np.zeros((2, 2), bool), np.zeros((3, 2)), np.zeros((4, 2)), 0.9)
    levels = [
        LevelMeasurement(Vertebra.L3, Vertebra.L4, LevelStatus.MISSING, reason="L3 not found"),
        LevelMeasurement(
            Vertebra.L4,
            Vertebra.L5,
            LevelStatus.MEASURED,
            slip_percent=18.2345,
            direction=SlipDirection.ANTERIOR,
            grade=MeyerdingGrade.I,
            confidence=0.93,
        ),
    ]
    return LumbarResult(LumbarView.LATERAL, (10, 10), [seg], levels, MODEL, 5.0, "left", ["a note"])


def test_lumbar_summary_layout_and_round_trip() -> None:
    refs = [ResultRef("SEG", "1.2.3", "1.2.4")]
    summary = JobSummary.from_result(
        _lumbar(), "lumbar_lateral", "1.2.9", refs, ["twin note"], "built-in rule"
    )
    data = summary.to_json()
    assert list(data) == [
        "analysis",
        "reference_sop_instance_uid",
        "has_findings",
        "model",
        "results",
        "notes",
        "lumbar",
        "route_reason",
    ]
    assert data["notes"] == ["a note", "twin note"] and data["has_findings"] is True
    l3, l4 = data["lumbar"]["levels"]
    assert l3 == {
        "level": "L3-L4",
        "status": "missing",
        "slip_percent": None,
        "direction": "none",
        "grade": "none",
        "reason": "L3 not found",
    }
    assert l4["slip_percent"] == 18.23 and l4["confidence"] == 0.93 and "reason" not in l4
    stored = json.loads(json.dumps(data))  # what the JSON column gives back
    again = JobSummary.from_json(stored)
    assert again == summary and again.to_json() == data
    assert summary.findings_line() == "listhesis L4-L5 I"
    assert summary.text() == "lumbar lateral: L4-L5 anterolisthesis 18.2 % (grade I)"


def test_cervical_and_not_applicable_texts() -> None:
    result = CervicalResult(Laterality.LEFT, 0.87654, Normality.ABNORMAL, 0.5, (1.04, 2, 3, 4), MODEL, (9, 9))
    summary = JobSummary.from_result(result, "cervical_oblique", "1.2", [], [], "rule")
    assert summary.to_json()["cervical"] == {
        "laterality": "L",
        "probability": 0.8765,
        "label": "abnormal",
        "operating_point": 0.5,
        "roi": [1.0, 2.0, 3.0, 4.0],
    }
    assert summary.findings_line() == "abnormal (p=0.88, L)"
    na = JobSummary.not_applicable("lumbar_lateral", "superseded", superseded_by_sop_instance_uid="1.5")
    assert na.to_json() == {
        "analysis": "lumbar_lateral",
        "reason": "superseded",
        "superseded_by_job_id": None,
        "superseded_by_sop_instance_uid": "1.5",
    }
    assert na.text() == "not applicable: superseded"


def test_rows_of_other_versions_still_read() -> None:
    # Partial rows (the API test data), unknown keys kept, odd values dropped instead of raised on.
    assert JobSummary.from_json(LUMBAR_SUMMARY).text() == LUMBAR_TEXT
    assert JobSummary.from_json(CERVICAL_SUMMARY).text() == CERVICAL_TEXT
    future = {**LUMBAR_SUMMARY, "route_evidence": {"view": "lateral", "p": 0.99}}
    assert JobSummary.from_json(future).to_json()["route_evidence"] == {"view": "lateral", "p": 0.99}
    odd = JobSummary.from_json({"lumbar": {"levels": ["junk", {"level": "L5-S1", "grade": 3}]}})
    assert odd is not None and odd.text() == "lumbar: no listhesis graded"
    assert JobSummary.from_json({"text": "free text"}).text() == "free text"
    assert JobSummary.from_json(None) is None and JobSummary.from_json({}) is None
