"""Per-level confidence and the abstention rule: a level that fails a check is *not measured*.

A wrong grade is worse than no grade. Every measured level gets a confidence in [0, 1] from
the evidence the analysis has about it, and a level is reported ``NOT_MEASURED`` — with the
reason, never with a slip or a grade — when any check fails:

==========================  ==================================================================
check                       fails when
==========================  ==================================================================
anatomy (chain)             a body of the level is implausible in the spine chain (spacing,
                            shape; :mod:`cdss.analysis.lumbar.chain`)
detection                   the weaker of the two bodies' detection confidences is below
                            ``min_detection``
shape fit                   a body's mask overlaps the quadrilateral of its own four corners
                            by less than ``min_shape_fit`` (intersection over union): the mask
                            is not a four-sided body (a tail, a hole, half a sacrum), so its
                            corners are not where a reader would put them
mirror agreement            the level measured on the image and on its mirror image (two
                            independent segmentations) differ by more than
                            ``max_flip_delta_pp`` percentage points, or the mirror pass did not
                            find and name the same two bodies
edge agreement              the corners fitted on the mask and those moved onto the image's
                            edges give slips more than ``max_refine_delta_pp`` apart
confidence                  the combined confidence is below ``min_confidence``
image                       at least ``max_failed_levels`` other levels of the same image failed
                            a check: a segmentation that does not fit most of the spine is not
                            trusted on its remaining levels either
==========================  ==================================================================

A last rule is about the grade, not the segmentation (:func:`apply_grade_margin`): a level whose
slip lies within ``grade_margin_pp + grade_margin_fraction × |slip|`` of a grade boundary (the
listhesis threshold, 25, 50, 75, 100 %) is not graded, because a measurement error of that size
would change the grade. The band grows with the slip because slip % is a displacement divided by
the endplate width: an error of a few percent in the width moves a 70 % slip by several points
and a 3 % slip by almost none. It does not count towards the image rule (the segmentation is not
in doubt), and it is a reporting policy like the listhesis threshold (``models.grade_margin_pp``,
``models.grade_margin_fraction``), applied to any weights.

The confidence is the detection confidence multiplied by ``1 / (1 + (Δ / scale)²)`` for each
disagreement Δ (mirror, edge) that was measured: 1.0 for two confident, mutually consistent
segmentations, falling towards 0 as they disagree. The thresholds were chosen on validation
images of both synthetic families (docs/models/lumbar.md, "Abstention") so that no level with
an error above 15 pp is reported there; how often each check fires is in the model card.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cdss.analysis.geometry import grade_boundaries
from cdss.analysis.types import LevelMeasurement, LevelStatus, MeyerdingGrade, SlipDirection
from cdss.config import ModelSettings

__all__ = [
    "DEFAULT_GRADE_MARGIN_FRACTION",
    "DEFAULT_GRADE_MARGIN_PP",
    "AbstainRule",
    "GradeMargin",
    "LevelEvidence",
    "apply_abstention",
    "apply_grade_margin",
    "level_confidence",
]


#: Defaults of ``models.grade_margin_pp`` (percentage points) and ``models.grade_margin_fraction``
#: (read from the settings model, the one place they are set): chosen on validation images of both
#: synthetic families (docs/models/lumbar.md, "Grade boundary").
DEFAULT_GRADE_MARGIN_PP: float = float(ModelSettings.model_fields["grade_margin_pp"].default)
DEFAULT_GRADE_MARGIN_FRACTION: float = float(ModelSettings.model_fields["grade_margin_fraction"].default)


@dataclass(frozen=True)
class GradeMargin:
    """The band around each grade boundary in which no grade is reported.

    Attributes
    ----------
    pp
        Constant half-width, percentage points.
    fraction
        Added half-width per point of slip: the band around a level's slip ``s`` (percent) is
        ``pp + fraction × |s|`` percentage points.
    """

    pp: float = DEFAULT_GRADE_MARGIN_PP
    fraction: float = DEFAULT_GRADE_MARGIN_FRACTION

    @classmethod
    def off(cls) -> GradeMargin:
        """No band: every measured level gets its grade."""
        return cls(0.0, 0.0)

    @property
    def enabled(self) -> bool:
        return self.pp > 0 or self.fraction > 0

    def band_pp(self, slip_percent: float) -> float:
        """Half-width of the band for a level measured at ``slip_percent``, percentage points."""
        return self.pp + self.fraction * abs(slip_percent)


#: Names of the grade boundaries of :func:`~cdss.analysis.geometry.grade_boundaries`, in order.
_BOUNDARY_NAMES = (
    "the listhesis threshold",
    "the grade I/II limit",
    "the grade II/III limit",
    "the grade III/IV limit",
    "the grade IV/V limit",
)


@dataclass(frozen=True)
class LevelEvidence:
    """What the analysis knows about one level's measurement.

    Attributes
    ----------
    detection
        The weaker of the two bodies' detection confidences, [0, 1].
    flip_delta_pp
        |slip on the image − slip on its mirror image|, percentage points (``None``: no mirror pass).
    refine_delta_pp
        |slip from edge-refined corners − slip from mask corners|, percentage points (``None``: no refinement).
    problem
        Why the chain finds a body of this level implausible (``""``: nothing).
    mirror_confirmed
        ``False`` when a mirror pass ran but did not find and name both bodies of the level at
        the same places (``None``: no mirror pass).
    shape_fit
        The lower of the two bodies' mask / corner-quadrilateral intersection over union, [0, 1]
        (:func:`cdss.analysis.lumbar.measure.quadrilateral_fit`; ``None``: not measured).
    shape_body
        The body that ``shape_fit`` belongs to (``"S1"``), for the reason.
    """

    detection: float
    flip_delta_pp: float | None = None
    refine_delta_pp: float | None = None
    problem: str = ""
    mirror_confirmed: bool | None = None
    shape_fit: float | None = None
    shape_body: str = ""


@dataclass(frozen=True)
class AbstainRule:
    """Thresholds of the abstention rule (see the module docstring)."""

    min_detection: float = 0.5
    max_flip_delta_pp: float = 6.0
    max_refine_delta_pp: float = 8.0
    min_confidence: float = 0.35
    max_failed_levels: float = 3  # 0: off
    min_shape_fit: float = 0.75  # 0: off
    flip_scale_pp: float = 4.0
    refine_scale_pp: float = 6.0

    @classmethod
    def from_mapping(cls, values: dict[str, float] | None) -> AbstainRule:
        """A rule from a (partial) mapping, e.g. the ``abstain`` block of the weights' metadata."""
        if not values:
            return cls()
        known = {k: float(v) for k, v in values.items() if k in cls.__dataclass_fields__}
        return replace(cls(), **known)


def level_confidence(ev: LevelEvidence, rule: AbstainRule) -> float:
    """Confidence in [0, 1] of one level's measurement (see the module docstring)."""
    c = max(0.0, min(1.0, float(ev.detection)))
    if ev.mirror_confirmed is False:
        c *= 0.5
    if ev.flip_delta_pp is not None:
        c /= 1.0 + (ev.flip_delta_pp / rule.flip_scale_pp) ** 2
    if ev.refine_delta_pp is not None:
        c /= 1.0 + (ev.refine_delta_pp / rule.refine_scale_pp) ** 2
    return c


def _failed_check(ev: LevelEvidence, confidence: float, rule: AbstainRule) -> tuple[str, str] | None:
    """``(check, reason)`` of the first failing check, ``None`` when all pass."""
    if ev.problem:
        return "anatomy", ev.problem
    if ev.detection < rule.min_detection:
        return "detection", f"detection confidence {ev.detection:.2f} below {rule.min_detection:.2f}"
    if ev.shape_fit is not None and ev.shape_fit < rule.min_shape_fit:
        return "shape", (
            f"{ev.shape_body or 'a body'} outline does not fit its four corners "
            f"(overlap {ev.shape_fit:.2f}, limit {rule.min_shape_fit:.2f})"
        )
    if ev.mirror_confirmed is False:
        return "mirror", "the mirror-image segmentation did not find and name the same two vertebrae"
    if ev.flip_delta_pp is not None and ev.flip_delta_pp > rule.max_flip_delta_pp:
        return "mirror", (
            f"image and mirror-image segmentations disagree by {ev.flip_delta_pp:.1f} pp "
            f"(limit {rule.max_flip_delta_pp:.0f} pp)"
        )
    if ev.refine_delta_pp is not None and ev.refine_delta_pp > rule.max_refine_delta_pp:
        return "edges", (
            f"mask and image-edge corners disagree by {ev.refine_delta_pp:.1f} pp "
            f"(limit {rule.max_refine_delta_pp:.0f} pp)"
        )
    if confidence < rule.min_confidence:
        return "confidence", f"confidence {confidence:.2f} below {rule.min_confidence:.2f}"
    return None


def apply_abstention(
    levels: list[LevelMeasurement], evidence: dict[str, LevelEvidence], rule: AbstainRule
) -> tuple[list[LevelMeasurement], dict[str, str]]:
    """Attach confidences; turn levels that fail a check into ``NOT_MEASURED``.

    Parameters
    ----------
    levels
        Levels as measured (``MEASURED`` ones are checked; others pass through unchanged).
    evidence
        Level name (``"L4-L5"``) → its evidence; measured levels without evidence keep no
        confidence and are not checked.
    rule
        Thresholds.

    Returns
    -------
    (levels, fired)
        The new levels, and level name → the check that made it not measured.
    """
    out: list[LevelMeasurement] = []
    fired: dict[str, str] = {}
    for lv in levels:
        ev = evidence.get(lv.name)
        if lv.status is not LevelStatus.MEASURED or ev is None:
            out.append(lv)
            continue
        conf = level_confidence(ev, rule)
        failed = _failed_check(ev, conf, rule)
        if failed is None:
            out.append(replace(lv, confidence=round(conf, 4)))
            continue
        check, reason = failed
        fired[lv.name] = check
        out.append(_not_measured(lv, reason, conf))
    failed_checks = sum(1 for lv in out if lv.status is LevelStatus.NOT_MEASURED and lv.name in fired)
    if rule.max_failed_levels and failed_checks >= rule.max_failed_levels:
        reason = (
            f"{failed_checks} of {len(out)} levels of this image failed the checks: the segmentation "
            "is not trusted on its other levels either"
        )
        for i, lv in enumerate(out):
            if lv.status is LevelStatus.MEASURED:
                fired[lv.name] = "image"
                out[i] = _not_measured(lv, reason, lv.confidence or 0.0)
    return out, fired


def apply_grade_margin(
    levels: list[LevelMeasurement], threshold_percent: float, margin: GradeMargin
) -> tuple[list[LevelMeasurement], dict[str, str]]:
    """Do not grade a level whose slip is within ``margin.band_pp(slip)`` of a grade boundary.

    Parameters
    ----------
    levels
        Levels after :func:`apply_abstention`; only ``MEASURED`` lateral levels (those with a
        slip) are checked.
    threshold_percent
        The listhesis threshold, percent (the none / grade I boundary).
    margin
        The band around each boundary (:class:`GradeMargin`); :meth:`GradeMargin.off` turns the
        rule off.

    Returns
    -------
    (levels, fired)
        The new levels (a level in a band becomes ``NOT_MEASURED``, keeping its confidence, with
        the boundary named in the reason), and level name → ``"grade boundary"``.
    """
    if not margin.enabled:
        return list(levels), {}
    bounds = grade_boundaries(threshold_percent)
    out: list[LevelMeasurement] = []
    fired: dict[str, str] = {}
    for lv in levels:
        if lv.status is not LevelStatus.MEASURED or lv.slip_percent is None:
            out.append(lv)
            continue
        magnitude = abs(lv.slip_percent)
        band = margin.band_pp(magnitude)
        i = min(range(len(bounds)), key=lambda k: abs(magnitude - bounds[k]))
        if abs(magnitude - bounds[i]) >= band:
            out.append(lv)
            continue
        fired[lv.name] = "grade boundary"
        # Short: it is the line shown beside the level on the image (GSPS, SC, OHIF).
        reason = f"slip within {band:.1f} pp of {_BOUNDARY_NAMES[i]} ({bounds[i]:g} %), grade uncertain"
        out.append(_not_measured(lv, reason, lv.confidence if lv.confidence is not None else 0.0))
    return out, fired


def _not_measured(lv: LevelMeasurement, reason: str, confidence: float) -> LevelMeasurement:
    return LevelMeasurement(
        upper=lv.upper,
        lower=lv.lower,
        status=LevelStatus.NOT_MEASURED,
        direction=SlipDirection.NONE,
        grade=MeyerdingGrade.NONE,
        reason=reason,
        confidence=round(confidence, 4),
    )
