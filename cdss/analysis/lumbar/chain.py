"""Naming vertebrae from anatomy: chain the bodies from the sacrum upwards and count.

A detector says *where* the vertebral bodies and the sacrum are; it is not trusted to say
*which* body is which (a model that counts from one generator's framing shifts every name
when T12 is in the field, a body is missed, or the film is cropped differently). This module
takes every body found (any class) and the sacrum, orders them along the spine and names them
by counting from the sacrum: the first body above S1 is L5, then L4 … L1, T12, T11.

Each step from a body to the next one up is checked in the lower body's own frame — its
endplate normal (cranial axis) and endplate direction — so lordosis, the sacral slope and a
slip (which moves the upper body *along* the lower endplate) do not break the chain:

* the next body's centre lies cranial of the current one by 0.5 … 1.9 mean body sizes
  (``along``) and at most 0.75 sizes to the side (1.45 for the step S1 → L5, where a grade
  III–V slip carries L5 forward and down the sacral slope);
* its size (√area) is 0.62 … 1.6 × the current body's (sacrum → L5: 0.5 … 2.0);
* a body further away than 1.9 sizes in the same direction means one was missed (a *gap*):
  the chain stops there, and the bodies above are left unnamed — a wrong name is worse than
  none;
* a spacing that differs from the chain's median by more than 35 %, or a body whose
  height/width ratio is not that of a vertebral body (0.38 … 1.15), marks that body as
  implausible: levels that use it are reported *not measured* with the reason.

A lumbosacral transitional vertebra cannot be told apart on a single lateral film with
certainty; when the lowest disc is much thinner than the one above (< 0.3 ×) the result says
that the numbering is counted from the first sacral segment and may be off by one
(``possible_transitional``) — the names are never shifted silently.

Coordinates are ``(column, row)`` source pixels; sizes are pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["CHAIN_NAMES", "Body", "ChainResult", "body_geometry", "chain_from_sacrum", "dedupe"]

#: Names given while counting up from the sacrum.
CHAIN_NAMES: tuple[str, ...] = ("S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11")

_ALONG = (0.5, 1.9)
_ACROSS = 0.75
_ACROSS_S1 = 1.45
_SIZE_RATIO = (0.62, 1.6)
_SIZE_RATIO_S1 = (0.5, 2.0)
_GAP_ALONG = 3.4
_SPACING_TOLERANCE = 0.35
_SHAPE_RATIO = (0.38, 1.15)
_TRANSITIONAL_DISC = 0.3
_DUPLICATE_IOU = 0.45


@dataclass
class Body:
    """Geometry of one detected body (source px).

    Attributes
    ----------
    centre
        Area centroid ``(column, row)``.
    size
        √area, pixels.
    axis
        Unit vector normal to the body's long sides (the endplates of a lateral lumbar body),
        sign arbitrary.
    width, height
        Long and short side of the minimum-area rectangle, pixels.
    """

    centre: np.ndarray
    size: float
    axis: np.ndarray
    width: float
    height: float


@dataclass
class ChainResult:
    """Outcome of :func:`chain_from_sacrum`.

    Attributes
    ----------
    names
        Candidate index → name (``"S1"``, ``"L5"`` … ``"T11"``), only for bodies on the chain.
    problems
        Name → why the body's geometry is implausible (its levels are not measured).
    notes
        Human-readable notes (gap, bodies off the chain, transitional vertebra suspicion).
    stop_reason
        Why naming stopped below L1 (``""`` when L1 was reached).
    possible_transitional
        The lowest disc is much thinner than the one above: the numbering may be off by one.
    """

    names: dict[int, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stop_reason: str = ""
    possible_transitional: bool = False

    def index_of(self, name: str) -> int | None:
        for idx, n in self.names.items():
            if n == name:
                return idx
        return None


def body_geometry(outline: np.ndarray) -> Body:
    """Centre, size and endplate axis of a body outline (``(N, 2)`` (column, row) px)."""
    pts = np.asarray(outline, dtype=np.float64)
    m = cv2.moments(pts.astype(np.float32))
    area = abs(float(m["m00"]))
    centre = np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]]) if area > 1e-9 else pts.mean(axis=0)
    (_, _), (w, h), angle = cv2.minAreaRect(pts.astype(np.float32))
    theta = np.deg2rad(angle)
    side_w = np.array([np.cos(theta), np.sin(theta)])  # direction of the rectangle's "w" side
    if w >= h:
        width, height, along_long = float(w), float(h), side_w
    else:
        width, height, along_long = float(h), float(w), np.array([-side_w[1], side_w[0]])
    axis = np.array([-along_long[1], along_long[0]])
    return Body(centre=centre, size=float(np.sqrt(max(area, 1e-9))), axis=axis, width=width, height=height)


def _poly_iou(a: np.ndarray, b: np.ndarray) -> float:
    pts = np.vstack([a, b])
    lo = np.floor(pts.min(axis=0)) - 1
    hi = np.ceil(pts.max(axis=0)) + 1
    scale = min(1.0, 256.0 / float(max(hi - lo)))
    shape = (int((hi[1] - lo[1]) * scale) + 2, int((hi[0] - lo[0]) * scale) + 2)

    def raster(p: np.ndarray) -> np.ndarray:
        m = np.zeros(shape, dtype=np.uint8)
        q = np.round((p - lo) * scale * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(m, [q], 1, shift=4)
        return m.astype(bool)

    ma, mb = raster(a), raster(b)
    union = int(np.logical_or(ma, mb).sum())
    return int(np.logical_and(ma, mb).sum()) / union if union else 0.0


def dedupe(outlines: list[np.ndarray], confidences: list[float]) -> list[int]:
    """Indices of the candidates kept when overlapping detections (IoU > 0.45) are one body.

    The most confident detection of each overlapping group is kept (a body cannot be two).
    """
    order = sorted(range(len(outlines)), key=lambda i: -confidences[i])
    kept: list[int] = []
    for i in order:
        if all(_poly_iou(outlines[i], outlines[j]) <= _DUPLICATE_IOU for j in kept):
            kept.append(i)
    return kept


def _oriented_axis(body: Body, towards: np.ndarray) -> np.ndarray:
    """The body's endplate normal, signed to point along ``towards``."""
    return body.axis if float(body.axis @ towards) >= 0 else -body.axis


def chain_from_sacrum(
    bodies: list[Body], sacrum: int, candidates: list[int], *, max_names: int = len(CHAIN_NAMES)
) -> ChainResult:
    """Chain the bodies upwards from the sacrum and name them by counting.

    Parameters
    ----------
    bodies
        Geometry of every candidate (index = candidate index).
    sacrum
        Index of the sacrum (S1) candidate.
    candidates
        Indices of the vertebral-body candidates (duplicates already removed; the sacrum not
        among them).
    max_names
        How many names to give at most (S1 … T11).

    Returns
    -------
    ChainResult
    """
    result = ChainResult(names={sacrum: "S1"})
    pool = [i for i in candidates if i != sacrum]
    if not pool:
        result.stop_reason = "no vertebral body found above the sacrum"
        return result
    # cranial direction at the sacrum: from the sacrum towards the bodies (robust median)
    rel = np.array([bodies[i].centre - bodies[sacrum].centre for i in pool])
    up_guess = np.median(rel / np.linalg.norm(rel, axis=1, keepdims=True), axis=0)
    if np.linalg.norm(up_guess) < 1e-6:
        up_guess = np.array([0.0, -1.0])
    up = _oriented_axis(bodies[sacrum], up_guess / np.linalg.norm(up_guess))
    # the sacrum's own axis can be ambiguous (a near-square S1): fall back to the guess
    if float(up @ (up_guess / np.linalg.norm(up_guess))) < 0.3:
        up = up_guess / np.linalg.norm(up_guess)

    chain = [sacrum]
    steps: list[float] = []  # along distance / mean size, per step
    gaps: list[float] = []  # disc gap estimate (px) per step
    while len(chain) < max_names and pool:
        cur = chain[-1]
        b = bodies[cur]
        first = cur == sacrum
        across_max = _ACROSS_S1 if first else _ACROSS
        ratio_lo, ratio_hi = _SIZE_RATIO_S1 if first else _SIZE_RATIO
        side = np.array([-up[1], up[0]])
        best: tuple[float, int, float] | None = None
        far: list[int] = []
        for j in pool:
            d = bodies[j].centre - b.centre
            scale = 0.5 * (b.size + bodies[j].size)
            along = float(d @ up) / scale
            across = abs(float(d @ side)) / scale
            ratio = bodies[j].size / b.size
            lo_along = 0.15 if first else _ALONG[0]  # a far-slipped L5 sits low on the sacral slope
            if lo_along <= along <= _ALONG[1] and across <= across_max and ratio_lo <= ratio <= ratio_hi:
                cost = (along - 1.1) ** 2 + 0.6 * across**2 + np.log(ratio) ** 2
                if best is None or cost < best[0]:
                    best = (cost, j, along)
            elif _ALONG[1] < along <= _GAP_ALONG and across <= across_max:
                far.append(j)
        if best is None:
            below = CHAIN_NAMES[len(chain) - 1]
            if far:
                result.stop_reason = (
                    f"the body above {below} is {'' if len(far) == 1 else 'about '}one body further than "
                    f"expected: a vertebra between them was not detected; bodies above {below} are not named"
                )
            else:
                result.stop_reason = f"no vertebral body found in sequence above {below}"
            break
        _, nxt, along = best
        steps.append(along)
        nb = bodies[nxt]
        gaps.append(max(0.0, along * 0.5 * (b.size + nb.size) - 0.5 * (b.height + nb.height)))
        chain.append(nxt)
        pool.remove(nxt)
        # follow the curve: the next frame is the new body's own axis, signed cranially
        step_dir = (nb.centre - b.centre) / (np.linalg.norm(nb.centre - b.centre) + 1e-9)
        new_up = _oriented_axis(nb, step_dir)
        up = new_up if float(new_up @ step_dir) > 0.5 else step_dir
    for idx, name in zip(chain, CHAIN_NAMES, strict=False):
        result.names[idx] = name
    if len(chain) > 1 and not result.stop_reason and len(chain) < min(max_names, 6):
        result.stop_reason = f"no vertebral body found in sequence above {CHAIN_NAMES[len(chain) - 1]}"

    # plausibility of each body and each spacing
    if len(steps) >= 3:
        med = float(np.median(steps[1:]))
        for k, s in enumerate(steps):
            if k == 0:
                continue  # S1 → L5 spacing varies with the sacral slope and the slip
            if abs(s - med) > _SPACING_TOLERANCE * med:
                lower, upper = CHAIN_NAMES[k], CHAIN_NAMES[k + 1]
                why = (
                    f"spacing {upper}-{lower} is {s / med:.2f} × the chain's median "
                    "(possible missed or extra body)"
                )
                result.problems.setdefault(upper, why)
                result.problems.setdefault(lower, why)
    for idx in chain[1:]:
        name = result.names[idx]
        ratio = bodies[idx].height / max(bodies[idx].width, 1e-9)
        if not _SHAPE_RATIO[0] <= ratio <= _SHAPE_RATIO[1]:
            result.problems.setdefault(
                name, f"{name} outline is not body-shaped (height/width {ratio:.2f}, expected 0.38-1.15)"
            )
    if len(gaps) >= 2 and gaps[1] > 0 and gaps[0] < _TRANSITIONAL_DISC * gaps[1]:
        result.possible_transitional = True
        result.notes.append(
            "the lowest disc is much thinner than the one above: a lumbosacral transitional vertebra "
            "is possible; levels are counted from the first sacral segment detected"
        )
    off = [i for i in candidates if i not in result.names and i != sacrum]
    if off:
        result.notes.append(
            f"{len(off)} detected bod{'y' if len(off) == 1 else 'ies'} off the spine chain ignored"
        )
    return result
