"""View classifier: lumbar lateral / lumbar AP / cervical oblique left / right / other, from pixels.

The package root holds only the labels (no torch import, so that routing and the CLI can name
them cheaply). The model is :class:`cdss.analysis.view.classifier.ViewClassifier`; preprocessing
is :mod:`cdss.analysis.view.preprocess`, the network :mod:`cdss.analysis.view.network`, the
weights file :mod:`cdss.analysis.view.weights`. Model card: docs/models/view.md.
"""

from cdss.analysis.view.labels import LABELS, ViewLabel, ViewPrediction, mirror_label

__all__ = ["LABELS", "ViewLabel", "ViewPrediction", "mirror_label"]
