"""Routing: which analysis applies to an image (body region, view, laterality; site rules first)."""

from cdss.route.rules import RADIOGRAPHIC_MODALITIES, SECONDARY_CAPTURE_CLASSES, RouteDecision, route
from cdss.route.tags import BodyRegion, Evidence, View, body_region, oblique_laterality, projection

__all__ = [
    "RADIOGRAPHIC_MODALITIES",
    "SECONDARY_CAPTURE_CLASSES",
    "BodyRegion",
    "Evidence",
    "RouteDecision",
    "View",
    "body_region",
    "oblique_laterality",
    "projection",
    "route",
]
