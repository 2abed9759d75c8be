"""fastanchor.torch.yolov5 against the installed yolov5 package: real models, real forward/backward."""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
with warnings.catch_warnings():  # yolov5 7.0 imports pkg_resources, deprecated in recent setuptools
    warnings.simplefilter("ignore")
    yolov5 = pytest.importorskip("yolov5")
    from yolov5.models.yolo import Model
    from yolov5.utils.loss import ComputeLoss

import reference as ref  # noqa: E402
import yaml  # noqa: E402

from fastanchor.export import read_anchors  # noqa: E402
from fastanchor.torch import WarmupSchedule  # noqa: E402
from fastanchor.torch.yolov5 import YOLOv5Anchors, find_detect  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

CFG = Path(yolov5.__file__).parent / "models" / "yolov5n.yaml"
HYP = yaml.safe_load((Path(yolov5.__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
TARGETS = torch.tensor(
    [
        [0, 1, 0.50, 0.50, 0.30, 0.40],
        [0, 0, 0.20, 0.30, 0.08, 0.10],
        [1, 0, 0.30, 0.60, 0.10, 0.25],
        [1, 1, 0.70, 0.40, 0.55, 0.35],
    ]
)


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    m = Model(str(CFG), nc=2).to(dtype)
    m.hyp = dict(HYP)
    return m


def test_starts_from_the_model_anchors_and_splits_per_level():
    model = _model()
    ad = YOLOv5Anchors(model)
    det = find_detect(model)
    np.testing.assert_allclose(
        ad.pixels().reshape(3, 3, 2), (det.anchors * det.stride.view(-1, 1, 1)).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(ad.levels()[0], [[10, 13], [16, 30], [33, 23]], rtol=1e-6)
    assert ad.anchors.strides == (8.0, 16.0, 32.0)


def test_inference_uses_the_current_anchors():
    model = _model().eval()
    ad = YOLOv5Anchors(model)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)[0]
        ad.anchors.log_wh += torch.log(torch.tensor([2.0, 0.5]))
        after = model(x)[0]
    det = find_detect(model)
    np.testing.assert_allclose(det.anchor_grid[0][0, :, 0, 0].numpy(), ad.levels()[0], rtol=1e-5)
    # wh outputs scale with the anchors: x2 in width, x0.5 in height; xy, objectness, classes unchanged
    torch.testing.assert_close(after[..., 2], before[..., 2] * 2, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(after[..., 3], before[..., 3] * 0.5, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(after[..., [0, 1, 4, 5, 6]], before[..., [0, 1, 4, 5, 6]])


def _decoded_offsets(model, preds, targets, anchors_px):
    """(N, 9, 2) log-space offsets D = log(w_pred / a_w) at each target's cell (floor of the centre
    times the grid size, as YOLOv5's build_targets), for every anchor, from YOLOv5's own decoding of the
    raw outputs ``preds`` (Detect's inference branch, fed the same raw tensors)."""
    det = find_detect(model)
    out = []
    for row in targets.tolist():
        b, x, y = int(row[0]), row[2], row[3]
        per = []
        for level, p in enumerate(preds):
            ny, nx = p.shape[2:4]
            gi, gj = min(int(x * nx), nx - 1), min(int(y * ny), ny - 1)
            grid, anchor_grid = det._make_grid(nx, ny, level)
            xy, wh, _ = p[b : b + 1].sigmoid().split((2, 2, det.no - 4), 4)
            wh = (wh * 2) ** 2 * anchor_grid  # Detect.forward's decoding, in pixels
            for a in range(det.na):
                per.append(np.log(wh[0, a, gj, gi].numpy() / anchors_px[level * det.na + a]))
        out.append(per)
    return np.array(out)


def test_target_offsets_are_yolov5s_own_predictions_at_the_target_cells():
    model = _model().train()
    ad = YOLOv5Anchors(model)
    with torch.no_grad():
        ad.anchors.log_wh += torch.tensor([0.2, -0.1])  # anchors other than the yaml's, synced into Detect
        preds = model(torch.rand(2, 3, 96, 128))
    targets = torch.cat([TARGETS, torch.tensor([[1, 0, 0.999, 0.0, 0.2, 0.2], [0, 0, 0.5, 0.5, 0.0, 0.3]])])
    wh, delta = ad.target_offsets(preds, targets)
    assert delta.shape == (5, 9, 2) and not delta.requires_grad  # the zero-width row is dropped
    torch.testing.assert_close(wh, ad.target_wh(targets, (96, 128)))
    expected = _decoded_offsets(model, preds, targets[:5], ad.pixels())
    np.testing.assert_allclose(delta.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected).max() > 0.01
    with pytest.raises(ValueError, match="prediction levels"):
        ad.target_offsets(preds[:2], targets)


@pytest.fixture
def float64_default():
    """YOLOv5's ComputeLoss accumulates in torch.zeros(1) (the default dtype): float64 for finite differences."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("step", [0, 3, 10])
def test_loss_gradient_reaches_the_anchors_and_matches_finite_differences(step, float64_default):
    """Step 0: soft warm-up only; 3: hand-over (both paths); 10: YOLOv5's own hard loss only."""
    model = _model(torch.float64).train()
    T = TARGETS.double()
    sched = WarmupSchedule(soft_steps=2, handover_steps=2, cluster_weight=0.5, cluster_steps=6)
    ad = YOLOv5Anchors(model, schedule=sched, dtype=torch.float64)
    ad.advance(step)
    raw = ComputeLoss(model)
    loss_fn = ad.wrap_loss(raw)
    preds = [p.detach() for p in model(torch.rand(2, 3, 128, 128))]
    loss, items = loss_fn(preds, T)
    assert items.shape == (3,)
    loss.backward()
    grad = ad.anchors.log_wh.grad.clone()
    assert float(grad.abs().sum()) > 0
    s = sched.soft_weight(step)

    # the warm-up terms' gradient: the closed form with the assignments held constant (numpy), the soft
    # term with the network's own offsets at each target's cell (checked against YOLOv5's decoding below)
    anchors, wh = ad.pixels(), ad.target_wh(T, (128, 128)).numpy()
    delta = _decoded_offsets(model, preds, T, ad.pixels())
    assert np.abs(delta).max() > 0.01  # a real network's offsets, not zeros
    soft = ref.log_soft_assignment(anchors, wh, sched.temperature)
    hard = np.eye(9)[np.argmin(ref.log_sq_dist(anchors, wh), 1)]
    blend, lam = s * soft + (1 - s) * hard, sched.cluster_lambda(step)
    clustering = ref.learned_anchor_gradient(anchors, wh, blend, cluster_lambda=lam) - ref.learned_anchor_gradient(
        anchors, wh, blend
    )
    warm = s * ref.learned_anchor_gradient(anchors, wh, soft, delta) + clustering
    warm *= ad.warmup_weight * 2  # added as warmup_weight * batch_size * terms

    def own():  # YOLOv5's own box loss (its objectness target, the IoU, is detached by design), buffer synced
        ad.sync()
        return float(raw(preds, T)[1][0]) * 2

    eps = 1e-6
    for i, j in [(0, 0), (1, 1), (4, 0), (8, 1)]:
        with torch.no_grad():
            ad.anchors.log_wh[i, j] += eps
            up = own()
            ad.anchors.log_wh[i, j] -= 2 * eps
            down = own()
            ad.anchors.log_wh[i, j] += eps
        # the schedule hands the detector's own (hard) gradient over with weight 1 - s. Not exact: YOLOv5's
        # CIoU computes its aspect term's alpha under no_grad, which finite differences do see (~1% here)
        expected = (1 - s) * (up - down) / (2 * eps) + warm[i, j]
        assert expected == pytest.approx(float(grad[i, j]), rel=2e-2, abs=2e-2 * float(grad.abs().max()))
    if step == 0:  # the soft warm-up alone: exactly the closed form
        np.testing.assert_allclose(grad.numpy(), warm, rtol=1e-9, atol=1e-12)
    if step == 10:  # warm-ups over: exactly YOLOv5's loss
        assert s == 0 and float(loss) == pytest.approx(float(raw(preds, T)[0]), rel=1e-12)


def test_training_steps_move_the_anchors_and_keep_the_buffer_in_sync():
    model = _model().train()
    ad = YOLOv5Anchors(model, schedule=WarmupSchedule(soft_steps=2, handover_steps=2, cluster_steps=4))
    loss_fn = ad.wrap_loss(ComputeLoss(model))
    opt = torch.optim.SGD(
        [{"params": model.parameters()}, {"params": ad.parameters(), "weight_decay": 0.0}], lr=0.01, momentum=0.9
    )
    start = ad.pixels()
    x = torch.rand(2, 3, 96, 96)
    for _ in range(6):
        opt.zero_grad()
        loss, _ = loss_fn(model(x), TARGETS)
        loss.backward()
        opt.step()
        ad.advance()
    assert not np.allclose(ad.pixels(), start)
    model(x)
    det = find_detect(model)
    np.testing.assert_allclose((det.anchors * det.stride.view(-1, 1, 1)).reshape(-1, 2).numpy(), ad.pixels(), rtol=1e-5)


def test_checkpoints_and_ema_copies_carry_the_learned_anchors():
    model = _model()
    ad = YOLOv5Anchors(model)
    with torch.no_grad():
        ad.anchors.log_wh += 0.1
    model(torch.rand(1, 3, 64, 64))
    ema = copy.deepcopy(model)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for m in (ema, loaded):
        det = find_detect(m)
        np.testing.assert_allclose(
            (det.anchors * det.stride.view(-1, 1, 1)).reshape(-1, 2).numpy(), ad.pixels(), rtol=1e-5
        )
    loaded(torch.rand(1, 3, 64, 64))  # the loaded hook is inert, the model still runs


def test_write_yaml_into_the_model_template(tmp_path):
    model = _model()
    ad = YOLOv5Anchors(model)
    with torch.no_grad():
        ad.anchors.log_wh *= 1.05
    out = tmp_path / "learned.yaml"
    ad.write_yaml(str(out), template=str(CFG))
    back = read_anchors(str(out))
    np.testing.assert_array_equal(back.anchors, np.maximum(np.round(ad.pixels()), 1))
    text, original = out.read_text(), CFG.read_text()
    assert text.split("anchors:")[0].strip().endswith(original.split("anchors:")[0].strip().splitlines()[-1])
    assert "backbone:" in text and text.split("backbone:")[1] == original.split("backbone:")[1]
    rebuilt = Model(str(out), nc=2)
    det = find_detect(rebuilt)
    np.testing.assert_allclose(
        (det.anchors * det.stride.view(-1, 1, 1)).reshape(-1, 2).numpy(), np.round(ad.pixels()), rtol=1e-6
    )
    ad.update_model_yaml(model)
    assert model.yaml["anchors"][0] == [int(v) for v in np.round(ad.levels()[0]).reshape(-1)]


def test_bad_inputs():
    model = _model()
    with pytest.raises(ValueError, match="9 initial anchors|initial anchors were given"):
        YOLOv5Anchors(model, init=np.ones((6, 2)) * 10)
    with pytest.raises(ValueError, match="no YOLOv5 Detect head"):
        YOLOv5Anchors(torch.nn.Linear(2, 2))
    ad = YOLOv5Anchors(model)
    with pytest.raises(TypeError, match="ComputeLoss"):
        ad.wrap_loss(lambda p, t: 0)
    with pytest.raises(ValueError, match="targets must be"):
        ad.target_wh(torch.zeros(3, 4), (64, 64))


def test_shift_free_norm_on_the_detect_outputs_trains_and_saves():
    model = _model().train()
    det = find_detect(model)
    raw_convs = list(det.m)
    ad = YOLOv5Anchors(model, shift_free_norm=True, schedule=WarmupSchedule(soft_steps=2, cluster_steps=2))
    norms = YOLOv5Anchors.shift_free_norms(model)
    assert len(norms) == 3 and all(n.num_features == 2 * det.na for n in norms)
    assert all(any(p is n.weight for p in model.parameters()) for n in norms)
    assert det.m[0].bias is raw_convs[0].bias  # yolov5's code that reads the conv's bias still works
    for n in norms:
        n.eps = 1e-12  # the raw outputs' variance is small at initialization: unit variance then exactly
    x = torch.rand(2, 3, 96, 96)
    raw_out = {}
    captured = [raw_convs[i].register_forward_hook(lambda m, a, out, i=i: raw_out.update({i: out})) for i in range(3)]
    preds = model(x)
    for h in captured:
        h.remove()
    for i, p in enumerate(preds):  # (bs, na, ny, nx, no)
        wh = p[..., 2:4].detach()
        mean = wh.mean(dim=(0, 2, 3))
        var = wh.var(dim=(0, 2, 3), unbiased=False)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
        torch.testing.assert_close(var, torch.ones_like(var), atol=1e-3, rtol=0)
        raw = raw_out[i].detach().view(p.shape[0], det.na, det.no, *p.shape[2:4]).permute(0, 1, 3, 4, 2)
        torch.testing.assert_close(p[..., [0, 1, 4, 5, 6]].detach(), raw[..., [0, 1, 4, 5, 6]])
    loss, _ = ad.wrap_loss(ComputeLoss(model))(preds, TARGETS)
    loss.backward()
    assert all(float(n.weight.grad.abs().sum()) > 0 for n in norms)
    assert float(ad.anchors.log_wh.grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        model(x)  # running statistics in evaluation
    assert float(norms[0].running_mean.abs().sum()) > 0
    buf = io.BytesIO()
    torch.save(copy.deepcopy(model), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0])
    YOLOv5Anchors(model, shift_free_norm=True)  # a second adapter does not stack a second norm
    assert all(not isinstance(m.inner, type(m)) for m in find_detect(model).m)


def test_train_offsets_lets_the_soft_term_train_the_detect_outputs():
    model = _model().train()
    det = find_detect(model)
    x = torch.rand(2, 3, 96, 96)
    for train in (False, True):
        ad = YOLOv5Anchors(model, train_offsets=train)
        model.zero_grad()
        preds = model(x)
        wh, delta = ad.target_offsets(preds, TARGETS, detach=not train)
        assert delta.requires_grad == train
        ad.anchors.warmup_loss(wh, delta=delta).backward()
        got = det.m[0].weight.grad
        assert (got is not None and float(got.abs().sum()) > 0) == train
        ad.remove()
