"""Preview images of family B for the documentation (``docs/images/synth-family-b-*.png``).

Regenerate::

    python -m cdss.synth.family_b.preview docs/images
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cdss.analysis.pixels import display_image, to_uint8
from cdss.synth.family_b.generator import generate_b
from cdss.synth.overlay import draw_truth

__all__ = ["LATERAL_EXAMPLES", "write_doc_images"]

#: (variant, index) of seed 1, chosen to show the features: instrumentation with a high-grade
#: slip, scoliosis double contours, spondyloptosis (MONOCHROME1 file), a lumbarised S1 with
#: heavy collimation, grid lines + stitching seam, a cropped field with a fracture and screws
LATERAL_EXAMPLES = (
    ("standard", 16),
    ("standard", 6),
    ("standard", 15),
    ("hard", 18),
    ("standard", 27),
    ("hard", 9),
)


def _tile(
    kind: str, variant: str, index: int, height: int, width: int, *, overlay: bool, **kw: Any
) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds, truth = generate_b(kind, seed=1, index=index, variant=variant, max_side=1200, **kw)
    g = to_uint8(display_image(ds))
    k = height / g.shape[0]
    g = cv2.resize(g, (max(1, round(g.shape[1] * k)), height), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    if overlay:
        draw_truth(bgr, {"vertebrae": truth.get("vertebrae", {})}, k)
    # crop (or pad) to `width`, centred on the annotated bodies when there are any
    verts = truth.get("vertebrae") or {}
    if verts:
        cx = float(np.mean([np.mean(np.array(v["corners"])[:, 0]) for v in verts.values()])) * k
    else:
        cx = bgr.shape[1] / 2
    c0 = int(np.clip(cx - width / 2, 0, max(bgr.shape[1] - width, 0)))
    out = np.zeros((height, width, 3), np.uint8)
    part = bgr[:, c0 : c0 + width]
    out[:, : part.shape[1]] = part
    return out


def write_doc_images(images_dir: Path) -> list[Path]:
    """Write ``synth-family-b-lateral.png`` (six laterals, with their ground truth below) and
    ``synth-family-b-ap-other.png`` (AP lumbar and other examinations)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    top = [_tile("lumbar_lateral", v, i, 340, 250, overlay=False) for v, i in LATERAL_EXAMPLES]
    bottom = [_tile("lumbar_lateral", v, i, 340, 250, overlay=True) for v, i in LATERAL_EXAMPLES]
    lateral = np.vstack([np.hstack(top), np.hstack(bottom)])
    others = [
        _tile("lumbar_ap", "standard", 3, 300, 240, overlay=False),
        _tile("lumbar_ap", "hard", 1, 300, 240, overlay=False),
    ]
    for i, part in enumerate(("chest", "chest_lateral", "abdomen", "pelvis", "tspine", "hand")):
        others.append(_tile("other", "standard", i, 300, 240, overlay=False, body_part=part))
    paths = []
    png = [cv2.IMWRITE_PNG_COMPRESSION, 9]
    for name, img in (
        ("synth-family-b-lateral.png", lateral),
        ("synth-family-b-ap-other.png", np.hstack(others)),
    ):
        cv2.imwrite(str(images_dir / name), img, png)
        paths.append(images_dir / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cdss.synth.family_b.preview DOCS_IMAGES_DIR", file=sys.stderr)
        return 2
    for p in write_doc_images(Path(args[0])):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
