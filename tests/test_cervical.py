"""Unit tests of the cervical analysis building blocks (small arrays, seconds in total)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cdss.analysis.cervical.bundle import BundleError, BundleMeta, load_bundle, save_bundle
from cdss.analysis.cervical.network import (
    IDENTITY_THETA,
    SpatialTransformer,
    StenosisNet,
    build_classifier,
    build_resnet50,
    rotation_theta,
    theta_angle,
)
from cdss.analysis.cervical.preprocess import (
    CANONICAL,
    CropWindow,
    crop_roi,
    crop_square,
    crop_stretch,
    equalize,
    to_canonical,
)
from cdss.analysis.types import Laterality
from cdss.train.cervical import binary_metrics, choose_operating_point
from cdss.train.cervical.data import (
    CervicalDataError,
    CropCache,
    SampleAugment,
    build_cache,
    discover,
    make_sample,
    spine_slope_deg,
)
from cdss.train.cervical.evaluate import ap50, box_iou

# ---------------------------------------------------------------- histogram equalisation


def test_equalize_without_mask_is_opencv() -> None:
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(90, 25, (64, 80)), 0, 255).astype(np.uint8)
    assert np.array_equal(equalize(img), cv2.equalizeHist(img))


def test_equalize_full_mask_matches_opencv() -> None:
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal(120, 10, (50, 70)), 0, 255).astype(np.uint8)
    ours = equalize(img, np.ones(img.shape, bool)).astype(int)
    assert np.abs(ours - cv2.equalizeHist(img).astype(int)).max() <= 1  # float32 vs float64 rounding


def test_equalize_mask_ignores_padding_and_stretches_contrast() -> None:
    rng = np.random.default_rng(2)
    img = np.zeros((60, 60), np.uint8)
    img[:, 20:40] = rng.integers(100, 140, (60, 20))
    valid = np.zeros(img.shape, bool)
    valid[:, 20:40] = True
    out = equalize(img, valid)
    assert out[~valid].max() == 0
    assert out[valid].min() == 0 and out[valid].max() == 255
    # monotonic: a brighter input never becomes darker
    order = np.argsort(img[valid], kind="stable")
    assert np.all(np.diff(out[valid][order].astype(int)) >= 0)


def test_equalize_rejects_wrong_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        equalize(np.zeros((4, 4), np.float32))


# ---------------------------------------------------------------- flip normalisation


def test_flip_normalisation_mirrors_left_views_only() -> None:
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert CANONICAL is Laterality.RIGHT
    assert np.array_equal(to_canonical(img, Laterality.RIGHT), img)
    left = to_canonical(img, "L")
    assert np.array_equal(left, img[:, ::-1])
    assert np.array_equal(to_canonical(left, Laterality.LEFT), img)
    batch = np.stack([img, img])
    assert np.array_equal(to_canonical(batch, "L")[1], img[:, ::-1])


def test_left_view_becomes_the_mirror_of_the_right_view() -> None:
    # a mirrored scene (what the generator draws for the other side) gives the same network input
    rng = np.random.default_rng(3)
    right = rng.integers(0, 255, (200, 160)).astype(np.uint8)
    left = right[:, ::-1].copy()
    roi_r = (40.0, 30.0, 90.0, 170.0)
    roi_l = (159 - 90.0, 30.0, 159 - 40.0, 170.0)
    a, va, _ = crop_square(right, roi_r, 0.08, 64)
    b, vb, _ = crop_square(left, roi_l, 0.08, 64)
    xa = to_canonical(equalize(a, va), "R")
    xb = to_canonical(equalize(b, vb), "L")
    assert np.abs(xa.astype(int) - xb.astype(int)).mean() < 3.0


# ---------------------------------------------------------------- crop and coordinates


def test_crop_maps_back_to_source_coordinates() -> None:
    img = np.zeros((900, 700), np.uint8)
    dot = (412.0, 533.0)  # (column, row)
    cv2.circle(img, (int(dot[0]), int(dot[1])), 6, 255, -1)
    roi = (300.0, 200.0, 500.0, 800.0)
    crop, valid, win = crop_square(img, roi, 0.08, 128)
    assert crop.shape == (128, 128) and valid.shape == (128, 128)
    rows, cols = np.nonzero(crop > 60)
    weights = crop[rows, cols].astype(float)
    centre_crop = np.array([[np.average(cols, weights=weights), np.average(rows, weights=weights)]])
    back = win.to_source(centre_crop)[0]
    assert abs(back[0] - dot[0]) < win.scale[0] and abs(back[1] - dot[1]) < win.scale[1]
    # round trip
    pts = np.array([[0.0, 0.0], [127.0, 127.0], [10.5, 99.25]])
    assert np.allclose(win.from_source(win.to_source(pts)), pts)


def test_crop_window_is_square_centred_and_pads_outside_the_image() -> None:
    img = np.full((300, 200), 200, np.uint8)
    roi = (150.0, 10.0, 199.0, 290.0)  # touches the right border
    crop, valid, win = crop_square(img, roi, 0.1, 100)
    assert isinstance(win, CropWindow)
    centre = win.to_source(np.array([[49.5, 49.5]]))[0]
    assert abs(centre[0] - 174.5) < win.scale[0] and abs(centre[1] - 150.0) < win.scale[1]
    assert win.aspect == 1.0
    # the right part of the window lies outside the image: invalid and black
    assert not valid[:, -5:].any() and crop[:, -5:].max() == 0
    # the left part lies outside the ROI + margin: padding too
    assert not valid[:, :5].any()
    assert crop[valid].min() == 200


def test_stretch_crop_maps_back_to_source_coordinates() -> None:
    img = np.zeros((900, 700), np.uint8)
    dot = (355.0, 610.0)
    cv2.circle(img, (int(dot[0]), int(dot[1])), 5, 255, -1)
    roi = (300.0, 200.0, 420.0, 800.0)  # 5 times taller than wide
    crop, valid, win = crop_stretch(img, roi, 0.08, 96)
    assert crop.shape == (96, 96) and valid.all()
    assert win.aspect == pytest.approx(600 / 120, rel=0.02)
    rows, cols = np.nonzero(crop > 60)
    w = crop[rows, cols].astype(float)
    back = win.to_source(np.array([[np.average(cols, weights=w), np.average(rows, weights=w)]]))[0]
    assert abs(back[0] - dot[0]) < 1.5 * win.scale[0] and abs(back[1] - dot[1]) < 1.5 * win.scale[1]
    # the crop modes dispatch by name
    assert np.array_equal(crop_roi(img, roi, 0.08, 96, "stretch")[0], crop)
    assert np.array_equal(crop_roi(img, roi, 0.08, 96, "pad")[0], crop_square(img, roi, 0.08, 96)[0])
    with pytest.raises(ValueError, match="unknown crop mode"):
        crop_roi(img, roi, 0.08, 96, "zoom")


def test_rotation_theta_undoes_a_rotation_of_a_stretched_crop() -> None:
    # a bar rotated 10 degrees clockwise in the source, cropped with a 3:1 window and stretched
    src = np.zeros((600, 600), np.float32)
    src[120:480, 292:308] = 1.0
    m = cv2.getRotationMatrix2D((299.5, 299.5), -10.0, 1.0)
    rotated = cv2.warpAffine(src, m, (600, 600))
    roi = (240.0, 120.0, 360.0, 480.0)
    upright, _, win = crop_stretch(src, roi, 0.0, 96)
    tilted, _, _ = crop_stretch(rotated, roi, 0.0, 96)
    aspect = torch.tensor([win.aspect])
    x = torch.from_numpy(tilted)[None, None]
    fixed = SpatialTransformer.warp(x, rotation_theta(torch.tensor([10.0]), aspect))[0, 0].numpy()
    square_formula = SpatialTransformer.warp(x, rotation_theta(torch.tensor([10.0])))[0, 0].numpy()
    err = np.abs(fixed - upright).mean()
    assert err < 0.3 * np.abs(tilted - upright).mean()
    assert err < np.abs(square_formula - upright).mean()
    theta = rotation_theta(torch.tensor([10.0, -4.0]), torch.tensor([3.0, 0.5]))
    assert theta_angle(theta, torch.tensor([3.0, 0.5])).tolist() == pytest.approx([10.0, -4.0], abs=1e-4)


def test_crop_rejects_empty_roi() -> None:
    with pytest.raises(ValueError, match="empty ROI"):
        crop_square(np.zeros((10, 10), np.uint8), (5.0, 5.0, 5.0, 8.0), 0.1, 8)


# ---------------------------------------------------------------- STN


def test_stn_starts_as_identity() -> None:
    torch.manual_seed(0)
    stn = SpatialTransformer(loc_size=32).eval()
    x = torch.rand(2, 1, 48, 48)
    theta = stn.theta(x)
    assert torch.allclose(theta, torch.tensor(IDENTITY_THETA).view(1, 2, 3).expand(2, 2, 3))
    assert torch.allclose(stn(x), x, atol=1e-5)


def test_rotation_theta_undoes_a_clockwise_rotation() -> None:
    img = np.zeros((96, 96), np.float32)
    img[15:80, 44:52] = 1.0
    m = cv2.getRotationMatrix2D((47.5, 47.5), -12.0, 1.0)  # OpenCV: negative angle = clockwise
    rotated = cv2.warpAffine(img, m, (96, 96))
    x = torch.from_numpy(rotated)[None, None]
    fixed = SpatialTransformer.warp(x, rotation_theta(torch.tensor([12.0])))[0, 0].numpy()
    wrong = SpatialTransformer.warp(x, rotation_theta(torch.tensor([-12.0])))[0, 0].numpy()
    assert np.abs(fixed - img).mean() < 0.25 * np.abs(rotated - img).mean()
    assert np.abs(wrong - img).mean() > np.abs(rotated - img).mean()


def test_stenosis_net_keeps_the_stn_frozen() -> None:
    net = StenosisNet(SpatialTransformer(32), build_resnet50())
    net.train()
    assert not net.stn.training
    assert all(not p.requires_grad for p in net.stn.parameters())
    assert all(p.requires_grad for p in net.classifier.parameters())
    with torch.no_grad():
        out = net.eval()(torch.rand(2, 1, 64, 64))
    assert out.shape == (2,)


# ---------------------------------------------------------------- operating point and metrics


def test_youden_operating_point_separates_separable_scores() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.05, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    op = choose_operating_point(y, p, "youden")
    assert 0.3 < op < 0.6
    m = binary_metrics(y, p, op)
    assert m["accuracy"] == 1.0 and m["auc"] == 1.0 and m["sensitivity"] == 1.0 and m["specificity"] == 1.0


def test_sensitivity_first_operating_point_reaches_the_sensitivity() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    op = choose_operating_point(y, p, "sens95")
    assert binary_metrics(y, p, op)["sensitivity"] >= 0.95
    assert choose_operating_point(y, p, "0.42") == pytest.approx(0.42)
    with pytest.raises(ValueError, match="unknown operating point"):
        choose_operating_point(y, p, "best")


def test_binary_metrics_counts() -> None:
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.4, 0.8, 0.7, 0.1])
    m = binary_metrics(y, p, 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_ap50_and_iou() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    # a perfect detector scores 0.995 with 101-point interpolation, exactly as Ultralytics reports it
    assert ap50([(0, 0.9, True), (1, 0.8, True)], 2) == pytest.approx(0.995)
    assert ap50([(0, 0.9, False), (1, 0.8, True)], 2) < 0.6
    assert ap50([], 3) == 0.0


# ---------------------------------------------------------------- ROI detector output mapping


def test_roi_boxes_map_back_to_source_pixels() -> None:
    from cdss.analysis._ultralytics import ultralytics

    ultralytics()
    from ultralytics.engine.results import Results

    from cdss.analysis.cervical.roi import RoiDetector

    source_shape = (1536, 1152)  # rows, columns → small image 384 × 288 (factor 4)
    small_shape = (384, 288)
    # an edge-coordinate box on the small image, two candidates of different classes
    boxes = torch.tensor([[50.0, 40.0, 150.0, 300.0, 0.9, 1.0], [52.0, 41.0, 149.0, 298.0, 0.3, 0.0]])
    res = Results(np.zeros((*small_shape, 3), np.uint8), "x", {0: "l", 1: "r"}, boxes=boxes)
    det = RoiDetector._best(res, source_shape, small_shape)
    assert det is not None and det.laterality is Laterality.RIGHT
    assert det.box == pytest.approx((199.5, 159.5, 599.5, 1199.5))
    assert det.confidence == pytest.approx(0.9) and det.side_confidence == pytest.approx(0.75)


# ---------------------------------------------------------------- bundle


def test_bundle_round_trip_in_half_precision(tmp_path: Path) -> None:
    stn = SpatialTransformer(32)
    clf = build_resnet50()
    meta = BundleMeta(imgsz=64, operating_point=0.37, stn_loc_size=32)
    path = tmp_path / "c.pt"
    sha = save_bundle(path, meta, stn.state_dict(), clf.state_dict(), None)
    assert len(sha) == 64
    blob = load_bundle(path)
    assert blob["meta"]["operating_point"] == pytest.approx(0.37)
    assert blob["classifier"]["fc.weight"].dtype == torch.float16
    assert blob["classifier"]["bn1.num_batches_tracked"].dtype == torch.int64
    assert blob["roi_detector"] is None
    # 25.5 M parameters in fp16 ≈ 47 MiB
    assert 40e6 < path.stat().st_size < 60e6


def test_lighter_backbone_round_trips_and_is_rebuilt_from_the_meta(tmp_path: Path) -> None:
    from cdss.analysis.cervical import CervicalAnalyzer

    clf = build_classifier("resnet18", "max")
    meta = BundleMeta(imgsz=64, backbone="resnet18", pool="max", stn_loc_size=0)
    path = tmp_path / "r18.pt"
    save_bundle(path, meta, None, clf.state_dict(), None)
    # 11.2 M parameters in fp16 ≈ 21 MiB
    assert 18e6 < path.stat().st_size < 26e6
    analyzer = CervicalAnalyzer.load(path, "cpu")
    assert analyzer.meta.backbone == "resnet18"
    got = analyzer.net.classifier.state_dict()
    for key, value in clf.state_dict().items():
        assert got[key].shape == value.shape, key
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        build_classifier("vgg16", "max")


def test_compact_backbone_round_trips_and_classifies_like_before_saving(tmp_path: Path) -> None:
    from cdss.analysis.cervical import CervicalAnalyzer

    torch.manual_seed(0)
    clf = build_classifier("compact", "max").eval()
    n_params = sum(p.numel() for p in clf.parameters())
    assert 100_000 < n_params < 200_000  # the size the model card states
    meta = BundleMeta(imgsz=64, backbone="compact", pool="max", stn_loc_size=0)
    path = tmp_path / "compact.pt"
    save_bundle(path, meta, None, clf.state_dict(), None)
    analyzer = CervicalAnalyzer.load(path, "cpu")
    assert analyzer.meta.backbone == "compact"
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        want = clf((x - 0.5) / 0.29).squeeze(-1)
        got = analyzer.net(x.to(next(analyzer.net.parameters()).dtype)).float()
    # the bundle stores fp16 weights: the logits agree to half precision
    assert torch.allclose(got, want, atol=0.05, rtol=0.02)


def test_bundle_errors_are_specific(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="do not exist"):
        load_bundle(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"model": 1}, other)
    with pytest.raises(BundleError, match="not a cdss cervical"):
        load_bundle(other)


# ---------------------------------------------------------------- training data


def test_spine_slope_sign() -> None:
    # a vertical column rotated clockwise by 10° on screen (rows down): bottom moves left
    theta = math.radians(10.0)
    vertebrae = {}
    for k in range(6):
        row = 100.0 + 40.0 * k
        col = 300.0 - (row - 200.0) * math.tan(theta)
        quad = [[col - 10, row - 5], [col + 10, row - 5], [col + 10, row + 5], [col - 10, row + 5]]
        vertebrae[f"C{k + 2}"] = {"corners": quad}
    assert spine_slope_deg(vertebrae) == pytest.approx(10.0, abs=1e-6)


def _site_folder(tmp: Path, n: int = 6) -> Path:
    rows = ["file,laterality,label,x0,y0,x1,y1"]
    for i in range(n):
        img = np.full((120, 90), 40, np.uint8)
        cv2.rectangle(img, (30, 20), (60, 100), 180 + (i % 3) * 20, -1)
        cv2.imwrite(str(tmp / f"img{i}.png"), img)
        rows.append(
            f"img{i}.png,{'L' if i % 2 else 'R'},{'abnormal' if i % 3 == 0 else 'normal'},30,20,60,100"
        )
    (tmp / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp


def test_site_folder_layout_and_cache(tmp_path: Path) -> None:
    samples = discover(_site_folder(tmp_path))
    assert len(samples) == 6
    assert samples[0].laterality is Laterality.RIGHT and samples[0].label == 1
    assert samples[1].laterality is Laterality.LEFT and samples[1].roi == (30.0, 20.0, 60.0, 100.0)
    cache = build_cache(samples, 48, 0.08)
    cache.save(tmp_path / "cache")
    again = CropCache.load(tmp_path / "cache")
    assert np.array_equal(again.images, cache.images) and np.array_equal(again.inside, cache.inside)
    x, angle, aspect = make_sample(again, 1, 48, 0.08, SampleAugment(), np.random.default_rng(0))
    assert x.shape == (48, 48) and x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert math.isnan(angle) and aspect == 1.0
    # the augmented path stays inside [0, 1] and keeps the shape
    y, _, _ = make_sample(again, 0, 48, 0.08, SampleAugment.training(), np.random.default_rng(1))
    # stretch crops need a finer cache; the ROI (30 x 80 px) is 2.7 times taller than wide
    fine = build_cache(samples, 48, 0.08, crop="stretch")
    z, _, aspect = make_sample(fine, 0, 48, 0.08, SampleAugment(), np.random.default_rng(0), "stretch")
    assert z.shape == (48, 48) and aspect == pytest.approx(80 / 30, rel=0.05)
    assert y.shape == (48, 48) and y.max() <= 1.0


def test_left_view_angles_are_mirrored(tmp_path: Path) -> None:
    samples = discover(_site_folder(tmp_path))
    cache = build_cache(samples, 48, 0.08)
    cache.slopes[:] = 5.0
    _, right, _ = make_sample(cache, 0, 48, 0.08, SampleAugment(), np.random.default_rng(0))
    _, left, _ = make_sample(cache, 1, 48, 0.08, SampleAugment(), np.random.default_rng(0))
    assert right == pytest.approx(5.0) and left == pytest.approx(-5.0)


def test_site_csv_errors_name_the_row(tmp_path: Path) -> None:
    _site_folder(tmp_path, 2)
    text = (tmp_path / "labels.csv").read_text().replace("abnormal", "maybe")
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(CervicalDataError, match=r"labels.csv:2: label must be"):
        discover(tmp_path)
    with pytest.raises(CervicalDataError, match="no cervical oblique views"):
        discover(_empty(tmp_path))


def _empty(tmp: Path) -> Path:
    d = tmp / "empty"
    d.mkdir()
    return d


# ---------------------------------------------------------------- learning-rate schedule


def test_lr_schedule_seed_steps_and_milestones() -> None:
    from cdss.train.cervical import CervicalTrainConfig
    from cdss.train.cervical.classifier import lr_at as _lr_at

    seed = CervicalTrainConfig(data=Path("."))  # seed 004: 0.001, × 0.1 every 7 of 25 epochs
    assert _lr_at(seed, 0.0) == pytest.approx(1e-3)
    assert _lr_at(seed, 6.9 / 25) == pytest.approx(1e-3)
    assert _lr_at(seed, 7 / 25) == pytest.approx(1e-4)
    assert _lr_at(seed, 14 / 25) == pytest.approx(1e-5)
    assert _lr_at(seed, 21 / 25) == pytest.approx(1e-6)
    short = CervicalTrainConfig(data=Path("."), lr=0.002, lr_milestones=(0.7, 0.9), warmup_fraction=0.02)
    assert _lr_at(short, 0.01) == pytest.approx(0.001)
    assert _lr_at(short, 0.5) == pytest.approx(0.002)
    assert _lr_at(short, 0.75) == pytest.approx(0.0002)
    assert _lr_at(short, 0.95) == pytest.approx(0.00002)
