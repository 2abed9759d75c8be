"""Configs as users write them: YOLOv5 yamls of any level count, read back by the real frameworks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR

from fastanchor.cli import main
from fastanchor.export import read_anchors, write_anchors
from fastanchor.export._yolov5arch import yolov5_layout

COCO_JSON = DATA_DIR / "raw" / "coco128_val2017_json" / "instances_val2017.json"
needs_coco_json = pytest.mark.skipif(not COCO_JSON.is_file(), reason=f"real data file {COCO_JSON} is absent")

TINY = """\
nc: 80
depth_multiple: 1.0
width_multiple: 1.0
anchors: 2  # AutoAnchor evolves 2 anchors per P output layer
backbone:
  [[-1, 1, Conv, [16, 3, 1]],  # 0
   [-1, 1, nn.MaxPool2d, [2, 2, 0]],  # 1-P1/2
   [-1, 1, Conv, [32, 3, 2]],  # 2-P2/4
   [-1, 1, Conv, [64, 3, 2]],  # 3-P3/8
   [-1, 1, Conv, [128, 3, 2]],  # 4-P4/16
   [-1, 1, Conv, [256, 3, 2]],  # 5-P5/32
  ]
head:
  [[-1, 1, Conv, [128, 1, 1]],  # 6
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],  # 7
   [[-1, 4], 1, Concat, [1]],  # 8 (P4)
   [-1, 1, Conv, [128, 3, 1]],  # 9
   [[9, 6], 1, Detect, [nc, anchors]],  # Detect(P4, P5)
  ]
"""


def test_layout_of_a_two_level_model():
    layout = yolov5_layout(TINY)
    assert layout.n_levels == 2 and layout.strides == (16.0, 32.0)
    assert layout.source == "architecture" and layout.anchors_per_level == 2 and layout.detect_line == 18


def test_layout_falls_back_to_well_known_strides():
    text = TINY.replace("[[-1, 4], 1, Concat", "[[40, 4], 1, Concat")  # a layer the walk cannot resolve
    layout = yolov5_layout(text)
    assert layout.source == "well-known" and layout.strides == (16.0, 32.0)


def test_layout_rejects_bad_detect_inputs():
    with pytest.raises(ValueError, match="list of layer indices"):
        yolov5_layout(TINY.replace("[[9, 6], 1, Detect", "[9, 1, Detect"))
    assert yolov5_layout("anchors: 3\n") is None


def test_written_yaml_has_explicit_levels_and_no_stale_comment(tmp_path):
    template = tmp_path / "tiny.yaml"
    template.write_text(TINY)
    out = tmp_path / "out.yaml"
    levels = [np.array([[10.0, 14], [23, 27]]), np.array([[37.0, 58], [81, 82]])]
    write_anchors(str(out), levels, (16, 32), template=str(template))
    text = out.read_text()
    assert "AutoAnchor evolves" not in text and "anchors: 2" not in text
    assert "# P4/16" in text and "# P5/32" in text
    back = read_anchors(str(out))
    assert back.strides == (16.0, 32.0)
    np.testing.assert_array_equal(back.anchors, np.concatenate(levels))
    with pytest.raises(ValueError, match="takes 2 levels, but 3 levels"):
        write_anchors(str(tmp_path / "bad.yaml"), levels + [levels[0]], (8, 16, 32), template=str(template))
    # a yaml whose anchors disagree with its Detect layer is refused on reading, naming the line
    bad = tmp_path / "mismatch.yaml"
    bad.write_text(text.replace("  - [37,58, 81,82]  # P5/32\n", ""))
    with pytest.raises(ValueError, match="has 1 levels but the 2-input Detect layer"):
        read_anchors(str(bad))


@needs_coco_json
def test_cli_uses_the_models_levels(tmp_path, capsys):
    template = tmp_path / "tiny.yaml"
    template.write_text(TINY)
    out = tmp_path / "out.yaml"
    assert main(["anchors", str(COCO_JSON), "--model", str(template), "--out", str(out), "--generations", "50"]) == 0
    captured = capsys.readouterr()
    report = captured.out
    assert "P4/16" in report and "P5/32" in report and "P3/8" not in report
    assert f"read {out} back: 4 anchors in 2 levels, fitness" in captured.err  # re-read and re-scored
    back = read_anchors(str(out))
    assert [len(lv) for lv in back.levels] == [2, 2] and back.strides == (16.0, 32.0)
    assert main(["anchors", str(COCO_JSON), "--model", str(template), "--levels", "3", "--generations", "0"]) == 1
    assert "takes 2 levels, but --levels gives 3" in capsys.readouterr().err
    assert main(["anchors", str(COCO_JSON), "--model", str(template), "-k", "5", "--generations", "0"]) == 1
    assert "-k 5 anchors cannot be split evenly over 2 levels" in capsys.readouterr().err


def _yolov5_models() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("torch")
        yolov5 = pytest.importorskip("yolov5")
    return Path(yolov5.__file__).parent / "models"


@needs_coco_json
@pytest.mark.integration
@pytest.mark.parametrize(
    "name",
    [
        "yolov5n",
        "hub/yolov5-p2",
        "hub/yolov5-p34",
        "hub/yolov5-p6",
        "hub/yolov5-p7",
        "hub/yolov3-tiny",
        "hub/yolov5n6",
        "segment/yolov5n-seg",
    ],
)
def test_written_yaml_builds_the_real_model(tmp_path, capsys, name):
    models = _yolov5_models()
    import torch
    from yolov5.models.yolo import Model

    template = models / f"{name}.yaml"
    out = tmp_path / "model.yaml"
    assert main(["anchors", str(COCO_JSON), "--model", str(template), "--out", str(out), "--generations", "50"]) == 0
    capsys.readouterr()
    back = read_anchors(str(out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Model(str(out), ch=3, nc=80)
    det = model.model[-1]
    assert det.nl == len(back.levels)
    np.testing.assert_array_equal(det.stride.numpy(), back.strides)  # the architecture walk agrees with YOLOv5
    built = (det.anchors * det.stride.view(-1, 1, 1)).reshape(-1, 2).numpy()
    np.testing.assert_allclose(built, back.anchors, rtol=1e-6)
    with torch.no_grad():
        model.eval()
        model(torch.zeros(1, 3, 128, 128))


MMYOLO_STYLE = """\
_base_ = ['../_base_/default_runtime.py']
anchors = [
    [(10, 13), (16, 30), (33, 23)],  # P3/8
    [(30, 61), (62, 45), (59, 119)],  # P4/16
    [(116, 90), (156, 198), (373, 326)]  # P5/32
]
strides = [8, 16, 32]
model = dict(
    bbox_head=dict(
        type='YOLOv5Head',
        prior_generator=dict(type='mmdet.YOLOAnchorGenerator', base_sizes=anchors, strides=strides)))
"""


def test_mmyolo_top_level_names_are_read_and_rewritten(tmp_path):
    cfgs = tmp_path / "configs" / "yolov5"
    cfgs.mkdir(parents=True)
    template = cfgs / "yolov5_s.py"
    template.write_text(MMYOLO_STYLE)
    back = read_anchors(str(template))
    assert back.strides == (8.0, 16.0, 32.0) and back.levels[0].tolist() == [[10, 13], [16, 30], [33, 23]]
    levels = [
        np.array([[11.0, 12], [20, 25], [30, 40]]),
        np.array([[50.0, 60], [70, 80], [90, 100]]),
        np.array([[120.0, 130], [200, 210], [300, 310]]),
    ]
    out_dir = tmp_path / "work"
    out_dir.mkdir()
    out = out_dir / "mine.py"
    write_anchors(str(out), levels, (8, 16, 32), template=str(template))
    text = out.read_text()
    assert "base_sizes=anchors, strides=strides" in text  # the call is untouched; the names are rewritten
    assert text.startswith("_base_ = ['../configs/_base_/default_runtime.py']")  # relative to the new folder
    assert "anchors = [\n    [(11, 12), (20, 25), (30, 40)],  # P3/8" in text
    again = read_anchors(str(out))
    np.testing.assert_array_equal(again.anchors, np.concatenate(levels))


def test_mmdet_snippet_is_an_override_with_the_mmdet_key(tmp_path):
    out = tmp_path / "snippet.py"
    levels = [np.array([[10.0, 13]]), np.array([[30.0, 61]]), np.array([[116.0, 90]])]
    write_anchors(str(out), levels, (8, 16, 32))
    text = out.read_text()
    assert "anchor_generator=dict(" in text and "prior_generator=dict(" not in text
    back = read_anchors(str(out))
    assert back.strides == (8.0, 16.0, 32.0)
    np.testing.assert_array_equal(back.anchors, np.concatenate(levels))


def _mm_configs(package: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("mmengine")
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pytest.skip(f"{package} is not installed (its configs are the test input)")
    return Path(spec.origin).parent / ".mim" / "configs"


MMDET_YOLO = [
    "yolov3_d53_8xb8-320-273e_coco",
    "yolov3_d53_8xb8-amp-ms-608-273e_coco",
    "yolov3_d53_8xb8-ms-416-273e_coco",
    "yolov3_d53_8xb8-ms-608-273e_coco",
    "yolov3_mobilenetv2_8xb24-320-300e_coco",
    "yolov3_mobilenetv2_8xb24-ms-416-300e_coco",
]


@needs_coco_json
@pytest.mark.integration
@pytest.mark.parametrize(
    "name",
    [("mmdet", f"yolo/{n}") for n in MMDET_YOLO]
    + [
        ("mmyolo", "yolov5/yolov5_s-v61_syncbn_8xb16-300e_coco"),
        ("mmyolo", "yolov5/yolov5_n-v61_syncbn_fast_8xb16-300e_coco"),
    ],
)
def test_mm_config_written_is_what_mmengine_loads(tmp_path, capsys, name):
    package, stem = name
    template = _mm_configs(package) / f"{stem}.py"
    from mmengine.config import Config

    out = tmp_path / "elsewhere" / "mine.py"
    out.parent.mkdir()
    assert main(["anchors", str(COCO_JSON), "--model", str(template), "--out", str(out), "--generations", "50"]) == 0
    report = capsys.readouterr()
    written = read_anchors(str(out))
    old = Config.fromfile(str(template), import_custom_modules=False)
    new = Config.fromfile(str(out), import_custom_modules=False)
    key = "anchor_generator" if package == "mmdet" else "prior_generator"
    gen_old, gen_new = old.model.bbox_head[key], new.model.bbox_head[key]
    assert gen_new.type == gen_old.type and list(gen_new.strides) == list(gen_old.strides)
    order = np.argsort([s if not isinstance(s, (list, tuple)) else s[0] for s in gen_new.strides])
    merged = np.concatenate([np.asarray(gen_new.base_sizes[i], dtype=float) for i in order])
    np.testing.assert_array_equal(merged, written.anchors)
    assert not np.array_equal(merged, np.concatenate([np.asarray(gen_old.base_sizes[i], float) for i in order]))
    # everything else is the template's (the head's classes, the training schedule)
    assert {k: v for k, v in new.model.bbox_head.items() if k != key} == {
        k: v for k, v in old.model.bbox_head.items() if k != key
    }
    assert new.get("max_epochs") == old.get("max_epochs") and new.train_cfg == old.train_cfg
    if package == "mmdet":  # the pipelines' image size was used
        size = old.test_dataloader.dataset.pipeline[1].scale[0]
        assert f"img-size {size} from the model config" in report.err


def test_inherited_config_without_mmengine_says_what_to_install(tmp_path):
    try:
        import mmengine  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("mmengine is installed: the inherited config is read through it")
    child = tmp_path / "child.py"
    child.write_text("_base_ = './yolov3_d53.py'\nmodel = dict(bbox_head=dict(num_classes=3))\n")
    with pytest.raises(ValueError, match=r"inherits one through _base_\): reading it needs mmengine"):
        read_anchors(str(child))


TINY_CFG = """\
[net]
width=128
height=128
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear

[yolo]
mask = 3,4,5
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=80
num=6

[route]
layers = -3

[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear

[yolo]
mask = 0,1,2
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=80
num=6
"""


def test_darknet_filters_follow_the_anchor_count(tmp_path):
    template = tmp_path / "tiny.cfg"
    template.write_text(TINY_CFG)
    out = tmp_path / "out.cfg"
    levels = [
        np.array([[10.0, 14], [23, 27], [37, 58], [40, 40]]),
        np.array([[81.0, 82], [135, 169], [344, 319], [300, 300]]),
    ]
    write_anchors(str(out), levels, (8, 16), template=str(template))
    text = out.read_text()
    assert text.count("filters=340") == 2 and "filters=255" not in text  # (80 + 5) * 4
    assert text.count("filters=16") == 1 and text.count("filters=32") == 1
    back = read_anchors(str(out))
    np.testing.assert_array_equal(back.anchors, np.concatenate(levels))
    same = tmp_path / "same.cfg"  # an unchanged count leaves filters alone
    write_anchors(str(same), [lv[:3] for lv in levels], (8, 16), template=str(template))
    assert same.read_text().count("filters=255") == 2
    bad = tmp_path / "bad.cfg"
    bad.write_text(TINY_CFG.replace("filters=255", "filters=256", 1))
    with pytest.raises(ValueError, match="filters=256 is not a multiple of the 3 anchors"):
        write_anchors(str(tmp_path / "x.cfg"), levels, (8, 16), template=str(bad))


def _zero_weights(path: Path, f: int) -> Path:
    """Zero darknet weights for TINY_CFG with ``f`` filters before each [yolo]: a header, then per
    layer biases [, BN scales, means, variances] and kernels."""
    counts = [16 * 4 + 16 * 3 * 9, 32 * 4 + 32 * 16 * 9, f + f * 32, f + f * 32]
    path.write_bytes(
        np.array([0, 2, 0], np.int32).tobytes()
        + np.zeros(1, np.int64).tobytes()
        + np.zeros(sum(counts), np.float32).tobytes()
    )
    return path


def _forward(cv2, cfg: Path, weights: Path):
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(cv2.dnn.blobFromImage(np.zeros((128, 128, 3), np.uint8), 1 / 255, (128, 128)))
    return net.forward(net.getUnconnectedOutLayersNames())


@pytest.mark.integration
def test_darknet_cfg_loads_in_opencv(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip(f"OpenCV {cv2.__version__} has no darknet reader (OpenCV 5 dropped it; use opencv-python<5)")
    template = tmp_path / "tiny.cfg"
    template.write_text(TINY_CFG)
    out = tmp_path / "out.cfg"
    levels = [
        np.array([[10.0, 14], [23, 27], [37, 58], [40, 40]]),
        np.array([[81.0, 82], [135, 169], [344, 319], [300, 300]]),
    ]
    write_anchors(str(out), levels, (8, 16), template=str(template))
    outs = _forward(cv2, out, _zero_weights(tmp_path / "w340", 4 * (80 + 5)))
    # one row per anchor and cell, (4 + 1 + 80) values each: 4 anchors on two 32x32 grids
    assert sum(o.shape[0] for o in outs) == 2 * 4 * 32 * 32 and all(o.shape[1] == 85 for o in outs)
    # with the filters of 3 anchors left in place, OpenCV refuses the file (what fastanchor fixes)
    broken = tmp_path / "broken.cfg"
    broken.write_text(out.read_text().replace("filters=340", "filters=255"))
    with pytest.raises(cv2.error):
        _forward(cv2, broken, _zero_weights(tmp_path / "w255", 255))


def _ssd_config() -> str:
    """test_ssd's pipeline config (an SSD with TensorFlow's five default aspect ratios)."""
    from test_ssd import PIPELINE

    return PIPELINE


@needs_coco_json
def test_ssd_config_keeps_its_ratio_count_and_refuses_worse(tmp_path, capsys):
    from fastanchor.export import config_aspect_ratios

    cfg = tmp_path / "pipeline.config"
    cfg.write_text(_ssd_config())
    out = tmp_path / "new.config"
    code = main(["ssd", str(COCO_JSON), "--config", str(cfg), "--out", str(out), "-q", "--json"])
    captured = capsys.readouterr()
    import json

    doc = json.loads(captured.out)
    assert len(doc["aspect_ratios"]) == 5  # the config's count: the prior count and predictor shape stay
    assert doc["config"]["aspect_ratios"] == [1.0, 2.0, 0.5, 3.0, 0.3333]
    if doc["written"]["avg_iou"] >= doc["config"]["avg_iou"]:
        assert code == 0 and len(config_aspect_ratios(out.read_text())) == 5
    else:
        assert code == 1 and "below the config's own" in captured.err and not out.exists()
    # fewer ratios than the config's score lower: refused, unless forced
    assert main(["ssd", str(COCO_JSON), "--config", str(cfg), "--out", str(out), "-n", "1"]) == 1
    assert "below the config's own" in capsys.readouterr().err
    assert main(["ssd", str(COCO_JSON), "--config", str(cfg), "--out", str(out), "-n", "1", "--force", "-q"]) == 0
    assert "wrote the aspect ratios" in capsys.readouterr().out  # on stdout, not hidden by -q
    assert config_aspect_ratios(out.read_text()) is not None and len(config_aspect_ratios(out.read_text())) == 1


def test_ssd_checks_the_config_and_suffix_before_the_work(tmp_path, capsys):
    cfg = tmp_path / "pipeline.config"
    cfg.write_text("model { faster_rcnn { } }\n")
    # the dataset does not exist: the config error must come first
    assert main(["ssd", str(tmp_path / "nothing"), "--config", str(cfg), "--out", str(tmp_path / "o.config")]) == 1
    assert "has no ssd_anchor_generator or multiscale_anchor_generator block" in capsys.readouterr().err
    cfg.write_text(_ssd_config())
    assert main(["ssd", str(tmp_path / "nothing"), "--config", str(cfg), "--out", str(tmp_path / "o.yaml")]) == 1
    assert "text proto; .yaml is the suffix of another format" in capsys.readouterr().err


MULTISCALE = """\
model {
  ssd {
    image_resizer {
      fixed_shape_resizer {
        height: 640
        width: 640
      }
    }
    anchor_generator {
      multiscale_anchor_generator {
        min_level: 3
        max_level: 7
        anchor_scale: 4.0
        aspect_ratios: 1.0
        aspect_ratios: 2.0
        aspect_ratios: 0.5
        scales_per_octave: 2
      }
    }
  }
}
"""


@needs_coco_json
def test_ssd_multiscale_anchor_generator(tmp_path, capsys):
    from fastanchor.export import config_aspect_ratios

    cfg = tmp_path / "retinanet.config"
    cfg.write_text(MULTISCALE)
    assert config_aspect_ratios(MULTISCALE) == (1.0, 2.0, 0.5)
    out = tmp_path / "new.config"
    code = main(["ssd", str(COCO_JSON), "--config", str(cfg), "--out", str(out), "--force"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "stretched to 640x640" in captured.out  # the config's resizer
    text = out.read_text()
    assert len(config_aspect_ratios(text)) == 3  # the config's count
    for kept in ("min_level: 3", "max_level: 7", "anchor_scale: 4.0", "scales_per_octave: 2"):
        assert kept in text


def _tf_protos():
    """The TF Object Detection API's generated protos (the `tensorflow-object-detection-api`
    package ships them; generated in 2019, they load with protobuf's pure-Python implementation,
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, set before protobuf is first imported)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the 2019 generated code's descriptor calls
            from google.protobuf import text_format
            from object_detection.protos import pipeline_pb2
    except ImportError as exc:
        pytest.skip(f"the TF Object Detection API protos are not importable: {exc}")
    except TypeError as exc:  # "Descriptors cannot be created directly": protobuf's C implementation
        pytest.skip(f"the 2019 protos need PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python: {exc}")
    return pipeline_pb2, text_format


@needs_coco_json
@pytest.mark.integration
@pytest.mark.parametrize("which", ["ssd", "multiscale"])
def test_ssd_config_written_parses_with_the_real_protos(tmp_path, capsys, which):
    pipeline_pb2, text_format = _tf_protos()
    from fastanchor.export import config_aspect_ratios

    cfg = tmp_path / "pipeline.config"
    cfg.write_text(_ssd_config() if which == "ssd" else MULTISCALE)
    out = tmp_path / "new.config"
    assert main(["ssd", str(COCO_JSON), "--config", str(cfg), "--out", str(out), "--force", "-q"]) == 0
    capsys.readouterr()
    parsed = pipeline_pb2.TrainEvalPipelineConfig()
    text_format.Merge(out.read_text(), parsed)
    gen = parsed.model.ssd.anchor_generator
    block = gen.ssd_anchor_generator if which == "ssd" else gen.multiscale_anchor_generator
    np.testing.assert_allclose(list(block.aspect_ratios), config_aspect_ratios(out.read_text()), rtol=1e-6)
    assert len(block.aspect_ratios) == len(config_aspect_ratios(cfg.read_text()))
    original = pipeline_pb2.TrainEvalPipelineConfig()
    text_format.Merge(cfg.read_text(), original)
    block.ClearField("aspect_ratios")
    orig_block = (
        original.model.ssd.anchor_generator.ssd_anchor_generator
        if which == "ssd"
        else original.model.ssd.anchor_generator.multiscale_anchor_generator
    )
    orig_block.ClearField("aspect_ratios")
    assert parsed == original  # everything but the ratios is the config's own


@pytest.mark.integration
@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("yolov3_d53_8xb8-320-273e_coco", None),  # one training size: no multi-scale
        ("yolov3_d53_8xb8-ms-416-273e_coco", (320 / 416, 1.0)),  # RandomResize 320-416, tested at 416
        ("yolov3_d53_8xb8-ms-608-273e_coco", (320 / 608, 1.0)),  # RandomResize 320-608, tested at 608
    ],
)
def test_mm_config_multiscale_training_is_read(stem, expected):
    from fastanchor.export._mmconfig import train_scale_range

    got = train_scale_range(str(_mm_configs("mmdet") / "yolo" / f"{stem}.py"))
    if expected is None:
        assert got is None
    else:
        assert got is not None and got[0] == expected and "RandomResize" in got[1]


@needs_coco_json
@pytest.mark.integration
def test_anchors_for_an_mm_config_fit_its_grid_and_training_scales(capsys):
    template = _mm_configs("mmdet") / "yolo" / "yolov3_d53_8xb8-ms-416-273e_coco.py"
    code = main(["anchors", str(COCO_JSON), "--model", str(template), "--generations", "30", "--json", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    assert doc["objective"] == "recall" and doc["grid"] is True and doc["scale"] == [320 / 416, 1.0]
    # an explicit --scale 0 turns the augmentation off
    code = main(
        ["anchors", str(COCO_JSON), "--model", str(template), "--generations", "30", "--scale", "0", "--json", "-q"]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["scale"] is None
