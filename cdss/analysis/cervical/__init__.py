"""Cervical foraminal stenosis on oblique radiographs (seed 004): ROI → HE → flip → STN → ResNet50.

>>> analyzer = CervicalAnalyzer.load(None, "auto")      # the shipped weights
>>> result = analyzer.analyse(ds, Laterality.LEFT)        # or laterality=None → inferred
"""

from cdss.analysis.cervical.analyzer import (
    MANIFEST,
    SHIPPED_WEIGHTS,
    CervicalAnalysisError,
    CervicalAnalyzer,
    shipped_manifest,
)
from cdss.analysis.cervical.bundle import BundleError, BundleMeta

__all__ = [
    "MANIFEST",
    "SHIPPED_WEIGHTS",
    "BundleError",
    "BundleMeta",
    "CervicalAnalysisError",
    "CervicalAnalyzer",
    "shipped_manifest",
]
