"""Lumbar spondylolisthesis analysis (seed 000): YOLO segmentation of L1…S1, corners, slip, Meyerding grade."""

from cdss.analysis.lumbar.analyzer import INPUT_SIDE, SHIPPED_WEIGHTS, LumbarAnalyzer

__all__ = ["INPUT_SIDE", "SHIPPED_WEIGHTS", "LumbarAnalyzer"]
