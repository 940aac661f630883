"""The committed fixture set ``fixtures/samples/``: a handful of every kind and variant.

Regenerate (deterministic; overwrites the files and ``fixtures/README.md``)::

    python -m cdss.synth.samples fixtures

Every entry of :data:`SAMPLES` names the generator call that made the file, so each file's
provenance is (kind, seed, index, variant, options, transfer syntax).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdss.synth.acquisition import CR_IMAGE_STORAGE
from cdss.synth.dataset import save
from cdss.synth.generator import generate, generate_pair
from cdss.synth.transfer import TransferSyntax, apply_transfer_syntax

__all__ = ["SAMPLES", "Sample", "write_samples"]

SIDE = 560  # longest side of the committed images (keeps the set a few MB)


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str
    seed: int
    index: int
    variant: str = "standard"
    syntax: str = "jpegls"
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    pair: bool = False


SAMPLES: tuple[Sample, ...] = (
    Sample(
        "lumbar_lateral_std_a", "lumbar_lateral", 100, 0, note="standard, explicit VR LE", syntax="explicit"
    ),
    Sample("lumbar_lateral_std_b", "lumbar_lateral", 100, 3, note="standard"),
    Sample("lumbar_lateral_slip_high", "lumbar_lateral", 5, 0, note="high-grade slip"),
    Sample("lumbar_lateral_slip_iii", "lumbar_lateral", 5, 3, note="high-grade slip"),
    Sample(
        "lumbar_lateral_mono1",
        "lumbar_lateral",
        100,
        1,
        "monochrome1",
        options={"bits_stored": 16},
        note="MONOCHROME1, 16 bit",
    ),
    Sample(
        "lumbar_lateral_hard",
        "lumbar_lateral",
        100,
        2,
        "hard",
        options={"bits_stored": 14},
        note="hard, 14 bit",
    ),
    Sample("lumbar_lateral_rotated", "lumbar_lateral", 100, 4, "rotated", note="rotated 5-15°"),
    Sample("lumbar_lateral_noisy", "lumbar_lateral", 100, 5, "noisy", note="doubled noise"),
    Sample(
        "lumbar_lateral_cr_nospacing",
        "lumbar_lateral",
        100,
        6,
        options={"sop_class_uid": CR_IMAGE_STORAGE, "spacing": "none", "patient_orientation": False},
        note="CR without ImagerPixelSpacing/PixelSpacing, empty PatientOrientation",
    ),
    Sample("lumbar_lateral_odd_size", "lumbar_lateral", 100, 7, options={"max_side": 601}, note="odd size"),
    Sample("lumbar_lateral_rle", "lumbar_lateral", 100, 8, syntax="rle", note="RLE Lossless"),
    Sample("lumbar_lateral_j2k", "lumbar_lateral", 100, 9, syntax="j2k", note="JPEG 2000 Lossless"),
    Sample(
        "lumbar_lateral_jpeg", "lumbar_lateral", 100, 10, syntax="jpeg", note="JPEG Baseline 8-bit (lossy)"
    ),
    Sample(
        "lumbar_lateral_deflate", "lumbar_lateral", 100, 11, syntax="deflate", note="Deflated Explicit VR LE"
    ),
    Sample(
        "lumbar_lateral_wild_headers",
        "lumbar_lateral",
        100,
        12,
        options={"wild_headers": True},
        note="may carry non-conformant real-world spellings (see JSON dicom.conformant)",
    ),
    Sample(
        "lumbar_lateral_pair",
        "lumbar_lateral",
        100,
        13,
        pair=True,
        note="DX For Processing + For Presentation",
    ),
    Sample("lumbar_ap_a", "lumbar_ap", 100, 0, note="AP lumbar"),
    Sample("lumbar_ap_b", "lumbar_ap", 100, 1, "monochrome1", note="AP lumbar, MONOCHROME1"),
    Sample(
        "cervical_obl_left_normal", "cervical_oblique", 100, 0, options={"laterality": "L", "abnormal": False}
    ),
    Sample(
        "cervical_obl_left_abnormal",
        "cervical_oblique",
        100,
        1,
        options={"laterality": "L", "abnormal": True},
    ),
    Sample(
        "cervical_obl_right_normal",
        "cervical_oblique",
        100,
        2,
        options={"laterality": "R", "abnormal": False},
    ),
    Sample(
        "cervical_obl_right_abnormal",
        "cervical_oblique",
        100,
        3,
        options={"laterality": "R", "abnormal": True},
    ),
    Sample("cervical_obl_hard", "cervical_oblique", 100, 4, "hard", syntax="j2k", note="hard variant"),
    Sample("other_chest", "other", 100, 0, options={"body_part": "chest"}),
    Sample("other_hand", "other", 100, 1, options={"body_part": "hand"}),
    Sample("other_knee", "other", 100, 2, options={"body_part": "knee"}),
    Sample("other_pelvis", "other", 100, 3, options={"body_part": "pelvis"}),
    Sample("other_skull", "other", 100, 4, options={"body_part": "skull"}),
)


def _call(s: Sample) -> str:
    opts = {"max_side": SIDE, "bits_stored": 12, **s.options}
    args = ", ".join(f"{k}={v!r}" for k, v in opts.items())
    fn = "generate_pair" if s.pair else "generate"
    return f"{fn}({s.kind!r}, seed={s.seed}, index={s.index}, variant={s.variant!r}, {args}) → {s.syntax}"


def write_samples(root: Path) -> list[tuple[Sample, Path]]:
    """Write every sample to ``root/samples`` and the provenance README to ``root/README.md``."""
    out = root / "samples"
    out.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Sample, Path]] = []
    for s in SAMPLES:
        opts = {"max_side": SIDE, "bits_stored": 12, **s.options}
        if s.pair:
            items = generate_pair(s.kind, seed=s.seed, index=s.index, variant=s.variant, **opts)
            names = [f"{s.name}_proc", f"{s.name}_pres"]
        else:
            items = [generate(s.kind, seed=s.seed, index=s.index, variant=s.variant, **opts)]
            names = [s.name]
        for (ds, truth), name in zip(items, names, strict=True):
            apply_transfer_syntax(ds, TransferSyntax(s.syntax))
            dcm, _ = save(ds, truth, out, name)
            written.append((s, dcm))
    _readme(root, written)
    return written


def _summary(truth: dict[str, Any]) -> str:
    """What the ground truth says, in a few words."""
    if truth["kind"] == "lumbar_lateral":
        slipped = [
            f"{lv['level']} {lv['slip_percent']:+.0f} % {lv['grade']}"
            for lv in truth["levels"]
            if lv["grade"] != "none"
        ]
        return "GT: " + (", ".join(slipped) if slipped else "no slip")
    if truth["kind"] == "cervical_oblique":
        c = truth["cervical"]
        worst = max(f["narrowing"] for f in c["foramina"])
        return f"GT: {c['laterality']} {c['label']} (max narrowing {worst:.2f})"
    if truth["kind"] == "other":
        return f"GT: {truth['other']['body_part']} {truth['other']['projection']}"
    return ""


def _readme(root: Path, written: list[tuple[Sample, Path]]) -> None:
    import pydicom

    rows = []
    for s, dcm in written:
        ds = pydicom.dcmread(dcm, stop_before_pixels=True)
        truth = json.loads(dcm.with_suffix(".json").read_text())
        purpose = "; ".join(x for x in (s.note, _summary(truth)) if x)
        digest = hashlib.sha256(dcm.read_bytes()).hexdigest()[:12]
        what = f"{ds.Modality} {str(ds.get('PresentationIntentType', '')).title()}".strip()
        rows.append(
            f"| `{dcm.name}` | {what}, {ds.Rows}×{ds.Columns}, {ds.PhotometricInterpretation}, "
            f"{ds.BitsStored} bit, {ds.file_meta.TransferSyntaxUID.name} | {purpose or '—'} | "
            f"`{_call(s)}` | `{digest}` |"
        )
    text = _README_HEAD + "\n".join(rows) + "\n"
    (root / "README.md").write_text(text)


_README_HEAD = """# Fixtures

Synthetic radiographs made by `cdss.synth` (see `docs/synthetic-data.md`). Nothing here comes
from a patient: names, IDs, dates and UIDs are generated. Every `.dcm` has a ground-truth
`.json` beside it (format: `docs/dev/interfaces.md`).

Other subdirectories (e.g. `buu-sample/`) belong to other areas and carry their own README;
this file documents `samples/`.

## Regenerate

```sh
python -m cdss.synth.samples fixtures        # rewrites fixtures/samples/* and this README
```

The images are reduced to at most 560 px per side (12 bit unless noted) (`max_side`; the detector pitch grows so the
anatomy keeps its size in mm) to keep the set small. Full-size training sets come from the CLI,
e.g. `cdss fixtures generate OUT --kind lumbar_lateral --count 1000 --seed 0 --workers 2`.
Generation is deterministic for a given code version: the SHA-256 prefixes below change only
when the generator changes.

## Files (`samples/`)

| file | object | purpose | made by | sha256[:12] |
|---|---|---|---|---|
"""


def write_doc_images(images_dir: Path) -> list[Path]:
    """Render the small previews used by ``docs/synthetic-data.md`` (``synth-*.png``)."""
    import cv2
    import numpy as np

    from cdss.analysis.pixels import display_image, to_uint8
    from cdss.synth.overlay import draw_truth

    images_dir.mkdir(parents=True, exist_ok=True)
    png = [cv2.IMWRITE_PNG_COMPRESSION, 9]

    def grey(kind: str, height: int, side: int = 800, **kw: Any) -> tuple[np.ndarray, dict[str, Any], float]:
        ds, truth = generate(kind, max_side=side, **kw)
        g = to_uint8(display_image(ds))
        k = height / g.shape[0]
        return cv2.resize(g, (round(g.shape[1] * k), height), interpolation=cv2.INTER_AREA), truth, k

    def with_overlay(kind: str, **kw: Any) -> np.ndarray:
        g, truth, k = grey(kind, 320, **kw)
        bgr = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
        return np.hstack([bgr, draw_truth(bgr.copy(), truth, k)])

    out = {
        "synth-lumbar-lateral.png": with_overlay("lumbar_lateral", seed=5, index=3),
        "synth-lumbar-ap.png": with_overlay("lumbar_ap", seed=100, index=0),
        "synth-cervical-oblique.png": np.hstack(
            [
                with_overlay("cervical_oblique", seed=100, index=1, laterality="L", abnormal=True),
                with_overlay("cervical_oblique", seed=100, index=2, laterality="R", abnormal=False),
            ]
        ),
    }
    tiles = []
    for variant, index in (
        ("standard", 20),
        ("standard", 21),
        ("monochrome1", 1),
        ("rotated", 2),
        ("noisy", 3),
        ("hard", 4),
    ):
        g, _, _ = grey("lumbar_lateral", 260, side=600, seed=1, index=index, variant=variant)
        tile = np.zeros((260, 200), np.uint8)
        tile[:, : min(200, g.shape[1])] = g[:, :200]
        tiles.append(tile)
    out["synth-lumbar-variants.png"] = np.hstack(tiles)
    out["synth-other.png"] = np.hstack(
        [
            grey("other", 220, side=600, seed=100, index=i, body_part=p)[0]
            for i, p in enumerate(("chest", "hand", "knee", "pelvis", "skull"))
        ]
    )
    paths = []
    for name, img in out.items():
        cv2.imwrite(str(images_dir / name), img, png)
        paths.append(images_dir / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--doc-images":
        for p in write_doc_images(Path(args[1])):
            print(p)
        return 0
    if len(args) != 1:
        print(
            "usage: python -m cdss.synth.samples FIXTURES_DIR | --doc-images DOCS_IMAGES_DIR", file=sys.stderr
        )
        return 2
    written = write_samples(Path(args[0]))
    total = sum(p.stat().st_size + p.with_suffix(".json").stat().st_size for _, p in written)
    print(f"wrote {len(written)} samples to {args[0]}/samples ({total / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
