"""What the view classifier says: five labels and a prediction with its probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from cdss.analysis.types import Laterality

__all__ = ["LABELS", "ViewLabel", "ViewPrediction", "mirror_label"]


class ViewLabel(StrEnum):
    """The classes of the view classifier (the order is the network's output order)."""

    LUMBAR_LATERAL = "lumbar_lateral"
    LUMBAR_AP = "lumbar_ap"
    CERVICAL_OBLIQUE_LEFT = "cervical_oblique_left"
    CERVICAL_OBLIQUE_RIGHT = "cervical_oblique_right"
    OTHER = "other"

    @property
    def laterality(self) -> Laterality | None:
        """The oblique's side (the foramina shown) for the cervical labels, else ``None``."""
        if self is ViewLabel.CERVICAL_OBLIQUE_LEFT:
            return Laterality.LEFT
        if self is ViewLabel.CERVICAL_OBLIQUE_RIGHT:
            return Laterality.RIGHT
        return None

    @property
    def is_cervical(self) -> bool:
        return self in (ViewLabel.CERVICAL_OBLIQUE_LEFT, ViewLabel.CERVICAL_OBLIQUE_RIGHT)

    @property
    def is_lumbar(self) -> bool:
        return self in (ViewLabel.LUMBAR_LATERAL, ViewLabel.LUMBAR_AP)


#: Network output order.
LABELS: tuple[ViewLabel, ...] = tuple(ViewLabel)


def mirror_label(label: ViewLabel) -> ViewLabel:
    """The label of the horizontally mirrored image.

    A left and a right cervical oblique are mirror images of each other (the foramina of one
    side seen from the front-left look like the other side's seen from the front-right), so a
    mirrored left oblique *looks* right; every other label is mirror-invariant.
    """
    if label is ViewLabel.CERVICAL_OBLIQUE_LEFT:
        return ViewLabel.CERVICAL_OBLIQUE_RIGHT
    if label is ViewLabel.CERVICAL_OBLIQUE_RIGHT:
        return ViewLabel.CERVICAL_OBLIQUE_LEFT
    return label


@dataclass(frozen=True)
class ViewPrediction:
    """The classifier's answer for one image.

    Attributes
    ----------
    label
        The most probable class.
    probabilities
        Softmax probability of every class (keys are :class:`ViewLabel` values, sum 1).
    """

    label: ViewLabel
    probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def probability(self) -> float:
        """Probability of :attr:`label`."""
        return float(self.probabilities.get(self.label.value, 0.0))

    def p(self, label: ViewLabel) -> float:
        """Probability of ``label``."""
        return float(self.probabilities.get(ViewLabel(label).value, 0.0))

    @property
    def cervical_probability(self) -> float:
        """Probability of a cervical oblique of either side."""
        return self.p(ViewLabel.CERVICAL_OBLIQUE_LEFT) + self.p(ViewLabel.CERVICAL_OBLIQUE_RIGHT)
