"""Which analysis applies to an image: site rules first, then the built-in tag heuristics."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from cdss.analysis.types import Laterality
from cdss.config import Analysis, RouteRule, RouteSettings
from cdss.route.tags import (
    BodyRegion,
    Evidence,
    View,
    body_region,
    oblique_laterality,
    projection,
    tag_text,
)

__all__ = ["RADIOGRAPHIC_MODALITIES", "SECONDARY_CAPTURE_CLASSES", "RouteDecision", "route"]

#: Modalities the built-in rules analyse (projection radiography, and OT/absent for SC).
RADIOGRAPHIC_MODALITIES = frozenset({"CR", "DX", "RG", "DR", "OT"})

#: Secondary Capture SOP classes (single-frame and the multi-frame grayscale ones).
SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)

_REGION_WORDS = {
    BodyRegion.LSPINE: "lumbar spine",
    BodyRegion.CSPINE: "cervical spine",
    BodyRegion.TSPINE: "thoracic spine",
    BodyRegion.SPINE: "whole/unspecified spine",
    BodyRegion.OTHER: "not a spine region",
}
_VIEW_WORDS = {View.LAT: "lateral", View.AP: "AP", View.PA: "PA", View.OBL: "oblique"}


@dataclass(frozen=True)
class RouteDecision:
    """The outcome of routing one image.

    Attributes
    ----------
    analysis
        The analysis to run (``NOT_APPLICABLE`` when none applies).
    laterality
        For ``CERVICAL_OBLIQUE``: the side of the foramina shown, or ``None`` when the tags do
        not say (the cervical model infers it). Always ``None`` for the other analyses.
    reason
        Human-readable explanation naming the tags that decided (no patient data).
    """

    analysis: Analysis
    laterality: Laterality | None
    reason: str


@dataclass(frozen=True)
class _Facts:
    modality: str | None
    sop_class: str | None
    region: Evidence | None
    view: Evidence | None
    body_part_raw: str | None
    calling_aet: str | None
    descriptions: tuple[str, ...]


def _facts(ds: Dataset, calling_aet: str | None) -> _Facts:
    modality = tag_text(ds, "Modality")
    return _Facts(
        modality=modality.upper() if modality else None,
        sop_class=tag_text(ds, "SOPClassUID"),
        region=body_region(ds),
        view=projection(ds),
        body_part_raw=(tag_text(ds, "BodyPartExamined") or "").upper() or None,
        calling_aet=calling_aet.strip() if calling_aet else None,
        descriptions=tuple(
            text.upper() for text in (tag_text(ds, k) for k in ("SeriesDescription", "ProtocolName")) if text
        ),
    )


def _accepts(values: list[str], *candidates: str | None) -> bool:
    wanted = {v.strip().upper() for v in values}
    if "*" in wanted:
        return True
    return any(c is not None and c.strip().upper() in wanted for c in candidates)


def _rule_matches(rule: RouteRule, facts: _Facts) -> bool:
    if not _accepts(rule.modality, facts.modality):
        return False
    region = facts.region.value.value if facts.region else None
    if not _accepts(rule.body_part, region, facts.body_part_raw):
        return False
    view = facts.view.value.value if facts.view else None
    if not _accepts(rule.view, view):
        return False
    if not _accepts(rule.calling_aet, facts.calling_aet):
        return False
    if rule.series_description_contains:
        needle = rule.series_description_contains.upper()
        if not any(needle in text for text in facts.descriptions):
            return False
    return True


def _laterality_for(analysis: Analysis, ds: Dataset) -> tuple[Laterality | None, str]:
    if analysis is not Analysis.CERVICAL_OBLIQUE:
        return None, ""
    side = oblique_laterality(ds)
    if side is None:
        return None, "; side unknown (inferred by the model)"
    return side.value, f"; side {side.value.value} ({side.source})"


def _describe(facts: _Facts) -> str:
    parts = []
    if facts.region:
        parts.append(f"{_REGION_WORDS[facts.region.value]} ({facts.region.source})")
    else:
        parts.append("body region unknown")
    if facts.view:
        parts.append(f"{_VIEW_WORDS[facts.view.value]} ({facts.view.source})")
    else:
        parts.append("view unknown")
    return ", ".join(parts)


def _is_derived_secondary_capture(ds: Dataset, facts: _Facts) -> bool:
    if facts.sop_class not in SECONDARY_CAPTURE_CLASSES:
        return False
    image_type = tag_text(ds, "ImageType") or ""
    return image_type.upper().startswith("DERIVED")


def route(ds: Dataset, settings: RouteSettings, calling_aet: str | None = None) -> RouteDecision:
    """Decide which analysis applies to an image.

    Parameters
    ----------
    ds
        The image's header (pixel data is not needed; ``stop_before_pixels`` datasets are fine).
    settings
        ``[route]`` settings: site rules (tried first, in order) and ``use_builtin_rules``.
    calling_aet
        Calling AE title of the association the image arrived on (site rules may use it).

    Returns
    -------
    RouteDecision
        The analysis, the oblique side for cervical views and the reason.

    Notes
    -----
    Built-in rules: a lumbar lateral view → ``LUMBAR_LATERAL``; a lumbar AP or PA view →
    ``LUMBAR_AP``; a cervical oblique view (left or right) → ``CERVICAL_OBLIQUE``; anything else
    → ``NOT_APPLICABLE`` with the reason. Only projection radiographs (Modality CR, DX, RG, DR,
    OT or absent) are analysed by the built-in rules. Derived Secondary Captures (``ImageType``
    starting with ``DERIVED``, e.g. burned-in result overlays, including this node's own when a
    PACS sends them back) are never analysed, whatever the rules say, to prevent loops.
    """
    facts = _facts(ds, calling_aet)
    if _is_derived_secondary_capture(ds, facts):
        return RouteDecision(
            Analysis.NOT_APPLICABLE,
            None,
            "derived Secondary Capture (ImageType DERIVED, e.g. a burned-in result overlay): not analysed",
        )
    for index, rule in enumerate(settings.rules):
        if _rule_matches(rule, facts):
            laterality, side_text = _laterality_for(rule.analysis, ds)
            return RouteDecision(
                rule.analysis,
                laterality,
                f"site rule #{index + 1} matched: {_describe(facts)}{side_text}",
            )
    if not settings.use_builtin_rules:
        return RouteDecision(
            Analysis.NOT_APPLICABLE, None, "no site rule matched and built-in rules are disabled"
        )
    return _builtin(ds, facts)


def _builtin(ds: Dataset, facts: _Facts) -> RouteDecision:
    na = Analysis.NOT_APPLICABLE
    if facts.modality is not None and facts.modality not in RADIOGRAPHIC_MODALITIES:
        return RouteDecision(na, None, f"Modality {facts.modality} is not a projection radiograph")
    described = _describe(facts)
    region = facts.region.value if facts.region else None
    view = facts.view.value if facts.view else None
    if region is None:
        return RouteDecision(na, None, f"{described}: no body region recognised")
    if region is BodyRegion.LSPINE:
        if view is View.LAT:
            return RouteDecision(Analysis.LUMBAR_LATERAL, None, described)
        if view in (View.AP, View.PA):
            return RouteDecision(Analysis.LUMBAR_AP, None, described)
        if view is View.OBL:
            return RouteDecision(na, None, f"{described}: lumbar oblique views are not analysed")
        return RouteDecision(na, None, f"{described}: lumbar view not recognised")
    if region is BodyRegion.CSPINE:
        if view is View.OBL:
            laterality, side_text = _laterality_for(Analysis.CERVICAL_OBLIQUE, ds)
            return RouteDecision(Analysis.CERVICAL_OBLIQUE, laterality, f"{described}{side_text}")
        if view is None:
            return RouteDecision(na, None, f"{described}: cervical view not recognised")
        return RouteDecision(na, None, f"{described}: only oblique cervical views are analysed")
    return RouteDecision(na, None, f"{described}: no analysis for this region")
