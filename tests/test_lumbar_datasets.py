"""BUU-LSPINE and synthetic → YOLO conversion, and seed 000's photometric augmentations."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cdss.analysis.lumbar.classes import ClassScheme
from cdss.analysis.types import Vertebra
from cdss.train.augment import SEED000_OPERATIONS, SeedAugment
from cdss.train.datasets import (
    S1_EXTENSION,
    DatasetError,
    EndplateRow,
    buu_polygons,
    iter_buu,
    read_buu_csv,
    split_names,
    write_yolo_dataset,
)

BUU = Path(__file__).resolve().parent.parent / "fixtures" / "buu-sample"

# Seed 000, Figure 1: a BUU-LSPINE lateral CSV (11 rows, x1,y1,x2,y2,label)
FIGURE1 = """897.8728,504.3773,1171.021,601.7371,0
823.5008,684.2224,1080.422,803.2175,0
778.8776,778.8776,1053.378,826.2053,0
711.2667,985.767,1003.346,1046.617,0
692.3356,1065.548,992.5281,1072.309,0
667.9957,1280.551,966.8359,1295.425,0
674.7568,1400.898,965.4837,1340.048,0
715.3234,1609.14,1001.994,1534.767,0
746.4244,1703.795,1004.698,1571.277,0
831.6141,1902.571,1092.592,1764.645,0
889.7595,1989.113,1108.819,1816.029,0
"""


def test_seed000_figure1_csv_becomes_six_polygons(tmp_path: Path) -> None:
    csv = tmp_path / "0001.csv"
    csv.write_text(FIGURE1)
    rows = read_buu_csv(csv)
    assert len(rows) == 11 and rows[0] == EndplateRow((897.8728, 504.3773), (1171.021, 601.7371), "0")
    polys = buu_polygons(rows)
    assert list(polys) == list(Vertebra)
    # L1 = superior p1, superior p2, inferior p2, inferior p1 (seed 000, Figure 2 order)
    np.testing.assert_allclose(
        polys[Vertebra.L1],
        [[897.8728, 504.3773], [1171.021, 601.7371], [1080.422, 803.2175], [823.5008, 684.2224]],
    )
    s1 = polys[Vertebra.S1]
    np.testing.assert_allclose(s1[:2], [[889.7595, 1989.113], [1108.819, 1816.029]])
    width = np.hypot(*(s1[1] - s1[0]))
    ext = s1[3] - s1[0]
    assert np.hypot(*ext) == pytest.approx(S1_EXTENSION * width)
    assert abs(np.dot(ext, s1[1] - s1[0])) < 1e-6  # perpendicular to the endplate
    l5_centre = polys[Vertebra.L5].mean(axis=0)
    assert np.dot(ext, s1[:2].mean(axis=0) - l5_centre) > 0  # extended away from L5 (caudally)


def test_ap_csv_with_ten_rows_has_no_s1(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("x1,y1,x2,y2,label\n" + "".join(FIGURE1.splitlines(keepends=True)[:10]))
    polys = buu_polygons(read_buu_csv(csv))
    assert list(polys) == [Vertebra.L1, Vertebra.L2, Vertebra.L3, Vertebra.L4, Vertebra.L5]


def test_bad_buu_rows_are_reported(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("1,2,3,4,0\n1,2,x,4,0\n")
    with pytest.raises(DatasetError, match=r"bad.csv:2"):
        read_buu_csv(csv)
    csv.write_text("1,2,3,4,0\n" * 7)
    with pytest.raises(DatasetError, match="10 or 11"):
        buu_polygons(read_buu_csv(csv))


def test_buu_sample_converts_to_a_yolo_dataset(tmp_path: Path) -> None:
    items = list(iter_buu(BUU))
    assert sorted((i.view, len(i.polygons)) for i in items) == [("ap", 5), ("lateral", 6), ("lateral", 6)]
    anatomical = write_yolo_dataset(items, tmp_path / "anat", val_fraction=0.34, seed=3, max_side=256)
    assert "0: vertebra" in anatomical.read_text() and "1: sacrum" in anatomical.read_text()
    for lab in (tmp_path / "anat" / "labels").rglob("*.txt"):
        classes = [int(line.split()[0]) for line in lab.read_text().splitlines()]
        assert classes.count(1) <= 1 and set(classes) <= {0, 1}  # five bodies, at most one sacrum
    yaml = write_yolo_dataset(
        items, tmp_path / "ds", val_fraction=0.34, seed=3, max_side=256, scheme=ClassScheme.LEVELS
    )
    text = yaml.read_text()
    assert "0: L1" in text and "5: S1" in text
    pngs = sorted((tmp_path / "ds" / "images").rglob("*.png"))
    labels = sorted((tmp_path / "ds" / "labels").rglob("*.txt"))
    assert len(pngs) == 3 and len(labels) == 3
    assert {p.parent.name for p in pngs} == {"train", "val"}
    img = cv2.imread(str(pngs[0]), cv2.IMREAD_GRAYSCALE)
    assert max(img.shape) == 256
    for lab in labels:
        for line in lab.read_text().splitlines():
            cls, *coords = line.split()
            values = np.array(coords, float)
            assert 0 <= int(cls) <= 5 and len(values) == 8
            assert values.min() >= 0.0 and values.max() <= 1.0
    # the polygon of L1 on LA/0001, de-normalised, equals the CSV endpoints
    la = next(i for i in items if i.name == "LA_0001")
    lab = next(p for p in labels if p.stem == "LA_0001").read_text().splitlines()[0].split()
    rows, cols = la.shape
    pts = np.array(lab[1:], float).reshape(-1, 2) * [cols, rows] - 0.5
    np.testing.assert_allclose(pts, la.polygons[Vertebra.L1], atol=1e-3)


def test_spine_crops_keep_every_polygon_inside(tmp_path: Path) -> None:
    items = list(iter_buu(BUU))
    write_yolo_dataset(
        items, tmp_path / "ds", val_fraction=0.0, seed=1, max_side=256, spine_crops=True, full_fraction=0.0
    )
    for lab in (tmp_path / "ds" / "labels" / "train").glob("*.txt"):
        vals = np.array([float(v) for line in lab.read_text().splitlines() for v in line.split()[1:]])
        assert vals.min() > 0.0 and vals.max() < 1.0


def test_split_is_seeded_and_disjoint() -> None:
    names = [f"img{i}" for i in range(50)]
    a = split_names(names, 0.2, seed=5)
    assert a == split_names(list(reversed(names)), 0.2, seed=5)
    assert len(a) == 10 and a != split_names(names, 0.2, seed=6)


def test_empty_buu_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no BUU-LSPINE images"):
        list(iter_buu(tmp_path))


def test_seed000_operations() -> None:
    rng = np.random.default_rng(0)
    img = np.tile(np.arange(0, 256, 1, dtype=np.uint8), (64, 1))
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    for name, op in SEED000_OPERATIONS.items():
        out = op(bgr.copy(), rng)
        assert out.shape == bgr.shape and out.dtype == np.uint8, name
    np.testing.assert_array_equal(SEED000_OPERATIONS["negative"](bgr, rng), 255 - bgr)
    gamma = SEED000_OPERATIONS["gamma_0.5"](bgr, rng)
    assert gamma[0, 64, 0] == round(255 * (64 / 255) ** 0.5)
    cb = SEED000_OPERATIONS["contrast_1.2_brightness_1.5"](bgr, rng)
    assert cb[0, 100, 0] == round(1.2 * 100 + 1.5)
    noisy = SEED000_OPERATIONS["gaussian_noise_sigma20"](np.full((200, 200), 128, np.uint8), rng)
    assert 17 < float(noisy.std()) < 23
    blurred = SEED000_OPERATIONS["gaussian_blur_5x5"](np.eye(9, dtype=np.uint8) * 255, rng)
    assert blurred.max() < 255
    eq = SEED000_OPERATIONS["histogram_equalisation"](
        np.full((10, 10), 7, np.uint8) + np.eye(10, dtype=np.uint8), rng
    )
    assert eq.max() == 255


def test_seed_augment_applies_with_its_probability() -> None:
    img = np.random.default_rng(0).integers(30, 200, (32, 32, 3)).astype(np.uint8)
    never, always = SeedAugment(p=0.0, seed=1), SeedAugment(p=1.0, seed=1)
    assert never({"img": img.copy()})["img"] is not None
    np.testing.assert_array_equal(never({"img": img.copy()})["img"], img)
    changed = sum(not np.array_equal(always({"img": img.copy()})["img"], img) for _ in range(30))
    assert changed == 30


def test_clip_polygon_to_a_box() -> None:
    from cdss.train.datasets import clip_polygon

    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    clipped = clip_polygon(square, (5, -1, 20, 20))
    assert clipped[:, 0].min() == pytest.approx(5) and clipped[:, 0].max() == pytest.approx(10)
    x, y = clipped[:, 0], clipped[:, 1]
    assert 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) == pytest.approx(50)
    assert len(clip_polygon(square, (20, 20, 30, 30))) == 0


def test_level_crops_show_the_level_and_clip_its_neighbours(tmp_path: Path) -> None:
    items = [i for i in iter_buu(BUU) if i.view == "lateral"]
    write_yolo_dataset(
        items,
        tmp_path / "ds",
        val_fraction=0.0,
        seed=2,
        max_side=256,
        level_crops=2,
        scheme=ClassScheme.LEVELS,
    )
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    crops = [m for m in manifest if "crop" in m]
    assert len(crops) == 2 * len(items)
    for m in crops:
        upper, lower = (Vertebra(v).class_id for v in m["crop"].split()[1].split("-"))
        lab = (tmp_path / "ds" / "labels" / "train" / f"{m['name']}.txt").read_text().splitlines()
        classes = {int(line.split()[0]) for line in lab}
        assert {upper, lower} <= classes  # both vertebrae of the level are labelled
        assert len(classes) < 6  # a zoom: not the whole spine
        for line in lab:
            vals = np.array(line.split()[1:], float)
            assert vals.min() >= 0.0 and vals.max() <= 1.0
        img = cv2.imread(str(tmp_path / "ds" / "images" / "train" / f"{m['name']}.png"), cv2.IMREAD_GRAYSCALE)
        rows = m["shape"][0]
        assert img is not None and img.shape[0] < 0.7 * rows  # square at source scale, cut at the image edge


def test_level_crop_box_is_shared_with_the_analysis() -> None:
    from cdss.analysis.imaging import level_crop_box

    upper = np.array([[0, 0], [100, 0], [100, 60], [0, 60]], float)
    lower = upper + np.array([10.0, 80.0])
    cx, cy, side = level_crop_box(upper, lower, 1.5)
    assert (cx, cy) == pytest.approx((55, 70)) and side == pytest.approx(1.5 * 140)


def test_variety_operations_keep_shape_and_type() -> None:
    from cdss.train.augment import VARIETY_OPERATIONS, VarietyAugment

    rng = np.random.default_rng(1)
    img = cv2.cvtColor(
        np.random.default_rng(0).integers(20, 230, (64, 48)).astype(np.uint8), cv2.COLOR_GRAY2BGR
    )
    for name, op in VARIETY_OPERATIONS.items():
        out = op(img.copy(), rng)
        assert out.shape == img.shape and out.dtype == np.uint8, name
        assert not np.array_equal(out, img), name
    always = VarietyAugment(p=1.0, seed=3)
    assert all(not np.array_equal(always({"img": img.copy()})["img"], img) for _ in range(10))


def test_synthetic_images_label_every_visible_body_in_the_anatomical_scheme(tmp_path: Path) -> None:
    from cdss.synth import write_dataset
    from cdss.train.datasets import iter_synthetic

    write_dataset(tmp_path / "a", "lumbar_lateral", count=1, seed=77, max_side=400)
    items = list(iter_synthetic(tmp_path / "a"))
    assert len(items) == 1 and items[0].extra["family"] == "A"
    assert {"L1", "L5", "S1", "T12"} <= set(items[0].polygons)  # T12 is drawn, so it is labelled
    write_yolo_dataset(items, tmp_path / "ds", val_fraction=0.0, seed=0, max_side=256)
    lines = next((tmp_path / "ds" / "labels" / "train").glob("*.txt")).read_text().splitlines()
    classes = sorted(int(line.split()[0]) for line in lines)
    assert classes.count(1) == 1 and classes.count(0) >= 6  # one sacrum; L1-L5 and T12 (T11 if in view)
