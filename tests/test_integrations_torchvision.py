"""Anchors for torchvision detectors, built into the real models and run forward."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import DATA_DIR

from fastanchor import wh_iou
from fastanchor.integrations import torchvision as fa_tv

VOC = DATA_DIR / "boxes" / "voc2007_val.npz"
needs_voc = pytest.mark.skipif(not VOC.is_file(), reason=f"real data file {VOC} is absent")


def _boxes():
    with np.load(VOC) as z:
        wh = z["wh"].astype(np.float64)
        img = z["img_wh"].astype(np.float64)
    ok = (wh > 0).all(1)
    return wh[ok], img[ok]


def _torchvision():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("torch")
        return pytest.importorskip("torchvision")


def test_rcnn_scale_is_torchvisions_resize():
    img = np.array([[640.0, 480.0], [2000.0, 500.0], [500.0, 500.0]])
    np.testing.assert_allclose(fa_tv.rcnn_scale(img), [800 / 480, 1333 / 2000, 800 / 500])
    with pytest.raises(ValueError, match="min_size <= max_size"):
        fa_tv.rcnn_scale(img, 900, 800)


def test_generated_sides_follow_anchor_generator_rounding():
    # AnchorGenerator: w = size / sqrt(ar), h = size * sqrt(ar), half-sides rounded
    wh = fa_tv._generated_wh(np.array([32.0, 45.0]), np.array([0.5, 1.0]))
    expected_w = [2 * np.round(32 / np.sqrt(0.5) / 2), 2 * np.round(45 / np.sqrt(0.5) / 2), 32.0, 2 * np.round(22.5)]
    np.testing.assert_allclose(wh[:, 0], expected_w)


@needs_voc
@pytest.mark.parametrize("detector", ["fasterrcnn", "retinanet"])
def test_fpn_fit_scores_and_levels(detector):
    wh, img = _boxes()
    fit = fa_tv.fpn_anchors(wh * fa_tv.rcnn_scale(img)[:, None], detector)
    assert len(fit.sizes) == len(fit.aspect_ratios) == len(fit.strides) == 5
    # sizes double from level to level, ratios are shared
    for a, b in zip(fit.sizes, fit.sizes[1:]):
        np.testing.assert_allclose(np.array(b) / np.array(a), 2.0, rtol=2e-3)
    assert len(set(fit.aspect_ratios)) == 1
    assert sum(fit.level_counts) == fit.n_boxes == len(wh)
    # never below torchvision's own defaults on the data it was fitted to
    assert fit.avg_iou >= fit.default_avg_iou
    # the reported level of a box is that of its best-IoU anchor
    scaled = wh * fa_tv.rcnn_scale(img)[:, None]
    iou = wh_iou(scaled, fit.generated_wh)
    per_level = fit.generated_wh.shape[0] // 5
    counts = np.bincount(iou.argmax(1) // per_level, minlength=5)
    assert tuple(counts) == fit.level_counts
    np.testing.assert_allclose(iou.max(1).mean(), fit.avg_iou, rtol=1e-12)


def test_fpn_rejects_bad_input():
    wh = np.array([[10.0, 20.0], [30.0, 15.0], [50.0, 50.0]])
    with pytest.raises(ValueError, match="detector must be one of"):
        fa_tv.fpn_anchors(wh, "yolo")
    with pytest.raises(ValueError, match="strides must be increasing"):
        fa_tv.fpn_anchors(wh, strides=(8, 4))
    with pytest.raises(ValueError, match="distinct boxes"):
        fa_tv.fpn_anchors(wh, n_ratios=5)
    with pytest.raises(ValueError):
        fa_tv.fpn_anchors(np.array([[0.0, 1.0]]))


@needs_voc
@pytest.mark.integration
@pytest.mark.parametrize("detector", ["fasterrcnn", "retinanet"])
def test_fpn_anchors_build_the_real_model(detector):
    tv = _torchvision()
    import torch
    from torchvision.models import detection

    wh, img = _boxes()
    fit = fa_tv.fpn_anchors(wh * fa_tv.rcnn_scale(img)[:, None], detector)
    gen = fit.anchor_generator()
    # the anchors torchvision generates are those fastanchor scored, level by level
    sides = torch.cat([c[:, 2:] - c[:, :2] for c in gen.cell_anchors]).numpy()
    np.testing.assert_array_equal(sides, fit.generated_wh)
    torch.manual_seed(0)
    common = dict(weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=160)
    if detector == "fasterrcnn":
        model = detection.fasterrcnn_resnet50_fpn(rpn_anchor_generator=gen, **common)
        assert model.rpn.anchor_generator is gen
    else:
        model = detection.retinanet_resnet50_fpn(anchor_generator=gen, **common)
        assert model.anchor_generator is gen
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 120, 160)])
    assert isinstance(out, list) and set(out[0]) >= {"boxes", "scores", "labels"}
    # and the python() text is code that builds the same generator
    ns: dict = {}
    exec(fit.python(), ns)
    assert ns["anchor_generator"].sizes == gen.sizes and ns["anchor_generator"].aspect_ratios == gen.aspect_ratios
    assert tv.__version__


@needs_voc
def test_ssd_fit_never_below_defaults():
    wh, img = _boxes()
    fit = fa_tv.ssd_boxes(wh * 300.0 / img)
    assert fit.avg_iou >= fit.default_avg_iou
    assert len(fit.scales) == len(fit.aspect_ratios) + 1 == 7
    assert all(r >= 1 for level in fit.aspect_ratios for r in level)
    assert [len(r) for r in fit.aspect_ratios] == [1, 2, 2, 2, 1, 1]
    assert sum(fit.level_counts) == len(wh)


@needs_voc
@pytest.mark.integration
def test_ssd_boxes_build_the_real_model():
    _torchvision()
    import torch
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection import ssd300_vgg16
    from torchvision.models.detection.ssd import SSDHead

    wh, img = _boxes()
    fit = fa_tv.ssd_boxes(wh * 300.0 / img)
    gen = fit.default_box_generator()
    ours = fa_tv._ssd_wh_pairs(fit.scales, fit.aspect_ratios, clip=False)
    for theirs, mine in zip(gen._wh_pairs, ours):
        np.testing.assert_allclose(theirs.numpy(), mine, rtol=1e-6)
    torch.manual_seed(0)
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=3)
    model.anchor_generator = gen
    channels = det_utils.retrieve_out_channels(model.backbone, (300, 300))
    model.head = SSDHead(channels, gen.num_anchors_per_location(), 3)
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 300, 300)])
    assert set(out[0]) >= {"boxes", "scores", "labels"}
    ns: dict = {}
    exec(fit.python(), ns)
    assert ns["anchor_generator"].scales == gen.scales


COCO_JSON = DATA_DIR / "raw" / "coco128_val2017_json" / "instances_val2017.json"
needs_coco_json = pytest.mark.skipif(not COCO_JSON.is_file(), reason=f"real data file {COCO_JSON} is absent")


@needs_coco_json
@pytest.mark.parametrize("detector", ["fasterrcnn", "retinanet", "ssd"])
def test_cli_writes_python_that_builds_the_generator(tmp_path, capsys, detector):
    from fastanchor.cli import main

    out = tmp_path / "anchors.py"
    assert main(["torchvision", str(COCO_JSON), "--detector", detector, "--out", str(out)]) == 0
    text = out.read_text()
    assert "fastanchor" in text and ("AnchorGenerator(" in text or "DefaultBoxGenerator(" in text)
    assert capsys.readouterr().out.rstrip().endswith(f"wrote {out}")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left behind"
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return
    ns: dict = {}
    exec(text, ns)
    gen = ns["anchor_generator"]
    assert type(gen).__name__ in ("AnchorGenerator", "DefaultBoxGenerator")


def test_cli_refuses_bad_out(tmp_path, capsys):
    from fastanchor.cli import main

    assert main(["torchvision", "missing.json", "--out", str(tmp_path / "a.yaml")]) == 1
    assert "give a .py file name" in capsys.readouterr().err
    assert main(["torchvision", "missing.json", "--out", str(tmp_path / "no" / "a.py")]) == 1
    assert "does not exist" in capsys.readouterr().err
