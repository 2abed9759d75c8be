"""fastanchor.torch.torchvision against the installed torchvision: real detection models, real
forward/backward, the anchors' gradient checked by finite differences through the box coder."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from torchvision.models.detection import (  # noqa: E402
    fasterrcnn_mobilenet_v3_large_320_fpn,
    retinanet_resnet50_fpn,
    ssdlite320_mobilenet_v3_large,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402

from fastanchor.export import read_anchors  # noqa: E402
from fastanchor.torch import ShiftFreeNorm, WarmupSchedule  # noqa: E402
from fastanchor.torch.torchvision import (  # noqa: E402
    LearnableAnchorGenerator,
    LearnableDefaultBoxGenerator,
    learn_anchors,
)

pytestmark = pytest.mark.torch

HARD = WarmupSchedule.off()  # the detector's own loss alone reaches the anchors


def _data(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, 128, 160, generator=g, dtype=dtype), torch.rand(3, 144, 128, generator=g, dtype=dtype)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 80.0, 90.0], [50.0, 40.0, 120.0, 120.0]], dtype=dtype),
            "labels": torch.tensor([1, 2]),
        },
        {
            "boxes": torch.tensor([[5.0, 5.0, 60.0, 40.0], [30.0, 60.0, 90.0, 140.0]], dtype=dtype),
            "labels": torch.tensor([1, 1]),
        },
    ]
    return imgs, targets


def _frcnn(**kw):
    torch.manual_seed(0)
    return fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=160, **kw
    )


def _ssd():
    torch.manual_seed(0)
    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)


def _retina():
    torch.manual_seed(0)
    return retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=160)


def _features(sizes, dtype=torch.float32):
    images = ImageList(torch.zeros(2, 3, 128, 160, dtype=dtype), [(128, 160), (120, 150)])
    return images, [torch.zeros(2, 8, h, w, dtype=dtype) for h, w in sizes]


@pytest.mark.parametrize(
    "generator",
    [
        AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3),
        AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3),
    ],
)
def test_anchor_generator_starts_identical(generator):
    images, feats = _features([(16, 20), (8, 10), (4, 5)])
    expected = generator(images, feats)
    got = LearnableAnchorGenerator(generator, schedule=HARD)(images, feats)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-4)
        assert g.requires_grad


def test_default_box_generator_starts_identical():
    generator = DefaultBoxGenerator([[2, 3], [2, 3], [2]], scales=[0.1, 0.3, 0.6, 0.9])
    images, feats = _features([(10, 10), (5, 5), (3, 3)])
    expected = generator(images, feats)
    got = LearnableDefaultBoxGenerator(generator, schedule=HARD)(images, feats)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-4)


def _loss_and_grad(model, gen, keys, dtype):
    imgs, targets = _data(dtype)
    torch.manual_seed(1)  # Faster R-CNN samples anchors and proposals at random: same draw every call
    losses = model(imgs, targets)
    loss = sum(losses[k] for k in keys)
    gen.learned.log_wh.grad = None
    loss.backward()
    return float(loss.detach()), gen.learned.log_wh.grad.clone()


def _loss(model, keys, dtype):
    imgs, targets = _data(dtype)
    torch.manual_seed(1)
    with torch.no_grad():
        losses = model(imgs, targets)
    return float(sum(losses[k] for k in keys))


def _finite_difference(model, gen, keys, dtype, entries, eps=1e-6):
    out = []
    for i, j in entries:
        with torch.no_grad():
            gen.learned.log_wh[i, j] += eps
        up = _loss(model, keys, dtype)
        with torch.no_grad():
            gen.learned.log_wh[i, j] -= 2 * eps
        down = _loss(model, keys, dtype)
        with torch.no_grad():
            gen.learned.log_wh[i, j] += eps
        out.append((up - down) / (2 * eps))
    return np.array(out)


class _FrozenMatcher:
    """Records a model's ground-truth-to-anchor matches, then replays them: finite differences then see
    the loss's smooth dependence on the anchors, not the matching's jumps (IoU ties and thresholds)."""

    def __init__(self, matcher):
        self.matcher, self.calls, self.replay, self.next = matcher, [], False, 0

    def __call__(self, quality):
        if not self.replay:
            self.calls.append(self.matcher(quality))
            return self.calls[-1]
        out = self.calls[self.next % len(self.calls)]
        self.next += 1
        return out.clone()

    def __getattr__(self, name):  # BELOW_LOW_THRESHOLD and the like
        return getattr(self.matcher, name)


def _check_fd(model, gen, keys, count=6):
    """Autograd's gradient on the anchors against finite differences, on the entries where it is largest
    (anchors that match no ground truth in these small images get none), with the matching frozen."""
    owner = model.rpn if hasattr(model, "rpn") else model
    frozen = owner.proposal_matcher = _FrozenMatcher(owner.proposal_matcher)
    _, grad = _loss_and_grad(model, gen, keys, torch.float64)
    frozen.replay = True
    flat = grad.abs().flatten()
    assert float(flat.max()) > 0, "no gradient reached the anchors"
    entries = [divmod(int(k), 2) for k in flat.argsort(descending=True)[:count]]
    picked = np.array([float(grad[i, j]) for i, j in entries])
    np.testing.assert_allclose(
        picked,
        _finite_difference(model, gen, keys, torch.float64, entries),
        rtol=1e-4,
        atol=1e-7 * np.abs(picked).max(),
    )
    return grad


def test_faster_rcnn_rpn_box_loss_gradient_reaches_the_anchors():
    model = _frcnn().double().train()
    gen = learn_anchors(model, schedule=HARD, dtype=torch.float64)
    assert model.rpn.anchor_generator is gen
    grad = _check_fd(model, gen, ["loss_rpn_box_reg"])
    # the whole loss gives the anchors that same gradient: the proposals are detached, so the second
    # stage and the objectness pull nothing
    _, total = _loss_and_grad(
        model, gen, ["loss_rpn_box_reg", "loss_objectness", "loss_box_reg", "loss_classifier"], torch.float64
    )
    torch.testing.assert_close(total, grad, rtol=1e-12, atol=1e-15)


def test_faster_rcnn_without_the_detach_hook_the_second_stage_pulls_the_anchors():
    model = _frcnn().double().train()
    gen = learn_anchors(model, schedule=HARD, detach_proposals=False, dtype=torch.float64)
    _, rpn_only = _loss_and_grad(model, gen, ["loss_rpn_box_reg"], torch.float64)
    _, with_roi = _loss_and_grad(model, gen, ["loss_rpn_box_reg", "loss_box_reg"], torch.float64)
    assert not torch.allclose(rpn_only, with_roi)


def test_ssd_box_loss_gradient_reaches_the_default_boxes():
    model = _ssd().double().train()
    gen = learn_anchors(model, schedule=HARD, dtype=torch.float64)
    assert isinstance(gen, LearnableDefaultBoxGenerator) and model.anchor_generator is gen
    _check_fd(model, gen, ["bbox_regression"])


def test_retinanet_box_loss_gradient_reaches_the_anchors():
    model = _retina().double().train()
    gen = learn_anchors(model, schedule=HARD, dtype=torch.float64)
    _check_fd(model, gen, ["bbox_regression"], count=4)


def test_warmup_terms_use_the_resized_targets_and_training_moves_the_anchors(tmp_path):
    model = _frcnn().train()
    sched = WarmupSchedule(soft_steps=2, handover_steps=2, cluster_steps=4)
    gen = learn_anchors(model, schedule=sched)
    imgs, targets = _data()
    model(imgs, targets)
    # GeneralizedRCNNTransform resizes 128x160 to 128x160 (scale 1) and 144x128 to 144x128 capped at 160...
    scales = [min(128 / min(i.shape[-2:]), 160 / max(i.shape[-2:])) for i in imgs]
    expected = torch.cat([(t["boxes"][:, 2:] - t["boxes"][:, :2]) * s for t, s in zip(targets, scales)])
    torch.testing.assert_close(gen._gt_wh, expected, rtol=1e-5, atol=1e-4)
    others = [p for n, p in model.named_parameters() if not n.endswith("log_wh")]
    opt = torch.optim.SGD([{"params": others}, {"params": gen.parameters(), "weight_decay": 0.0}], lr=0.01)
    start = gen.numpy()
    for _ in range(3):
        opt.zero_grad()
        losses = model(imgs, targets)
        (sum(losses.values()) + gen.warmup_loss()).backward()
        opt.step()
        gen.advance()
    assert not np.allclose(gen.numpy(), start)
    model.eval()
    with torch.no_grad():
        model(imgs)
    assert gen._gt_wh is None
    gen.export(str(tmp_path / "a.json"), strides=(8, 16, 32))
    back = read_anchors(str(tmp_path / "a.json"))
    assert [len(level) for level in back.levels] == gen.counts


def _irregular_data():
    """Two images whose boxes' centres are far from any midpoint between anchor locations."""
    imgs, _ = _data()
    targets = [
        {"boxes": torch.tensor([[11.3, 21.7, 83.1, 90.9], [47.9, 38.2, 121.4, 118.6]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[6.1, 4.4, 61.3, 41.9], [29.2, 58.8, 92.7, 141.3]]), "labels": torch.tensor([1, 1])},
    ]
    return imgs, targets


@pytest.mark.parametrize("make", [_frcnn, _retina, _ssd])
def test_offsets_are_the_heads_predictions_at_the_nearest_anchor(make):
    """For every ground truth and every anchor shape, the recorded offset is log(decoded / anchor) of
    torchvision's own box coder at the anchor of that shape whose centre is nearest the box centre."""
    model = make().train()
    gen = learn_anchors(model)
    owner = model.rpn if hasattr(model, "rpn") else model
    seen = {}
    gen.register_forward_hook(lambda m, args, out: seen.update(anchors=out, feats=args[1]))
    owner.head.register_forward_hook(lambda m, args, out: seen.update(head=out))
    seen_images = {}
    model.transform.register_forward_hook(lambda m, args, out: seen_images.update(images=out[0], targets=out[1]))
    imgs, targets = _irregular_data()
    model(imgs, targets)
    delta = gen.offsets()
    assert delta is not None and not delta.requires_grad
    out = seen["head"]
    if isinstance(out, dict):
        reg = out["bbox_regression"].detach()
    else:
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        reg = concat_box_prediction_layers([o.detach() for o in out[0]], [r.detach() for r in out[1]])[1]
        reg = reg.view(len(imgs), -1, 4)
    sizes = [f.shape[-2] * f.shape[-1] for f in seen["feats"]]
    levels = gen.levels()
    if isinstance(gen, LearnableDefaultBoxGenerator):  # SSD's sizes are fractions of the image
        h, w = seen_images["images"].tensors.shape[-2:]
        levels = [level * np.array([w, h]) for level in levels]
    expected = []
    for b, t in enumerate(seen_images["targets"]):
        anchors = seen["anchors"][b].detach().double()
        decoded = owner.box_coder.decode_single(reg[b].double(), anchors)
        a_wh, a_c = anchors[:, 2:] - anchors[:, :2], (anchors[:, 2:] + anchors[:, :2]) / 2
        d_wh = decoded[:, 2:] - decoded[:, :2]
        for box in t["boxes"].double():
            centre = (box[:2] + box[2:]) / 2
            row, start = [], 0
            for size, shapes in zip(sizes, levels):
                block = slice(start, start + size * len(shapes))
                for shape in shapes:
                    # the anchors of this shape on this level (torchvision may clip SSD's: nearest in log space)
                    dist = (a_wh[block].log() - torch.tensor(shape).log()).abs().sum(1)
                    same = (dist <= dist.min() + 1e-6).nonzero()[:, 0] + start
                    pick = same[(a_c[same] - centre).pow(2).sum(1).argmin()]
                    row.append((d_wh[pick] / a_wh[pick]).log().tolist())
                start += size * len(shapes)
            expected.append(row)
    np.testing.assert_allclose(delta.numpy(), np.array(expected), rtol=1e-4, atol=1e-5)
    assert float(delta.abs().max()) > 1e-3  # a real head's outputs, not zeros


@pytest.mark.parametrize("make", [_frcnn, _ssd])
def test_warmup_gradient_is_the_closed_form_with_the_predicted_offsets(make):
    model = make().double().train()
    sched = WarmupSchedule(soft_steps=2, handover_steps=2, temperature=0.7, cluster_weight=0.5, cluster_steps=4)
    gen = learn_anchors(model, schedule=sched, dtype=torch.float64)
    imgs, targets = _irregular_data()
    model([i.double() for i in imgs], [dict(t, boxes=t["boxes"].double()) for t in targets])
    delta = gen.offsets().numpy()
    anchors, wh = gen.numpy(), gen._gt_wh.numpy()
    gen.warmup_loss(weight=2.0).backward()
    soft = ref.log_soft_assignment(anchors, wh, 0.7)
    expected = ref.learned_anchor_gradient(anchors, wh, soft, delta, cluster_lambda=0.5)
    np.testing.assert_allclose(gen.learned.log_wh.grad.numpy(), 2.0 * expected, rtol=1e-9, atol=1e-12)
    # without the offsets (zero), the gradient would differ: they matter
    assert not np.allclose(expected, ref.learned_anchor_gradient(anchors, wh, soft, cluster_lambda=0.5))


def test_ssd_warmup_targets_are_relative():
    model = _ssd().train()
    gen = learn_anchors(model)
    imgs, targets = _data()
    model(imgs, targets)
    assert float(gen._gt_wh.max()) <= 1.0
    assert float(gen.warmup_loss().detach()) > 0


def test_errors():
    with pytest.raises(ValueError, match="no torchvision AnchorGenerator"):
        learn_anchors(torch.nn.Linear(2, 2))
    model = _frcnn()
    learn_anchors(model)
    with pytest.raises(ValueError, match="learnable already"):
        learn_anchors(model)
    with pytest.raises(ValueError, match="initial anchors were given"):
        learn_anchors(_frcnn(), init=np.ones((4, 2)))
    with pytest.raises(TypeError, match="AnchorGenerator"):
        LearnableAnchorGenerator(DefaultBoxGenerator([[2]]))


@pytest.mark.parametrize("make", [_frcnn, _retina, _ssd])
def test_shift_free_norm_on_the_predicted_offsets(make):
    model = make().train()
    gen = learn_anchors(model, shift_free_norm=True)
    norms = [m for m in model.modules() if isinstance(m, ShiftFreeNorm)]
    assert norms and all(any(p is n.weight for p in model.parameters()) for n in norms)
    for n in norms:
        n.eps = 1e-12  # the raw outputs' variance is tiny at initialization: unit variance then exactly
    imgs, targets = _irregular_data()
    losses = model(imgs, targets)
    # the recorded regression output (all levels): each anchor's D_w, D_h have batch mean 0, variance ~1
    # over all positions (Faster R-CNN and RetinaNet share the head over the levels; SSD, per level)
    reg = gen._reg
    start = 0
    blocks = []
    if isinstance(gen, LearnableDefaultBoxGenerator):
        for (h, w), a in zip(gen._grid[0], gen.counts):
            blocks.append(reg[:, start : start + h * w * a].reshape(reg.shape[0], -1, a, 4))
            start += h * w * a
    else:
        blocks.append(reg.reshape(reg.shape[0], -1, gen.counts[0], 4))
    for blk in blocks:
        d = blk[..., 2:4].reshape(-1, blk.shape[2], 2)
        torch.testing.assert_close(d.mean(0), torch.zeros_like(d.mean(0)), atol=1e-4, rtol=0)
        torch.testing.assert_close(d.var(0, unbiased=False), torch.ones_like(d[0]), atol=1e-3, rtol=0)
    loss = sum(losses.values()) + gen.warmup_loss()
    loss.backward()
    # every norm is in the graph; SSD's levels whose default boxes match no box here get a zero gradient
    assert all(n.weight.grad is not None for n in norms) and any(float(n.weight.grad.abs().sum()) > 0 for n in norms)
    assert float(gen.learned.log_wh.grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        model(imgs)


def test_train_offsets_lets_the_soft_term_train_the_head():
    for train in (False, True):
        model = _frcnn().train()
        gen = learn_anchors(model, train_offsets=train)
        imgs, targets = _irregular_data()
        model(imgs, targets)
        assert gen.offsets().requires_grad == train
        gen.warmup_loss().backward()
        got = model.rpn.head.bbox_pred.weight.grad
        assert (got is not None and float(got.abs().sum()) > 0) == train
        assert float(gen.learned.log_wh.grad.abs().sum()) > 0
