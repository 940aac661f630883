"""Spondylolisthesis geometry from vertebral corners (seed 000, section H).

All points are ``(column, row)`` pixel coordinates (see :mod:`cdss.analysis.types`). The same
functions compute the synthetic ground truth (:mod:`cdss.synth`) and the measurement from model
masks, so the two always agree on the definition.

Definition used
---------------
For a level with superior vertebra *U* and inferior vertebra *L* on a lateral view:

* the reference line is *L*'s superior endplate, from its posterior-superior corner ``Lps`` to its
  anterior-superior corner ``Las``; its length is the endplate width ``w``;
* the displacement ``d`` is the signed projection of ``Uip - Lps`` (``Uip`` = *U*'s
  posterior-inferior corner) onto the unit vector from ``Lps`` towards ``Las``; positive means
  *U* lies anterior to *L* (anterolisthesis), negative posterior (retrolisthesis);
* slip % = ``d / w * 100``.

This is the seed's "displacement / width of the inferior vertebra's superior endplate × 100",
measured at the posterior vertebral line as in Meyerding's method.
"""

from __future__ import annotations

import numpy as np

from cdss.analysis.types import MeyerdingGrade, SlipDirection

__all__ = [
    "CORNER_INFERIOR_ANTERIOR",
    "CORNER_INFERIOR_POSTERIOR",
    "CORNER_SUPERIOR_ANTERIOR",
    "CORNER_SUPERIOR_POSTERIOR",
    "meyerding_grade",
    "slip",
]

CORNER_SUPERIOR_ANTERIOR = 0
CORNER_SUPERIOR_POSTERIOR = 1
CORNER_INFERIOR_POSTERIOR = 2
CORNER_INFERIOR_ANTERIOR = 3


def slip(upper_corners: np.ndarray, lower_corners: np.ndarray) -> tuple[float, float, float]:
    """Slip of the superior vertebra over the inferior one.

    Parameters
    ----------
    upper_corners, lower_corners
        ``(4, 2)`` arrays of (column, row) pixels in the order superior-anterior,
        superior-posterior, inferior-posterior, inferior-anterior.

    Returns
    -------
    (slip_percent, displacement_px, endplate_width_px)
        Signed slip in percent (positive = anterior), signed displacement and endplate width
        in pixels.

    Raises
    ------
    ValueError
        If the inferior vertebra's superior endplate has (near) zero length.
    """
    u = np.asarray(upper_corners, dtype=float)
    lo = np.asarray(lower_corners, dtype=float)
    if u.shape != (4, 2) or lo.shape != (4, 2):
        raise ValueError(f"corners must have shape (4, 2); got {u.shape} and {lo.shape}")
    lps = lo[CORNER_SUPERIOR_POSTERIOR]
    las = lo[CORNER_SUPERIOR_ANTERIOR]
    axis = las - lps
    width = float(np.hypot(*axis))
    if width < 1e-6:
        raise ValueError("inferior vertebra's superior endplate has zero length; corners are degenerate")
    unit = axis / width
    displacement = float(np.dot(u[CORNER_INFERIOR_POSTERIOR] - lps, unit))
    return displacement / width * 100.0, displacement, width


#: Upper slip limits (percent) of Meyerding grades I-IV; above the last is grade V (seed 000).
MEYERDING_BOUNDARIES: tuple[float, ...] = (25.0, 50.0, 75.0, 100.0)


def grade_boundaries(threshold_percent: float) -> tuple[float, ...]:
    """Every slip magnitude (percent) where the reported grade changes: the listhesis threshold
    (none / I) and the Meyerding limits I/II, II/III, III/IV, IV/V."""
    return (float(threshold_percent), *MEYERDING_BOUNDARIES)


def meyerding_grade(slip_percent: float, threshold_percent: float) -> tuple[MeyerdingGrade, SlipDirection]:
    """Meyerding grade and direction of a signed slip.

    Grades follow seed 000: I up to 25 %, II up to 50 %, III up to 75 %, IV up to 100 %,
    V (spondyloptosis) above 100 %. Retrolisthesis is graded on its magnitude with the same
    bands. ``|slip| < threshold_percent`` is "no listhesis" (``NONE``).

    Parameters
    ----------
    slip_percent
        Signed slip in percent (positive = anterior).
    threshold_percent
        Smallest slip magnitude reported as a listhesis.
    """
    magnitude = abs(slip_percent)
    if magnitude < threshold_percent:
        return MeyerdingGrade.NONE, SlipDirection.NONE
    direction = SlipDirection.ANTERIOR if slip_percent > 0 else SlipDirection.POSTERIOR
    one, two, three, four = MEYERDING_BOUNDARIES
    if magnitude <= one:
        grade = MeyerdingGrade.I
    elif magnitude <= two:
        grade = MeyerdingGrade.II
    elif magnitude <= three:
        grade = MeyerdingGrade.III
    elif magnitude <= four:
        grade = MeyerdingGrade.IV
    else:
        grade = MeyerdingGrade.V
    return grade, direction
