"""The job summary: what one analysis job found, as stored in ``jobs.summary`` (JSON).

One typed object with one writer (:func:`cdss.jobs.pipeline.process_job`, via
:meth:`JobSummary.from_result` / :meth:`JobSummary.not_applicable`) and one reader
(:meth:`JobSummary.from_json`) for everyone who shows it: the audit description, the admin
API (``summary_text``), the dashboard and ``cdss jobs list``. No pixels and no patient data.

Layout (keys in this order; optional keys are left out when they have no value)::

    {"analysis": "lumbar_lateral" | "lumbar_ap" | "cervical_oblique" | "not_applicable",
     "reason": "...",                                   # not applicable
     "superseded_by_job_id": 7, "superseded_by_sop_instance_uid": "...",   # FOR PROCESSING twin
     "reference_sop_instance_uid": "...", "has_findings": true,
     "model": {"name": "...", "version": "...", "weights_sha256": "..."},
     "results": [{"kind": "SEG", "sop_instance_uid": "...", "series_instance_uid": "..."}],
     "notes": ["..."],
     "lumbar": {"view": "lateral", "vertebrae": ["L1", ...], "missing": [...],
                "anterior_direction": "left", "listhesis_threshold_percent": 5.0,
                "levels": [{"level": "L4-L5", "status": "measured", "slip_percent": 18.2,
                            "direction": "anterolisthesis", "grade": "I",
                            "reason": "...", "confidence": 0.93}]},      # reason/confidence optional
     "cervical": {"laterality": "L", "probability": 0.87, "label": "abnormal",
                  "operating_point": 0.5, "roi": [c0, r0, c1, r1]},
     "route_reason": "...",
     "route": {"rule": "tags" | "classifier" | "classifier_veto" | ..., "tag_status": "complete" | ...,
               "tags": [{"tag": "ViewPosition", "source": "ViewPosition='LL'", "says": "LAT"}, ...],
               "tag_analysis": "...", "classifier": {"status": "used", "label": "lumbar_lateral",
               "probability": 0.99, "probabilities": {...}, "model": "...", "weights_sha256": "..."},
               "thresholds": {"decide": 0.7, "veto": 0.8}}}   # cdss.route.rules.RouteEvidence

Extending it
------------
Changes are additive: a new optional field defaults to "absent" (``None``) and is written only
when set, so rows written before it existed still read, and readers that do not know it ignore
it. Keys this version does not know are kept in :attr:`JobSummary.extra` and written back
unchanged. Never rename or re-type a key; add a new one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdss.analysis.types import CervicalResult, LumbarResult
from cdss.route.rules import RouteEvidence

__all__ = [
    "CervicalSummary",
    "JobSummary",
    "LevelSummary",
    "LumbarSummary",
    "ModelRef",
    "ResultRef",
]

NOT_APPLICABLE = "not_applicable"


def _str(value: Any, default: str | None = None) -> str | None:
    return value if isinstance(value, str) else default


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _strs(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(v for v in value if isinstance(v, str))


def _dict(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _drop_none(items: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    return {k: v for k, v in items if v is not None}


@dataclass(frozen=True)
class ModelRef:
    """The model that produced the findings."""

    name: str
    version: str
    weights_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "weights_sha256": self.weights_sha256}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelRef:
        return cls(
            _str(data.get("name"), "") or "",
            _str(data.get("version"), "") or "",
            _str(data.get("weights_sha256"), "") or "",
        )


@dataclass(frozen=True)
class ResultRef:
    """One result object the job created."""

    kind: str
    sop_instance_uid: str
    series_instance_uid: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sop_instance_uid": self.sop_instance_uid,
            "series_instance_uid": self.series_instance_uid,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResultRef:
        return cls(
            _str(data.get("kind"), "") or "",
            _str(data.get("sop_instance_uid"), "") or "",
            _str(data.get("series_instance_uid"), "") or "",
        )


@dataclass(frozen=True)
class LevelSummary:
    """One lumbar level (values of :class:`cdss.analysis.types.LevelMeasurement`)."""

    level: str
    status: str = "measured"
    slip_percent: float | None = None  # percent of the endplate width, 2 decimals
    direction: str = ""
    grade: str = "none"
    reason: str = ""  # why not measured / missing; written when not empty
    confidence: float | None = None  # in [0, 1]; written when known

    @property
    def graded(self) -> bool:
        return self.grade not in ("none", "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "level": self.level,
            "status": self.status,
            "slip_percent": self.slip_percent,
            "direction": self.direction,
            "grade": self.grade,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.confidence is not None:
            out["confidence"] = self.confidence
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LevelSummary:
        return cls(
            level=_str(data.get("level"), "") or "",
            status=_str(data.get("status"), "measured") or "measured",
            slip_percent=_num(data.get("slip_percent")),
            direction=_str(data.get("direction"), "") or "",
            grade=_str(data.get("grade"), "none") or "none",
            reason=_str(data.get("reason"), "") or "",
            confidence=_num(data.get("confidence")),
        )


@dataclass(frozen=True)
class LumbarSummary:
    """Lumbar findings of one image."""

    levels: tuple[LevelSummary, ...] = ()
    view: str | None = None
    vertebrae: tuple[str, ...] | None = None
    missing: tuple[str, ...] | None = None
    anterior_direction: str | None = None
    listhesis_threshold_percent: float | None = None

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            [
                ("view", self.view),
                ("vertebrae", None if self.vertebrae is None else list(self.vertebrae)),
                ("missing", None if self.missing is None else list(self.missing)),
                ("anterior_direction", self.anterior_direction),
                ("listhesis_threshold_percent", self.listhesis_threshold_percent),
                ("levels", [lv.to_json() for lv in self.levels]),
            ]
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LumbarSummary:
        levels = data.get("levels")
        return cls(
            levels=tuple(
                LevelSummary.from_json(lv) for lv in (levels if isinstance(levels, list) else []) if _dict(lv)
            ),
            view=_str(data.get("view")),
            vertebrae=_strs(data.get("vertebrae")),
            missing=_strs(data.get("missing")),
            anterior_direction=_str(data.get("anterior_direction")),
            listhesis_threshold_percent=_num(data.get("listhesis_threshold_percent")),
        )


@dataclass(frozen=True)
class CervicalSummary:
    """Cervical foraminal stenosis finding of one oblique view."""

    laterality: str | None = None  # "L" / "R"
    probability: float | None = None  # in [0, 1], 4 decimals
    label: str | None = None  # "normal" / "abnormal"
    operating_point: float | None = None
    roi: tuple[float, ...] | None = None  # (col0, row0, col1, row1) source pixels

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            [
                ("laterality", self.laterality),
                ("probability", self.probability),
                ("label", self.label),
                ("operating_point", self.operating_point),
                ("roi", None if self.roi is None else list(self.roi)),
            ]
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CervicalSummary:
        roi = data.get("roi")
        return cls(
            laterality=_str(data.get("laterality")),
            probability=_num(data.get("probability")),
            label=_str(data.get("label")),
            operating_point=_num(data.get("operating_point")),
            roi=tuple(v for v in (_num(x) for x in roi) if v is not None) if isinstance(roi, list) else None,
        )


_KNOWN = (
    "analysis",
    "reason",
    "superseded_by_job_id",
    "superseded_by_sop_instance_uid",
    "reference_sop_instance_uid",
    "has_findings",
    "model",
    "results",
    "notes",
    "lumbar",
    "cervical",
    "route_reason",
    "route",
)


@dataclass(frozen=True)
class JobSummary:
    """The ``summary`` of one job (module docstring for the JSON layout and how to extend it)."""

    analysis: str | None = None
    reason: str | None = None
    superseded_by_job_id: int | None = None
    superseded_by_sop_instance_uid: str | None = None
    reference_sop_instance_uid: str | None = None
    has_findings: bool | None = None
    model: ModelRef | None = None
    results: tuple[ResultRef, ...] | None = None
    notes: tuple[str, ...] | None = None
    lumbar: LumbarSummary | None = None
    cervical: CervicalSummary | None = None
    route_reason: str | None = None
    #: How routing decided (tags, classifier, veto) and on what evidence.
    route: RouteEvidence | None = None
    #: Keys this version does not know, kept as read.
    extra: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ writers
    @classmethod
    def from_result(
        cls,
        result: LumbarResult | CervicalResult,
        analysis: str,
        reference_uid: str,
        results: Sequence[ResultRef],
        notes: Sequence[str],
        route_reason: str,
        route: RouteEvidence | None = None,
    ) -> JobSummary:
        """The summary of a succeeded job: findings of ``result`` and the objects created."""
        model = result.model
        lumbar = cervical = None
        if isinstance(result, LumbarResult):
            lumbar = LumbarSummary(
                view=result.view.value,
                vertebrae=tuple(v.label.value for v in result.vertebrae),
                missing=tuple(v.value for v in result.missing),
                anterior_direction=result.anterior_direction,
                listhesis_threshold_percent=result.listhesis_threshold_percent,
                levels=tuple(
                    LevelSummary(
                        level=lv.name,
                        status=lv.status.value,
                        slip_percent=None if lv.slip_percent is None else round(float(lv.slip_percent), 2),
                        direction=lv.direction.value,
                        grade=lv.grade.value,
                        reason=lv.reason,
                        confidence=None if lv.confidence is None else float(lv.confidence),
                    )
                    for lv in result.levels
                ),
            )
        elif isinstance(result, CervicalResult):
            cervical = CervicalSummary(
                laterality=result.laterality.value,
                probability=round(float(result.probability), 4),
                label=result.label.value,
                operating_point=float(result.operating_point),
                roi=tuple(round(float(v), 1) for v in result.roi),
            )
        return cls(
            analysis=analysis,
            reference_sop_instance_uid=reference_uid,
            has_findings=bool(result.has_findings),
            model=ModelRef(model.name, model.version, model.weights_sha256),
            results=tuple(results),
            notes=(*result.notes, *notes),
            lumbar=lumbar,
            cervical=cervical,
            route_reason=route_reason,
            route=route,
        )

    @classmethod
    def not_applicable(
        cls,
        analysis: str,
        reason: str,
        *,
        superseded_by_job_id: int | None = None,
        superseded_by_sop_instance_uid: str | None = None,
        route: RouteEvidence | None = None,
    ) -> JobSummary:
        """The summary of a job whose image no analysis applies to, or that a twin superseded."""
        return cls(
            analysis=analysis,
            reason=reason,
            superseded_by_job_id=superseded_by_job_id,
            superseded_by_sop_instance_uid=superseded_by_sop_instance_uid,
            route=route,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in ``jobs.summary`` (keys in the documented order)."""
        out = _drop_none(
            [
                ("analysis", self.analysis),
                ("reason", self.reason),
            ]
        )
        if self.superseded_by_sop_instance_uid is not None or self.superseded_by_job_id is not None:
            out["superseded_by_job_id"] = self.superseded_by_job_id
            out["superseded_by_sop_instance_uid"] = self.superseded_by_sop_instance_uid
        out.update(
            _drop_none(
                [
                    ("reference_sop_instance_uid", self.reference_sop_instance_uid),
                    ("has_findings", self.has_findings),
                    ("model", None if self.model is None else self.model.to_json()),
                    ("results", None if self.results is None else [r.to_json() for r in self.results]),
                    ("notes", None if self.notes is None else list(self.notes)),
                    ("lumbar", None if self.lumbar is None else self.lumbar.to_json()),
                    ("cervical", None if self.cervical is None else self.cervical.to_json()),
                    ("route_reason", self.route_reason),
                    ("route", None if self.route is None else self.route.to_dict()),
                ]
            )
        )
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    # ------------------------------------------------------------------ reader
    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> JobSummary | None:
        """Read a stored summary (any version; odd values are dropped, never raised on).

        Returns ``None`` for an empty or missing summary (queued, running or dead jobs).
        """
        if not data or not isinstance(data, Mapping):
            return None
        model, lumbar, cervical = (
            _dict(data.get("model")),
            _dict(data.get("lumbar")),
            _dict(data.get("cervical")),
        )
        results = data.get("results")
        job_id = data.get("superseded_by_job_id")
        has_findings = data.get("has_findings")
        return cls(
            analysis=_str(data.get("analysis")),
            reason=_str(data.get("reason")),
            superseded_by_job_id=job_id if isinstance(job_id, int) and not isinstance(job_id, bool) else None,
            superseded_by_sop_instance_uid=_str(data.get("superseded_by_sop_instance_uid")),
            reference_sop_instance_uid=_str(data.get("reference_sop_instance_uid")),
            has_findings=has_findings if isinstance(has_findings, bool) else None,
            model=None if model is None else ModelRef.from_json(model),
            results=(
                tuple(ResultRef.from_json(r) for r in results if _dict(r))
                if isinstance(results, list)
                else None
            ),
            notes=_strs(data.get("notes")),
            lumbar=None if lumbar is None else LumbarSummary.from_json(lumbar),
            cervical=None if cervical is None else CervicalSummary.from_json(cervical),
            route_reason=_str(data.get("route_reason")),
            route=None if _dict(data.get("route")) is None else RouteEvidence.from_dict(data["route"]),
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )

    # ------------------------------------------------------------------ texts
    def findings_line(self) -> str:
        """Short findings, e.g. ``"listhesis L4-L5 I"`` or ``"abnormal (p=0.87, L)"`` (audit, CLI)."""
        if self.lumbar is not None:
            graded = [f"{lv.level} {lv.grade}" for lv in self.lumbar.levels if lv.graded]
            return "listhesis " + ", ".join(graded) if graded else "no listhesis graded"
        if self.cervical is not None:
            c = self.cervical
            p = f"{c.probability:.2f}" if c.probability is not None else "?"
            return f"{c.label or '?'} (p={p}, {c.laterality or '?'})"
        if self.reason is not None:
            return f"not applicable: {self.reason}"
        return ""

    def text(self) -> str | None:
        """One human-readable line (the API's ``summary_text`` and the dashboard).

        Lumbar: ``"lumbar lateral: L4-L5 anterolisthesis 18.2 % (grade I)"``; cervical:
        ``"cervical foraminal stenosis: abnormal (p = 0.87, L)"``; not applicable:
        ``"not applicable: <reason>"``. Summaries of another layout fall back to their ``text``,
        a list of ``findings`` strings, or their scalar ``key=value`` pairs.
        """
        if self.lumbar is not None:
            parts = []
            for lv in self.lumbar.levels:
                if not lv.graded:
                    continue
                slip = f" {lv.slip_percent:.1f} %" if lv.slip_percent is not None else ""
                parts.append(f"{lv.level} {lv.direction}{slip} (grade {lv.grade})".replace("  ", " "))
            prefix = f"lumbar {self.lumbar.view}: " if self.lumbar.view else "lumbar: "
            return prefix + ("; ".join(parts) if parts else "no listhesis graded")
        if self.cervical is not None:
            c = self.cervical
            p = f"p = {c.probability:.2f}" if c.probability is not None else "p = ?"
            side = f", {c.laterality}" if c.laterality else ""
            return f"cervical foraminal stenosis: {c.label or '?'} ({p}{side})"
        text = self.extra.get("text")
        if isinstance(text, str) and text:
            return text
        findings = self.extra.get("findings")
        if isinstance(findings, list) and findings and all(isinstance(f, str) for f in findings):
            return "; ".join(findings)
        if self.analysis == NOT_APPLICABLE or self.reason is not None:
            return f"not applicable: {self.reason or ''}".rstrip(": ")
        pairs = [
            f"{k}={v}"
            for k, v in self.to_json().items()
            if isinstance(v, (str, int, float, bool)) and v != ""
        ]
        return ", ".join(pairs) or None
