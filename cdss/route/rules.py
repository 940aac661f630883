"""Which analysis applies to an image: site rules first, then the tags, then the picture.

The decision (docs/operations.md, "Which images are analysed"):

1. Derived Secondary Captures and non-radiographic modalities are never analysed.
2. Site rules (``[[route.rules]]``) are tried in order; the first match decides.
3. Otherwise the **tags** are read: every body region and every projection the header states
   (:func:`~cdss.route.tags.body_region_evidence`, :func:`~cdss.route.tags.projection_evidence`,
   including ``PatientOrientation``). They are *complete* when they name a region and, for the
   lumbar and cervical spine, a view; *contradictory* when two sources disagree (``LSPINE`` vs
   ``CHEST``, lateral vs AP). Complete, consistent tags decide.
4. When the tags are absent, incomplete or contradictory, the **view classifier** decides
   (:class:`cdss.analysis.view.classifier.ViewClassifier`), if its top probability reaches
   ``route.classifier_min_probability``; it may not move an image to a spine region other than
   the one the header names. When the header names the region and only the view is missing,
   the probability that counts is that of the view *given* the region (``p(view) / p(region)``,
   the region holding at least half of the classifier's probability). Below that probability
   the header's own reading (the most specific source wins, as before the classifier) stands.
5. **Veto**: whatever decided an analysis (tags or a site rule), the classifier stops it when it
   is confident that the image is not of that region — probability of "other" plus that of the
   other spine region ≥ ``route.classifier_veto_probability`` (e.g. a chest labelled LSPINE).

Every decision carries its evidence (:class:`RouteEvidence`): what each tag said, the
classifier's label and probabilities, the thresholds and the rule that decided. It goes into the
job summary and the audit event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from pydicom.dataset import Dataset

from cdss.analysis.pixels import display_image
from cdss.analysis.types import Laterality, ModelInfo
from cdss.analysis.view.labels import ViewLabel, ViewPrediction
from cdss.config import Analysis, RouteRule, RouteSettings
from cdss.route.tags import (
    BodyRegion,
    Evidence,
    View,
    body_region,
    body_region_evidence,
    oblique_laterality,
    projection,
    projection_evidence,
    tag_text,
    views_compatible,
)

__all__ = [
    "RADIOGRAPHIC_MODALITIES",
    "SECONDARY_CAPTURE_CLASSES",
    "ClassifierEvidence",
    "DecisionRule",
    "RouteDecision",
    "RouteEvidence",
    "TagStatement",
    "TagStatus",
    "ViewClassifying",
    "route",
]

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


class DecisionRule(StrEnum):
    """Which step of the decision (module docstring) settled the analysis."""

    DERIVED_SECONDARY_CAPTURE = "derived_secondary_capture"
    MODALITY = "modality"
    SITE_RULE = "site_rule"
    BUILTIN_DISABLED = "builtin_disabled"
    TAGS = "tags"  # complete, consistent tags
    TAGS_FALLBACK = "tags_fallback"  # incomplete/contradictory tags, no confident classifier
    CLASSIFIER = "classifier"  # the classifier decided
    CLASSIFIER_REGION_CONFLICT = "classifier_region_conflict"  # it named another spine region
    CLASSIFIER_VETO = "classifier_veto"  # it stopped an analysis the tags or a site rule chose


class TagStatus(StrEnum):
    """What the header says about region and view, taken together."""

    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    CONTRADICTORY = "contradictory"
    ABSENT = "absent"
    NOT_READ = "not_read"  # decided before the tags were read (derived SC, modality)


class ViewClassifying(Protocol):
    """What routing needs from :class:`cdss.analysis.view.classifier.ViewClassifier`."""

    info: ModelInfo

    def classify(self, display_image: np.ndarray) -> ViewPrediction: ...


@dataclass(frozen=True)
class TagStatement:
    """One tag's statement: ``tag`` (keyword), ``source`` (tag and coded value), ``says`` (normalised)."""

    tag: str
    source: str
    says: str


@dataclass(frozen=True)
class ClassifierEvidence:
    """The view classifier's answer (or why there is none)."""

    status: str  # "used", "not needed", "disabled", "not available", "failed: ..."
    label: str | None = None
    probability: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    weights_sha256: str | None = None


@dataclass(frozen=True)
class RouteEvidence:
    """Why a :class:`RouteDecision` came out as it did (JSON-ready with :meth:`to_dict`).

    Attributes
    ----------
    rule
        The deciding step (:class:`DecisionRule`).
    tag_status
        :class:`TagStatus` of the header.
    tags
        What each tag said (region and projection statements, in order of precedence).
    tag_analysis
        The analysis the header alone gives (most specific source first).
    classifier
        The classifier's label and probabilities, or why it was not used.
    decide_probability, veto_probability
        The thresholds in force.
    """

    rule: DecisionRule
    tag_status: TagStatus
    tags: tuple[TagStatement, ...] = ()
    tag_analysis: Analysis | None = None
    classifier: ClassifierEvidence = field(default_factory=lambda: ClassifierEvidence("not needed"))
    decide_probability: float | None = None
    veto_probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (job summary ``route``, audit event ``route``)."""
        c = self.classifier
        return {
            "rule": self.rule.value,
            "tag_status": self.tag_status.value,
            "tags": [{"tag": t.tag, "source": t.source, "says": t.says} for t in self.tags],
            "tag_analysis": self.tag_analysis.value if self.tag_analysis is not None else None,
            "classifier": {
                "status": c.status,
                "label": c.label,
                "probability": None if c.probability is None else round(float(c.probability), 4),
                "probabilities": {k: round(float(v), 4) for k, v in c.probabilities.items()},
                "model": c.model,
                "weights_sha256": c.weights_sha256,
            },
            "thresholds": {"decide": self.decide_probability, "veto": self.veto_probability},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouteEvidence:
        """Read :meth:`to_dict` output back (tolerant: odd or missing values become defaults)."""

        def num(v: Any) -> float | None:
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

        def text(v: Any) -> str | None:
            return v if isinstance(v, str) else None

        def enum(kind: type[StrEnum], v: Any, default: Any) -> Any:
            try:
                return kind(v)
            except ValueError:
                return default

        def mapping(v: Any) -> Mapping[str, Any]:
            return v if isinstance(v, Mapping) else {}

        c = mapping(data.get("classifier"))
        th = mapping(data.get("thresholds"))
        raw_tags = data.get("tags")
        tags: list[Any] = raw_tags if isinstance(raw_tags, list) else []
        probs = mapping(c.get("probabilities"))
        tag_analysis = text(data.get("tag_analysis"))
        return cls(
            rule=enum(DecisionRule, data.get("rule"), DecisionRule.TAGS),
            tag_status=enum(TagStatus, data.get("tag_status"), TagStatus.NOT_READ),
            tags=tuple(
                TagStatement(str(t.get("tag", "")), str(t.get("source", "")), str(t.get("says", "")))
                for t in tags
                if isinstance(t, Mapping)
            ),
            tag_analysis=enum(Analysis, tag_analysis, None) if tag_analysis else None,
            classifier=ClassifierEvidence(
                status=text(c.get("status")) or "not needed",
                label=text(c.get("label")),
                probability=num(c.get("probability")),
                probabilities={str(k): float(v) for k, v in probs.items() if num(v) is not None},
                model=text(c.get("model")),
                weights_sha256=text(c.get("weights_sha256")),
            ),
            decide_probability=num(th.get("decide")),
            veto_probability=num(th.get("veto")),
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
    rule
        The deciding step (:class:`DecisionRule`).
    evidence
        Everything the decision looked at (:class:`RouteEvidence`).
    """

    analysis: Analysis
    laterality: Laterality | None
    reason: str
    rule: DecisionRule = DecisionRule.TAGS
    evidence: RouteEvidence | None = None

    def evidence_or_default(self) -> RouteEvidence:
        """:attr:`evidence`, or a minimal one naming :attr:`rule` when none was recorded."""
        return self.evidence or RouteEvidence(self.rule, TagStatus.NOT_READ)


@dataclass(frozen=True)
class _Facts:
    modality: str | None
    sop_class: str | None
    region: Evidence | None
    view: Evidence | None
    body_part_raw: str | None
    calling_aet: str | None
    descriptions: tuple[str, ...]
    regions: tuple[Evidence, ...] = ()
    views: tuple[Evidence, ...] = ()


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
        regions=tuple(body_region_evidence(ds)),
        views=tuple(projection_evidence(ds)),
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


def route(
    ds: Dataset,
    settings: RouteSettings,
    calling_aet: str | None = None,
    classifier: ViewClassifying | None = None,
) -> RouteDecision:
    """Decide which analysis applies to an image.

    Parameters
    ----------
    ds
        The image. Pixel data is only needed for the view classifier; header-only datasets
        (``stop_before_pixels``) are routed by their tags alone.
    settings
        ``[route]`` settings: site rules (tried first, in order), ``use_builtin_rules``, and the
        classifier switch and thresholds.
    calling_aet
        Calling AE title of the association the image arrived on (site rules may use it).
    classifier
        The loaded view classifier (``ModelRegistry.view_classifier()``); ``None`` = tags only.
        Ignored when ``settings.view_classifier`` is false.

    Returns
    -------
    RouteDecision
        The analysis, the oblique side for cervical views, the reason, the deciding rule and
        the evidence.

    Notes
    -----
    The steps are in the module docstring. Only projection radiographs (Modality CR, DX, RG,
    DR, OT or absent) are analysed by the built-in rules. Derived Secondary Captures
    (``ImageType`` starting with ``DERIVED``, e.g. burned-in result overlays, including this
    node's own when a PACS sends them back) are never analysed, whatever the rules say, to
    prevent loops.
    """
    facts = _facts(ds, calling_aet)
    if _is_derived_secondary_capture(ds, facts):
        rule = DecisionRule.DERIVED_SECONDARY_CAPTURE
        return RouteDecision(
            Analysis.NOT_APPLICABLE,
            None,
            "derived Secondary Capture (ImageType DERIVED, e.g. a burned-in result overlay): not analysed",
            rule,
            RouteEvidence(rule, TagStatus.NOT_READ),
        )
    pixels = _PixelJudge(ds, settings, classifier)
    statements = _statements(facts)
    for index, rule_cfg in enumerate(settings.rules):
        if _rule_matches(rule_cfg, facts):
            laterality, side_text = _laterality_for(rule_cfg.analysis, ds)
            decision = RouteDecision(
                rule_cfg.analysis,
                laterality,
                f"site rule #{index + 1} matched: {_describe(facts)}{side_text}",
                DecisionRule.SITE_RULE,
            )
            return _with_veto(decision, pixels, statements, _tag_status(facts), _builtin(ds, facts).analysis)
    if not settings.use_builtin_rules:
        rule = DecisionRule.BUILTIN_DISABLED
        return RouteDecision(
            Analysis.NOT_APPLICABLE,
            None,
            "no site rule matched and built-in rules are disabled",
            rule,
            RouteEvidence(rule, _tag_status(facts), statements),
        )
    if facts.modality is not None and facts.modality not in RADIOGRAPHIC_MODALITIES:
        rule = DecisionRule.MODALITY
        return RouteDecision(
            Analysis.NOT_APPLICABLE,
            None,
            f"Modality {facts.modality} is not a projection radiograph",
            rule,
            RouteEvidence(rule, TagStatus.NOT_READ, statements),
        )
    by_tags = _builtin(ds, facts)
    status = _tag_status(facts)
    if status is TagStatus.COMPLETE:
        return _with_veto(by_tags, pixels, statements, status, by_tags.analysis)
    return _by_picture(ds, facts, by_tags, pixels, statements, status)


# ---------------------------------------------------------------------------------------- tags
def _statements(facts: _Facts) -> tuple[TagStatement, ...]:
    return tuple(TagStatement(e.tag, e.source, e.value.value) for e in (*facts.regions, *facts.views))


def _regions_conflict(regions: tuple[Evidence, ...]) -> bool:
    stated = {e.value for e in regions}
    specific = stated - {BodyRegion.SPINE}
    if len(specific) > 1:
        return True
    # a generic "spine" and a non-spine region contradict each other
    return BodyRegion.SPINE in stated and BodyRegion.OTHER in stated


def _views_conflict(views: tuple[Evidence, ...]) -> bool:
    return any(not views_compatible(a, b) for i, a in enumerate(views) for b in views[i + 1 :])


def _tag_status(facts: _Facts) -> TagStatus:
    """Complete / incomplete / contradictory / absent (module docstring, step 3)."""
    if not facts.regions and not facts.views:
        return TagStatus.ABSENT
    if _regions_conflict(facts.regions):
        return TagStatus.CONTRADICTORY
    region = facts.region.value if facts.region else None
    if region in (BodyRegion.OTHER, BodyRegion.TSPINE):
        return TagStatus.COMPLETE  # a region no analysis covers: the view does not matter
    if _views_conflict(facts.views):
        return TagStatus.CONTRADICTORY
    if region is None or region is BodyRegion.SPINE or facts.view is None:
        return TagStatus.INCOMPLETE
    return TagStatus.COMPLETE


# ---------------------------------------------------------------------------------------- picture
_LABEL_ANALYSIS = {
    ViewLabel.LUMBAR_LATERAL: Analysis.LUMBAR_LATERAL,
    ViewLabel.LUMBAR_AP: Analysis.LUMBAR_AP,
    ViewLabel.CERVICAL_OBLIQUE_LEFT: Analysis.CERVICAL_OBLIQUE,
    ViewLabel.CERVICAL_OBLIQUE_RIGHT: Analysis.CERVICAL_OBLIQUE,
    ViewLabel.OTHER: Analysis.NOT_APPLICABLE,
}


def _label_region(label: ViewLabel) -> BodyRegion:
    if label.is_lumbar:
        return BodyRegion.LSPINE
    if label.is_cervical:
        return BodyRegion.CSPINE
    return BodyRegion.OTHER


class _PixelJudge:
    """Runs the classifier at most once per image, only when a step needs it."""

    def __init__(self, ds: Dataset, settings: RouteSettings, classifier: ViewClassifying | None) -> None:
        self.ds = ds
        self.settings = settings
        self.classifier = classifier if settings.view_classifier else None
        self._result: tuple[ViewPrediction | None, ClassifierEvidence] | None = None

    @property
    def decide(self) -> float:
        return float(self.settings.classifier_min_probability)

    @property
    def veto(self) -> float:
        return float(self.settings.classifier_veto_probability)

    def idle(self) -> ClassifierEvidence:
        """The evidence when no step needs the classifier (or its answer, if it ran already)."""
        if self._result is not None:
            return self._result[1]
        return ClassifierEvidence("disabled" if not self.settings.view_classifier else "not needed")

    def predict(self) -> tuple[ViewPrediction | None, ClassifierEvidence]:
        if self._result is not None:
            return self._result
        if not self.settings.view_classifier:
            self._result = (None, ClassifierEvidence("disabled"))
        elif self.classifier is None:
            self._result = (None, ClassifierEvidence("not available"))
        elif "PixelData" not in self.ds:
            self._result = (None, ClassifierEvidence("not available: no pixel data"))
        else:
            info = self.classifier.info
            model = f"{info.name} {info.version}"
            try:
                pred = self.classifier.classify(display_image(self.ds))
            except Exception as exc:  # an undecodable image fails later, in the analysis
                self._result = (
                    None,
                    ClassifierEvidence(f"failed: {type(exc).__name__}: {exc}"[:300], model=model),
                )
            else:
                self._result = (
                    pred,
                    ClassifierEvidence(
                        "used",
                        pred.label.value,
                        pred.probability,
                        dict(pred.probabilities),
                        model,
                        info.weights_sha256,
                    ),
                )
        return self._result


def _not_region_probability(pred: ViewPrediction, analysis: Analysis) -> float:
    """Probability that the image is *not* of ``analysis``' region (other + the other spine region)."""
    lumbar = pred.p(ViewLabel.LUMBAR_LATERAL) + pred.p(ViewLabel.LUMBAR_AP)
    if analysis in (Analysis.LUMBAR_LATERAL, Analysis.LUMBAR_AP):
        return 1.0 - lumbar
    return 1.0 - pred.cervical_probability


def _pred_text(pred: ViewPrediction) -> str:
    return f"{pred.label.value} {pred.probability:.2f}"


def _with_veto(
    decision: RouteDecision,
    pixels: _PixelJudge,
    statements: tuple[TagStatement, ...],
    status: TagStatus,
    tag_analysis: Analysis,
) -> RouteDecision:
    """Step 5: the classifier may stop an analysis chosen by the tags or a site rule."""

    def evidence(rule: DecisionRule, c: ClassifierEvidence) -> RouteEvidence:
        return RouteEvidence(rule, status, statements, tag_analysis, c, pixels.decide, pixels.veto)

    if decision.analysis is Analysis.NOT_APPLICABLE:
        return RouteDecision(
            decision.analysis, None, decision.reason, decision.rule, evidence(decision.rule, pixels.idle())
        )
    pred, cev = pixels.predict()
    if pred is None:
        return RouteDecision(
            decision.analysis,
            decision.laterality,
            decision.reason,
            decision.rule,
            evidence(decision.rule, cev),
        )
    p_not = _not_region_probability(pred, decision.analysis)
    if p_not >= pixels.veto:
        rule = DecisionRule.CLASSIFIER_VETO
        return RouteDecision(
            Analysis.NOT_APPLICABLE,
            None,
            f"{decision.reason}; vetoed by the view classifier: the image shows {_pred_text(pred)} "
            f"(p not {decision.analysis.value.split('_')[0]} spine {p_not:.2f} ≥ {pixels.veto:.2f})",
            rule,
            evidence(rule, cev),
        )
    agrees = _LABEL_ANALYSIS[pred.label] is decision.analysis
    note = "agrees" if agrees else "says"
    return RouteDecision(
        decision.analysis,
        decision.laterality,
        f"{decision.reason}; view classifier {note} {_pred_text(pred)}",
        decision.rule,
        evidence(decision.rule, cev),
    )


def _by_picture(
    ds: Dataset,
    facts: _Facts,
    by_tags: RouteDecision,
    pixels: _PixelJudge,
    statements: tuple[TagStatement, ...],
    status: TagStatus,
) -> RouteDecision:
    """Step 4: tags absent, incomplete or contradictory: the classifier decides when confident."""
    pred, cev = pixels.predict()

    def evidence(rule: DecisionRule) -> RouteEvidence:
        return RouteEvidence(rule, status, statements, by_tags.analysis, cev, pixels.decide, pixels.veto)

    tags_word = f"tags {status.value}"
    stated = {e.value for e in facts.regions} - {BodyRegion.SPINE}
    given = None if pred is None else _view_given_region(pred, stated, status)
    if pred is None or (pred.probability < pixels.decide and (given is None or given < pixels.decide)):
        rule = DecisionRule.TAGS_FALLBACK
        why = (
            f"view classifier {cev.status}"
            if pred is None
            else f"view classifier not confident ({_pred_text(pred)} < {pixels.decide:.2f})"
        )
        fallback = RouteDecision(
            by_tags.analysis, by_tags.laterality, f"{by_tags.reason} ({tags_word}; {why})", rule
        )
        if pred is None:
            return RouteDecision(
                fallback.analysis, fallback.laterality, fallback.reason, rule, evidence(rule)
            )
        return _with_veto(fallback, pixels, statements, status, by_tags.analysis)
    analysis = _LABEL_ANALYSIS[pred.label]
    described = _describe(facts)
    if analysis is not Analysis.NOT_APPLICABLE and stated and _label_region(pred.label) not in stated:
        rule = DecisionRule.CLASSIFIER_REGION_CONFLICT
        return RouteDecision(
            Analysis.NOT_APPLICABLE,
            None,
            f"{described} ({tags_word}); the view classifier sees {_pred_text(pred)}, another region "
            "than the header names: not analysed",
            rule,
            evidence(rule),
        )
    rule = DecisionRule.CLASSIFIER
    if analysis is Analysis.NOT_APPLICABLE:
        return RouteDecision(
            analysis,
            None,
            f"{described} ({tags_word}); view classifier decided: {_pred_text(pred)}, not a view cdss analyses",
            rule,
            evidence(rule),
        )
    laterality, side_text = _laterality_for(analysis, ds)
    if analysis is Analysis.CERVICAL_OBLIQUE and laterality is None:
        side_text += (
            f"; the classifier's side: {pred.label.laterality.value if pred.label.laterality else '?'}"
        )
    within = (
        ""
        if pred.probability >= pixels.decide or given is None
        else f" ({given:.2f} of the {_label_region(pred.label).value} views the header's region allows)"
    )
    return RouteDecision(
        analysis,
        laterality,
        f"{described} ({tags_word}); view classifier decided: {_pred_text(pred)}{within}{side_text}",
        rule,
        evidence(rule),
    )


def _view_given_region(pred: ViewPrediction, stated: set[BodyRegion], status: TagStatus) -> float | None:
    """Probability of the classifier's view *given* the spine region the header names.

    Only when the header names exactly one spine region and nothing contradicts it (tags
    incomplete: the view is missing), the classifier's top label is a view of that region and the
    classifier itself gives that region at least half of its probability. Then the question left
    is only *which view* of the region, answered by ``p(label) / p(region)``: a lumbar film whose
    header says LSPINE but not lateral is routed by the lateral-vs-AP split, not by the
    classifier's doubt about the region that the header already settles. ``None`` otherwise.
    """
    if status is not TagStatus.INCOMPLETE or len(stated) != 1:
        return None
    (region,) = stated
    if region not in (BodyRegion.LSPINE, BodyRegion.CSPINE) or _label_region(pred.label) is not region:
        return None
    mass = sum(pred.p(label) for label in ViewLabel if _label_region(label) is region)
    if mass < 0.5:
        return None
    return pred.probability / mass


def _builtin(ds: Dataset, facts: _Facts) -> RouteDecision:
    """What the header alone says (the most specific source of each kind wins)."""
    na = Analysis.NOT_APPLICABLE
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
