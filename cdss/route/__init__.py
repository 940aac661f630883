"""Routing: which analysis applies to an image (site rules, then tags, then the view classifier)."""

from cdss.route.rules import (
    RADIOGRAPHIC_MODALITIES,
    SECONDARY_CAPTURE_CLASSES,
    ClassifierEvidence,
    DecisionRule,
    RouteDecision,
    RouteEvidence,
    TagStatement,
    TagStatus,
    ViewClassifying,
    route,
)
from cdss.route.tags import (
    BodyRegion,
    Evidence,
    View,
    body_region,
    body_region_evidence,
    oblique_laterality,
    orientation_view,
    projection,
    projection_evidence,
)

__all__ = [
    "RADIOGRAPHIC_MODALITIES",
    "SECONDARY_CAPTURE_CLASSES",
    "BodyRegion",
    "ClassifierEvidence",
    "DecisionRule",
    "Evidence",
    "RouteDecision",
    "RouteEvidence",
    "TagStatement",
    "TagStatus",
    "View",
    "ViewClassifying",
    "body_region",
    "body_region_evidence",
    "oblique_laterality",
    "orientation_view",
    "projection",
    "projection_evidence",
    "route",
]
