"""fastanchor.torch's core: gradients against the closed form, the fixed point against the core's
kmeans_log, the schedule, the shift-free normalization, export and the optional import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from conftest import clean, load_real, needs_data, real_box_files
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
import fastanchor  # noqa: E402
from fastanchor.export import read_anchors  # noqa: E402
from fastanchor.torch import (  # noqa: E402
    LearnedAnchors,
    ShiftFreeNorm,
    WarmupSchedule,
    clustering_loss,
    hard_assignment,
    regression_loss,
    soft_assignment,
)

pytestmark = pytest.mark.torch

REPO = Path(__file__).resolve().parents[1]


@st.composite
def problems(draw):
    """Anchors (k, 2), boxes (N, 2), offsets (N, k, 2) and a temperature, all moderate in log space."""
    k = draw(st.integers(1, 6))
    n = draw(st.integers(1, 25))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    anchors = np.exp(rng.uniform(1.0, 5.0, (k, 2)))
    wh = np.exp(rng.uniform(0.5, 5.5, (n, 2)))
    delta = rng.normal(0.0, 0.5, (n, k, 2))
    temperature = draw(st.sampled_from([0.05, 0.3, 1.0, 4.0]))
    lam = draw(st.sampled_from([0.0, 0.5, 2.0]))
    return anchors, wh, delta, temperature, lam


def _autograd(anchors, wh, delta, assignment_fn, lam):
    la = torch.tensor(np.log(anchors), dtype=torch.float64, requires_grad=True)
    lg = torch.tensor(np.log(wh), dtype=torch.float64)
    d = assignment_fn(la, lg)
    loss = regression_loss(la, lg, d, torch.tensor(delta)) + lam * clustering_loss(la, lg, d)
    loss.backward()
    return la.grad.numpy(), d.numpy()


@given(problems())
def test_gradient_soft_assignment_equals_closed_form(problem):
    anchors, wh, delta, temperature, lam = problem
    grad, d = _autograd(anchors, wh, delta, lambda la, lg: soft_assignment(la, lg, temperature), lam)
    d_ref = ref.log_soft_assignment(anchors, wh, temperature)
    np.testing.assert_allclose(d, d_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        grad, ref.learned_anchor_gradient(anchors, wh, d_ref, delta, lam), rtol=1e-10, atol=1e-12
    )


@given(problems())
def test_gradient_hard_assignment_equals_closed_form(problem):
    anchors, wh, delta, _, lam = problem
    grad, d = _autograd(anchors, wh, delta, hard_assignment, lam)
    labels = np.argmin(ref.log_sq_dist(anchors, wh), axis=1)
    d_ref = np.eye(anchors.shape[0])[labels]
    np.testing.assert_array_equal(d, d_ref)
    np.testing.assert_allclose(
        grad, ref.learned_anchor_gradient(anchors, wh, d_ref, delta, lam), rtol=1e-10, atol=1e-12
    )


def _train_hard(wh, init, steps=3000, lr=0.5):
    """Offsets held at zero, hard assignment, full-batch SGD on the regression term."""
    anchors = LearnedAnchors(init, schedule=WarmupSchedule.off(), dtype=torch.float64)
    opt = torch.optim.SGD(anchors.parameters(), lr=lr)
    g = torch.tensor(wh)
    for _ in range(steps):
        opt.zero_grad()
        anchors.loss(g).backward()
        opt.step()
        anchors.advance()
    return anchors.numpy()


def _by_area(anchors):
    """Anchors in the core's order: area ascending, ties by width."""
    a = np.asarray(anchors, dtype=np.float64)
    return a[np.lexsort((a[:, 0], a[:, 0] * a[:, 1]))]


def test_hard_training_converges_to_the_core_kmeans_log():
    """Separated clusters: from the same start, training and the core's kmeans_log (Lloyd in log
    space) reach the same anchors within 1e-3 in log space."""
    rng = np.random.default_rng(0)
    centers = np.array([[2.0, 2.5], [3.0, 4.2], [4.0, 3.0], [5.0, 5.2], [3.5, 1.5]])
    wh = np.exp(np.concatenate([c + rng.normal(0, 0.25, (60, 2)) for c in centers]))
    init = wh[[3, 70, 130, 190, 250]] * 1.3
    expected = fastanchor.kmeans_log(wh, 5, init=init, n_init=1)
    assert expected.converged
    assert (np.abs(np.bincount(expected.labels, minlength=5) - 60) <= 3).all()
    learned = _train_hard(wh, init)
    np.testing.assert_allclose(np.log(_by_area(learned)), np.log(expected.anchors), atol=1e-3, rtol=0)


@needs_data
@pytest.mark.parametrize("name, size, k", [("raccoon", 416, 5), ("coco128", 640, 6)])
def test_hard_training_ends_at_a_kmeans_log_fixed_point_on_real_boxes(name, size, k):
    """Real boxes: the trained anchors are a fixed point of the core's kmeans_log (restarting Lloyd
    from them moves nothing by more than 1e-3 in log space). From the same start, gradient descent
    and Lloyd may stop at different fixed points of the same objective."""
    wh = clean(load_real(next(f for f in real_box_files() if f.stem == name), size))
    init = np.exp(np.quantile(np.log(wh), np.linspace(0.1, 0.9, k), axis=0))
    learned = _train_hard(wh, init, steps=4000)
    again = fastanchor.kmeans_log(wh, k, init=learned, n_init=1)
    assert len(np.unique(again.labels)) == k
    np.testing.assert_allclose(np.log(_by_area(learned)), np.log(again.anchors), atol=1e-3, rtol=0)


def test_kmeans_log_reference_is_a_fixed_point_of_geometric_means():
    rng = np.random.default_rng(3)
    wh = np.exp(rng.normal(3.0, 1.0, (300, 2)))
    w = rng.uniform(0.1, 2.0, 300)
    anchors, labels, _ = ref.kmeans_log_float(wh, wh[:4], sample_weight=w)
    for j in range(4):
        m = labels == j
        np.testing.assert_allclose(anchors[j], np.exp((w[m, None] * np.log(wh[m])).sum(0) / w[m].sum()))
    np.testing.assert_array_equal(labels, np.argmin(ref.log_sq_dist(anchors, wh), 1))


# --- initialization -------------------------------------------------------------------------


def test_init_from_array_kmeans_and_autoanchor_results():
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(3.5, 0.5, (500, 2)))
    km = fastanchor.kmeans_iou(wh, 6, seed=0)
    np.testing.assert_allclose(LearnedAnchors(km).numpy(), km.anchors, rtol=1e-6)
    aa = fastanchor.autoanchor(wh, 6, generations=20, seed=0)
    np.testing.assert_allclose(LearnedAnchors(aa).numpy(), aa.anchors, rtol=1e-6)
    np.testing.assert_allclose(LearnedAnchors(km.anchors, 6).numpy(), km.anchors, rtol=1e-6)


def test_init_identical_and_uniform():
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(3.0, 0.8, (500, 2)))
    ident = LearnedAnchors("identical", 9, wh=wh, jitter=0.0).numpy()
    np.testing.assert_allclose(ident, np.repeat(np.exp(np.log(wh).mean(0))[None], 9, 0), rtol=1e-6)
    jit = np.log(LearnedAnchors("identical", 9, wh=wh, jitter=1e-3, seed=1).numpy())
    assert np.abs(jit - np.log(wh).mean(0)).max() <= 1e-3 + 1e-6
    assert len(np.unique(jit.round(8), axis=0)) == 9
    uni = np.log(LearnedAnchors("uniform", 9, wh=wh, seed=2).numpy())
    lo, hi = np.log(wh).min(0), np.log(wh).max(0)
    assert ((uni >= lo - 1e-6) & (uni <= hi + 1e-6)).all()
    np.testing.assert_array_equal(uni, np.log(LearnedAnchors("uniform", 9, wh=wh, seed=2).numpy()))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("identical",), {"wh": np.ones((3, 2))}, "needs the number of anchors"),
        (("uniform", 3), {}, "needs the boxes"),
        (("bogus", 3), {}, "init must be"),
        (([[1.0, 2.0], [0.0, 3.0]],), {}, "initial anchor 1"),
        ((np.ones((3, 3)),), {}, r"shape \(A, 2\)"),
        ((np.ones((4, 2)),), {"strides": (8, 16, 32)}, "split evenly"),
        ((np.ones((4, 2)), 3), {}, "k=3"),
    ],
)
def test_init_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LearnedAnchors(*args, **kwargs)


def test_bad_boxes_and_assignment_shapes_raise():
    a = LearnedAnchors(np.ones((3, 2)) * 10)
    with pytest.raises(ValueError, match="row 1"):
        a.loss(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError):
        a.loss(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="assignment must have shape"):
        regression_loss(a.log_wh, torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="delta must have shape"):
        regression_loss(a.log_wh, torch.zeros(4, 2), torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="temperature"):
        soft_assignment(a.log_wh, torch.zeros(4, 2), 0.0)


def test_empty_batch_gives_zero_loss_with_a_gradient():
    a = LearnedAnchors(np.ones((3, 2)) * 10)
    loss = a.loss(torch.zeros(0, 2))
    loss.backward()
    assert float(loss.detach()) == 0.0 and a.log_wh.grad is not None and float(a.log_wh.grad.abs().sum()) == 0.0


# --- schedule ------------------------------------------------------------------------------


def test_schedule_weights():
    s = WarmupSchedule(soft_steps=10, handover_steps=10, cluster_weight=2.0, cluster_steps=20)
    assert [s.soft_weight(t) for t in (0, 9, 10, 15, 20, 100)] == [1.0, 1.0, 1.0, 0.5, 0.0, 0.0]
    assert [s.cluster_lambda(t) for t in (0, 10, 20, 30)] == [2.0, 1.0, 0.0, 0.0]
    off = WarmupSchedule.off()
    assert off.soft_weight(0) == 0.0 and off.cluster_lambda(0) == 0.0
    assert WarmupSchedule(soft=False).soft_weight(0) == 0.0 and WarmupSchedule(soft=False).cluster_lambda(0) == 1.0
    assert WarmupSchedule(clustering=False).cluster_lambda(0) == 0.0
    with pytest.raises(ValueError, match="soft_steps"):
        WarmupSchedule(soft_steps=-1)
    with pytest.raises(ValueError, match="metric"):
        WarmupSchedule(metric="l1")


def test_blended_assignment_and_warmup_loss_follow_the_schedule():
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(3.0, 1.0, (50, 2)))
    sched = WarmupSchedule(soft_steps=2, handover_steps=4, temperature=0.7, cluster_weight=0.5, cluster_steps=8)
    a = LearnedAnchors(wh[:4], schedule=sched, dtype=torch.float64)
    lg = torch.tensor(np.log(wh))
    soft = soft_assignment(a.log_wh, lg, 0.7)
    hard = hard_assignment(a.log_wh, lg)
    torch.testing.assert_close(a.assignment(wh, step=0), soft)
    torch.testing.assert_close(a.assignment(wh, step=4), 0.5 * soft + 0.5 * hard)
    torch.testing.assert_close(a.assignment(wh, step=6), hard)
    expected = 0.5 * regression_loss(a.log_wh, lg, soft) + 0.25 * clustering_loss(a.log_wh, lg, 0.5 * soft + 0.5 * hard)
    torch.testing.assert_close(a.warmup_loss(wh, step=4), expected)
    delta = torch.tensor(np.random.default_rng(1).normal(0, 0.3, (50, 4, 2)))
    with_delta = 0.5 * regression_loss(a.log_wh, lg, soft, delta) + 0.25 * clustering_loss(
        a.log_wh, lg, 0.5 * soft + 0.5 * hard
    )  # the offsets enter the soft term only; the clustering term uses the anchors alone
    torch.testing.assert_close(a.warmup_loss(wh, step=4, delta=delta), with_delta)
    assert not torch.allclose(with_delta, expected)
    assert float(a.warmup_loss(wh, step=8).detach()) == 0.0
    assert a.hard_gradient_scale(4) == 0.5 and a.hard_gradient_scale(0) == 0.0


def test_scaled_anchors_keep_the_value_and_scale_the_gradient():
    a = LearnedAnchors(np.array([[10.0, 20.0], [30.0, 15.0]]), dtype=torch.float64)
    out = a.scaled(0.25)
    torch.testing.assert_close(out, a())
    out.sum().backward()
    torch.testing.assert_close(a.log_wh.grad, 0.25 * a().detach())


def test_step_is_saved_in_the_state_dict():
    a = LearnedAnchors(np.ones((2, 2)) * 5)
    a.advance(7)
    b = LearnedAnchors(np.ones((2, 2)))
    b.load_state_dict(a.state_dict())
    assert b.step == 7
    np.testing.assert_allclose(b.numpy(), a.numpy())


# --- shift-free normalization ----------------------------------------------------------------


def test_shift_free_norm_is_batchnorm_without_bias():
    torch.manual_seed(0)
    x = torch.randn(64, 2) * 3 + 1.5
    norm = ShiftFreeNorm(2)
    ref_bn = torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, 2.0]))
        ref_bn.weight.copy_(torch.tensor([0.5, 2.0]))
        ref_bn.bias.zero_()
    torch.testing.assert_close(norm(x), ref_bn(x))
    torch.testing.assert_close(norm.running_mean, ref_bn.running_mean)
    assert not any("bias" in n for n, _ in norm.named_parameters())
    norm.eval(), ref_bn.eval()
    torch.testing.assert_close(norm(x), ref_bn(x))


def test_shift_free_norm_channel_axis():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 5, 5)
    y = ShiftFreeNorm(2, dim=1)(x)
    per_channel = y.transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(2), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="expects 2 channels"):
        ShiftFreeNorm(2)(torch.zeros(4, 3))


# --- export and check -----------------------------------------------------------------------


def test_export_levels_in_index_order_and_check(tmp_path):
    anchors = np.array([[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119]], float)
    a = LearnedAnchors(anchors, strides=(8, 16))
    fmt = a.export(str(tmp_path / "a.yaml"))
    assert fmt == "yolov5"
    back = read_anchors(str(tmp_path / "a.yaml"))
    np.testing.assert_array_equal(back.anchors, anchors)
    a.export(str(tmp_path / "b.json"), strides=(8, 16, 32))
    back = read_anchors(str(tmp_path / "b.json"))
    assert back.strides == (8.0, 16.0, 32.0)
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(3.3, 0.7, (200, 2)))
    got = a.check(wh, thr=4.0)
    want = fastanchor.check_anchors(a.numpy(), wh, thr=4.0)
    assert got == want
    with pytest.raises(ValueError, match="strides"):
        LearnedAnchors(anchors).export(str(tmp_path / "c.yaml"))


# --- the optional import ----------------------------------------------------------------------

_BLOCK_TORCH = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ImportError('No module named ' + repr(name))\n"
    "sys.meta_path.insert(0, Block())\n"
)


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_TORCH + code], capture_output=True, text=True, env=env, timeout=120
    )


def test_fastanchor_imports_without_torch_and_the_subpackage_names_the_extra():
    ok = _run("import fastanchor; print(fastanchor.kmeans_iou([[1, 2], [3, 4], [5, 6]], 2, seed=0).anchors.shape)")
    assert ok.returncode == 0, ok.stderr
    bad = _run("import fastanchor.torch")
    assert bad.returncode != 0
    assert 'pip install "fastanchor[torch]"' in bad.stderr


def test_the_example_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    out = tmp_path / "learned.yaml"
    run = subprocess.run(
        [sys.executable, str(REPO / "examples" / "learned_anchors.py"), "--steps", "20", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "best possible recall" in run.stdout
    assert read_anchors(str(out)).anchors.shape == (9, 2)
