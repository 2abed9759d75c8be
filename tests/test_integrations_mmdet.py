"""The OpenMMLab optimize_anchors.py flow: FastAnchorOptimizer on a real mmengine dataset,
checked against the installed mmyolo / mmdetection tool sources, and their result files."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR

from fastanchor.export import read_anchors
from fastanchor.integrations.mmdet import RESULT_FILE, FastAnchorOptimizer

COCO = DATA_DIR / "raw" / "coco128_val2017_json" / "instances_val2017.json"
needs_coco = pytest.mark.skipif(not COCO.is_file(), reason=f"real data file {COCO} is absent")


def _coco_dataset():
    """An mmengine BaseDataset over real COCO annotations, with mmdet's data-info layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mmengine_dataset = pytest.importorskip("mmengine.dataset")

    class CocoBoxes(mmengine_dataset.BaseDataset):
        def load_data_list(self):
            doc = json.loads(Path(self.ann_file).read_text())
            per_image = {
                img["id"]: {"width": img["width"], "height": img["height"], "instances": []} for img in doc["images"]
            }
            for ann in doc["annotations"]:
                x, y, w, h = ann["bbox"]
                per_image[ann["image_id"]]["instances"].append({"bbox": [x, y, x + w, y + h], "bbox_label": 0})
            return list(per_image.values())

    return CocoBoxes(ann_file=str(COCO), serialize_data=False, lazy_init=False)


def _tool_source(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pytest.skip(f"{package} is not installed")
    path = Path(spec.origin).parent / ".mim" / "tools" / "analysis_tools" / "optimize_anchors.py"
    if not path.is_file():
        pytest.skip(f"{path} is not in the installed {package}")
    return path.read_text()


def _calls(source: str, names: set) -> dict:
    """Keyword names of every call to the given classes in the tool's source."""
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
            out.setdefault(node.func.id, set()).update(k.arg for k in node.keywords)
    return out


def _base_members(source: str) -> set:
    tree = ast.parse(source)
    base = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BaseAnchorOptimizer")
    return {n.name for n in base.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("__")}


@pytest.mark.integration
@pytest.mark.parametrize("package", ["mmyolo", "mmdet"])
def test_accepts_what_the_installed_tool_passes(package):
    source = _tool_source(package)
    calls = _calls(source, {"YOLOKMeansAnchorOptimizer", "YOLOV5KMeansAnchorOptimizer", "YOLODEAnchorOptimizer"})
    assert calls, f"{package}'s optimize_anchors.py builds no optimizer?"
    sig = inspect.signature(FastAnchorOptimizer)
    for cls, keywords in calls.items():
        missing = keywords - set(sig.parameters)
        assert not missing, f"{package} passes {sorted(missing)} to {cls}"
    # and it has the base class's methods
    assert _base_members(source) - {"get_zero_center_bbox_tensor"} <= set(dir(FastAnchorOptimizer))


@needs_coco
@pytest.mark.integration
def test_boxes_resized_as_mmyolo(tmp_path):
    ds = _coco_dataset()
    opt = FastAnchorOptimizer(
        dataset=ds,
        input_shape=[640, 480],
        num_anchor_per_level=[3, 3, 3],
        logger=logging.getLogger("test"),
        out_dir=None,
        iters=10,
    )
    wh, shapes = [], []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        for inst in info["instances"]:
            x1, y1, x2, y2 = inst["bbox"]
            if x2 > x1 and y2 > y1:
                wh.append([x2 - x1, y2 - y1])
                shapes.append([info["width"], info["height"]])
    wh, shapes = np.array(wh), np.array(shapes, dtype=np.float64)
    # mmyolo: bbox_whs / (img_shapes.max(1, keepdims=True) / [input_shape])
    np.testing.assert_allclose(opt.bbox_whs, wh / (shapes.max(1, keepdims=True) / np.array([[640, 480]])))


@needs_coco
@pytest.mark.integration
def test_optimize_writes_a_result_read_anchors_reads(tmp_path):
    ds = _coco_dataset()
    out = tmp_path / "work"
    opt = FastAnchorOptimizer(
        dataset=ds,
        input_shape=[640, 640],
        num_anchor_per_level=[3, 3, 3],
        logger=logging.getLogger("test"),
        out_dir=str(out),
        iters=300,
        seed=0,
    )
    anchors = opt.optimize()
    assert anchors.shape == (9, 2) and np.all(np.diff(anchors.prod(1)) >= 0)
    doc = json.loads((out / RESULT_FILE).read_text())
    assert [len(level) for level in doc] == [3, 3, 3]
    assert all(isinstance(v, int) for level in doc for pair in level for v in pair)
    back = read_anchors(str(out / RESULT_FILE))
    assert len(back.levels) == 3 and back.strides is None
    np.testing.assert_array_equal(back.anchors, np.round(anchors))
    again = FastAnchorOptimizer(
        dataset=ds, input_shape=[640, 640], num_anchor_per_level=[3, 3, 3], out_dir=None, iters=300, seed=0
    ).optimize()
    np.testing.assert_array_equal(anchors, again)
    # mmdetection's form: num_anchors, a flat list
    flat = FastAnchorOptimizer(
        dataset=ds, input_shape=[640, 640], num_anchors=9, out_dir=str(tmp_path / "flat"), algorithm="k-means", seed=0
    )
    flat.optimize()
    doc = json.loads((tmp_path / "flat" / RESULT_FILE).read_text())
    assert len(doc) == 9 and all(len(p) == 2 for p in doc)
    assert len(read_anchors(str(tmp_path / "flat" / RESULT_FILE)).levels) == 1


def test_rejects_bad_arguments():
    class One:
        def __len__(self):
            return 1

        def get_data_info(self, i):
            return {"width": 100, "height": 50, "instances": [{"bbox": [0, 0, 10, 20]}, {"bbox": [5, 5, 5, 9]}]}

    with pytest.raises(ValueError, match="algorithm must be one of"):
        FastAnchorOptimizer(One(), [640, 640], [1], algorithm="DE")
    with pytest.raises(TypeError, match="num_anchor_per_level"):
        FastAnchorOptimizer(One(), [640, 640])
    with pytest.raises(ValueError, match="input_shape"):
        FastAnchorOptimizer(One(), [640], [1])
    opt = FastAnchorOptimizer(One(), [200, 200], [1], iters=5)
    np.testing.assert_allclose(opt.bbox_whs, [[20.0, 40.0]])  # the zero-width box is left out
    with pytest.raises(ValueError, match="expected 1 anchors"):
        opt.save_result(np.ones((2, 2)))


def test_read_anchors_rejects_malformed_result(tmp_path):
    bad = tmp_path / RESULT_FILE
    bad.write_text("[[[10, 13], [16]], [[30, 61]]]")
    with pytest.raises(ValueError, match="level 0 must be a list of"):
        read_anchors(str(bad))
    bad.write_text("[]")
    with pytest.raises(ValueError, match="empty"):
        read_anchors(str(bad))
