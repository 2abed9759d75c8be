"""fastanchor inside the installed yolov5 package: kmean_anchors, patch(), a real training start."""

from __future__ import annotations

import csv
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR

pytestmark = pytest.mark.integration

COCO128 = DATA_DIR / "raw" / "coco128_yolo"
needs_coco128 = pytest.mark.skipif(not COCO128.is_dir(), reason=f"real data folder {COCO128} is absent")


def _import_yolov5():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # yolov5 7.0 imports pkg_resources (a DeprecationWarning/UserWarning)
        pytest.importorskip("torch")
        pytest.importorskip("yolov5")
        from yolov5.utils import autoanchor

    return autoanchor


def make_dataset(root: Path, n_images: int = 16) -> Path:
    """A YOLO dataset of blank images of coco128's real sizes, with coco128's real labels."""
    cv2 = pytest.importorskip("cv2")
    sizes = {}
    with open(COCO128 / "image_sizes.csv", newline="") as f:
        for row in csv.DictReader(f):
            sizes[row["image"]] = (int(row["width"]), int(row["height"]))
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for label in sorted((COCO128 / "labels" / "train2017").glob("*.txt"))[:n_images]:
        w, h = sizes[f"train2017/{label.stem}.jpg"]
        assert cv2.imwrite(str(root / "images" / "train" / f"{label.stem}.jpg"), np.zeros((h, w, 3), np.uint8))
        shutil.copy(label, root / "labels" / "train" / label.name)
    data = root / "data.yaml"
    names = ", ".join(f"'c{i}'" for i in range(80))
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnc: 80\nnames: [{names}]\n")
    return data


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def host_log():
    """Every message YOLOv5's LOGGER receives (it does not propagate to the root logger)."""
    autoanchor = _import_yolov5()
    handler = _Records()
    autoanchor.LOGGER.addHandler(handler)
    yield handler
    autoanchor.LOGGER.removeHandler(handler)


@pytest.fixture
def yolo_dataset(tmp_path):
    """YOLOv5's own LoadImagesAndLabels over a tiny real-label dataset."""
    _import_yolov5()
    from yolov5.utils.dataloaders import LoadImagesAndLabels

    make_dataset(tmp_path / "ds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LoadImagesAndLabels(str(tmp_path / "ds" / "images" / "train"), augment=True, rect=True)


def _yolov5_metric(k: np.ndarray, wh: np.ndarray, thr: float):
    r = wh[:, None] / k[None]
    x = np.minimum(r, 1 / r).min(2)
    best = x.max(1)
    return best, (best * (best > 1 / thr)).mean()


@needs_coco128
def test_boxes_follow_yolov5_letterbox(yolo_dataset):
    from fastanchor.integrations.yolov5 import dataset_wh

    wh = dataset_wh(yolo_dataset, 128)
    # YOLOv5's own expression in check_anchors / kmean_anchors
    shapes = 128 * yolo_dataset.shapes / yolo_dataset.shapes.max(1, keepdims=True)
    expected = np.concatenate([lab[:, 3:5] * s for s, lab in zip(shapes, yolo_dataset.labels)])
    np.testing.assert_allclose(wh, expected, rtol=1e-12)
    assert len(wh) == sum(len(lab) for lab in yolo_dataset.labels) > 0


@needs_coco128
def test_kmean_anchors_contract_and_logging(yolo_dataset, host_log):
    from fastanchor.integrations.yolov5 import dataset_wh, kmean_anchors

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)  # as YOLOv5's torch_utils does
        k = kmean_anchors(yolo_dataset, n=9, img_size=64, thr=4.0, gen=300, verbose=False, seed=0)
    assert k.dtype == np.float32 and k.shape == (9, 2)
    area = k.prod(1)
    assert np.all(np.diff(area) >= 0), "sorted small to large, as YOLOv5 returns them"
    # the small-box report reached YOLOv5's logger although UserWarning is ignored
    assert any("smaller than 3 pixels" in m for m in host_log.messages), host_log.messages
    assert any("fastanchor" in m and "best possible recall" in m for m in host_log.messages)
    # same seed, same anchors
    again = kmean_anchors(yolo_dataset, n=9, img_size=64, gen=300, verbose=False, seed=0)
    np.testing.assert_array_equal(k, again)
    # the fitness is YOLOv5's, on the boxes YOLOv5 fits (>= 2 px on a side)
    wh = dataset_wh(yolo_dataset, 64)
    wh = wh[(wh >= 2).any(1)]
    _, fit = _yolov5_metric(k.astype(np.float64), wh, 4.0)
    _, fit0 = _yolov5_metric(k.astype(np.float64) * 3.0, wh, 4.0)  # every anchor 3x too large
    assert fit > fit0
    assert fit > 0.5


@needs_coco128
def test_kmean_anchors_path_input(tmp_path):
    _import_yolov5()
    from fastanchor.integrations.yolov5 import kmean_anchors

    data = make_dataset(tmp_path / "ds", n_images=6)
    k = kmean_anchors(str(data), n=6, img_size=128, gen=50, verbose=False, seed=1)
    assert k.shape == (6, 2) and k.dtype == np.float32


def test_kmean_anchors_rejects_bad_input():
    from fastanchor.integrations.yolov5 import kmean_anchors

    class Empty:
        shapes = np.array([[640, 480]])
        labels = [np.zeros((0, 5), np.float32)]

    with pytest.raises(ValueError, match="no label"):
        kmean_anchors(Empty(), n=9, gen=0, verbose=False)
    with pytest.raises(TypeError, match="no .shapes"):
        kmean_anchors(object(), n=9, verbose=False)
    with pytest.raises(ValueError, match="n must be"):
        kmean_anchors(Empty(), n=0, verbose=False)

    class Mismatch:
        shapes = np.array([[640, 480]])
        labels = [np.zeros((0, 5)), np.zeros((0, 5))]

    with pytest.raises(ValueError, match="1 images but dataset.labels 2"):
        kmean_anchors(Mismatch(), verbose=False)


def test_few_distinct_boxes_fall_back_like_yolov5():
    from fastanchor.integrations.yolov5 import kmean_anchors

    class Two:
        shapes = np.array([[640, 640]])
        labels = [np.array([[0, 0.5, 0.5, 0.1, 0.2], [0, 0.3, 0.3, 0.1, 0.2]], np.float32)]

    k = kmean_anchors(
        Two(), n=3, img_size=640, gen=200, verbose=False, seed=0, logger=logging.getLogger("fastanchor.test")
    )
    assert k.shape == (3, 2)
    # the one distinct box (64 x 128) is matched by at least one anchor within thr
    best, _ = _yolov5_metric(k.astype(np.float64), np.array([[64.0, 128.0]]), 4.0)
    assert best[0] > 0.25


def test_patch_installs_and_restores():
    autoanchor = _import_yolov5()
    from fastanchor.integrations import yolov5 as fa

    original = autoanchor.kmean_anchors
    with fa.patch(seed=3) as p:
        assert autoanchor.kmean_anchors is not original
        assert autoanchor.kmean_anchors.fastanchor_patch is p
        assert "installed" in repr(p)
    assert autoanchor.kmean_anchors is original
    p = fa.patch()
    p.undo()
    p.undo()  # idempotent
    assert autoanchor.kmean_anchors is original
    with pytest.raises(TypeError, match="not a YOLOv5 autoanchor module"):
        fa.patch(module="json")


@needs_coco128
def test_check_anchors_replaces_model_anchors(yolo_dataset, host_log):
    autoanchor = _import_yolov5()
    import torch
    from yolov5.models.yolo import Model

    from fastanchor.integrations import yolov5 as fa

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Model(str(Path(autoanchor.__file__).parents[1] / "models" / "yolov5n.yaml"), ch=3, nc=80)
    det = model.model[-1]
    before = (det.anchors * det.stride.view(-1, 1, 1)).clone()
    calls = []
    with fa.patch(seed=0):
        ours = autoanchor.kmean_anchors

        def spy(*args, **kwargs):
            out = ours(*args, **kwargs)
            calls.append(out)
            return out

        autoanchor.kmean_anchors = spy
        with warnings.catch_warnings():
            # numpy 2 deprecates what YOLOv5's own metric does with our (and its own) numpy result
            warnings.simplefilter("ignore", DeprecationWarning)
            autoanchor.check_anchors(yolo_dataset, model, thr=4.0, imgsz=64)
    assert autoanchor.kmean_anchors is not spy and autoanchor.kmean_anchors is not ours
    assert len(calls) == 1, host_log.messages  # BPR of the default anchors at 64 px is far below 0.98
    assert any("Done ✅" in m for m in host_log.messages), host_log.messages
    after = (det.anchors * det.stride.view(-1, 1, 1)).reshape(-1, 2).numpy()
    assert not np.allclose(after, before.reshape(-1, 2).numpy())
    np.testing.assert_allclose(after, calls[0], rtol=1e-6)


@needs_coco128
def test_training_start_uses_fastanchor(tmp_path, monkeypatch, host_log):
    """yolov5's train.run for one epoch on a tiny dataset, with patch() installed."""
    autoanchor = _import_yolov5()
    mpl = pytest.importorskip("matplotlib")
    import torch

    # no network: YOLOv5 wants Arial.ttf in its config folder (any TrueType font passes its check)
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(Path(mpl.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", config / "Arial.ttf")
    monkeypatch.setattr("yolov5.utils.general.CONFIG_DIR", config)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # yolov5 7.0 reloads its own checkpoint with torch.load's pre-2.6 default (weights_only=False)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    data = make_dataset(tmp_path / "ds")
    from yolov5 import train

    seen = {}
    real_check = train.check_anchors

    def check_spy(dataset, model, **kwargs):
        seen["model"] = model
        return real_check(dataset, model=model, **kwargs)

    monkeypatch.setattr(train, "check_anchors", check_spy)
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the framework's own deprecation warnings under torch 2.14
        with __import__("fastanchor.integrations.yolov5", fromlist=["patch"]).patch(seed=0):
            ours = autoanchor.kmean_anchors

            def spy(*args, **kwargs):
                out = ours(*args, **kwargs)
                calls.append(out)
                return out

            monkeypatch.setattr(autoanchor, "kmean_anchors", spy)
            train.run(
                data=str(data),
                cfg="yolov5n.yaml",
                weights="",
                epochs=1,
                imgsz=64,
                batch_size=8,
                workers=0,
                device="cpu",
                project=str(tmp_path / "runs"),
                name="exp",
                exist_ok=True,
                noplots=True,
                seed=0,
            )
    assert len(calls) == 1, host_log.messages
    assert any("Done ✅" in m for m in host_log.messages), host_log.messages
    det = seen["model"].model[-1]
    anchors = (det.anchors * det.stride.view(-1, 1, 1)).reshape(-1, 2).numpy()
    # train.py rounds the anchors through float16 right after check_anchors ("pre-reduce anchor precision")
    np.testing.assert_allclose(anchors, calls[0], rtol=2**-10)
    last = tmp_path / "runs" / "exp" / "weights" / "last.pt"
    assert last.is_file()
    saved = torch.load(last, map_location="cpu", weights_only=False)["model"].model[-1]
    saved_anchors = (saved.anchors.float() * saved.stride.view(-1, 1, 1)).reshape(-1, 2).numpy()
    np.testing.assert_allclose(saved_anchors, calls[0], rtol=2**-9)
