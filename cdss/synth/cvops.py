"""OpenCV per-element operations with a Python scalar as the second operand, typed as such.

``cv2.max``, ``cv2.min``, ``cv2.add`` and ``cv2.multiply`` apply a scalar second operand to
every element; OpenCV's type stubs declare only arrays there. These are the same functions
under a signature that says so, shared by both synthetic families (no behaviour of their own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import cv2

if TYPE_CHECKING:
    from cv2.typing import MatLike

    ScalarOp = Callable[[MatLike, MatLike | float], MatLike]

__all__ = ["cv_add", "cv_max", "cv_min", "cv_multiply"]

cv_max = cast("ScalarOp", cv2.max)
cv_min = cast("ScalarOp", cv2.min)
cv_add = cast("ScalarOp", cv2.add)
cv_multiply = cast("ScalarOp", cv2.multiply)
