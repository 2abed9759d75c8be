"""Per-step overhead of the learned-anchor adapters on a real small detector, on CPU.

Three copies of the model train side by side in one process, one step each in turn (the order
rotating every round, so a busy machine slows all alike): the plain model, the model with learned
anchors during the warm-ups (soft + clustering terms on) and after them (the detector's own loss
only). A step is forward, loss, backward and optimizer step, on letterboxed images synthesized from
coco128's real box layouts. Reports the median step time of each and the overhead against plain.

    PYTHONPATH=python nice -n 10 /work/venv-torch/bin/python benchmarks/learned_anchors/overhead.py \\
        --model yolov5n --steps 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import coco128_labels, synthetic_batch  # noqa: E402

from fastanchor.torch import WarmupSchedule  # noqa: E402


def yolov5_arms(batches, hyp_name="hyp.scratch-low.yaml"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import yaml
        import yolov5
        from yolov5.models.yolo import Model
        from yolov5.utils.loss import ComputeLoss
    from fastanchor.torch.yolov5 import YOLOv5Anchors

    cfg = Path(yolov5.__file__).parent / "models" / "yolov5n.yaml"
    hyp = yaml.safe_load((Path(yolov5.__file__).parent / "data" / "hyps" / hyp_name).read_text())

    def build(kind):
        torch.manual_seed(0)
        model = Model(str(cfg), nc=80).train()
        model.hyp = hyp
        params = [{"params": model.parameters()}]
        loss_fn = ComputeLoss(model)
        ad = None
        if kind != "plain":
            ad = YOLOv5Anchors(model, schedule=WarmupSchedule(soft_steps=10**9, cluster_steps=10**9))
            if kind == "learned, after warm-ups":
                ad.advance(3 * 10**9)
            loss_fn = ad.wrap_loss(loss_fn)
            params.append({"params": ad.parameters(), "weight_decay": 0.0})
        opt = torch.optim.SGD(params, lr=0.001, momentum=0.9)

        def step(i):
            imgs, targets, _ = batches[i % len(batches)]
            opt.zero_grad()
            loss, _ = loss_fn(model(imgs), targets)
            loss.backward()
            opt.step()
            if ad is not None:
                ad.advance()

        return step

    return {k: build(k) for k in ("plain", "learned, warm-ups on", "learned, after warm-ups")}


def adapter_ops_yolov5(batches, reps=300):
    """The adapter's own work in one YOLOv5 step, timed alone: the Detect pre-hook's sync, the
    differentiable grid anchors, the warm-up terms with their backward (median seconds per step)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import yolov5
        from yolov5.models.yolo import Model
    from fastanchor.torch.yolov5 import YOLOv5Anchors, find_detect

    torch.manual_seed(0)
    model = Model(str(Path(yolov5.__file__).parent / "models" / "yolov5n.yaml"), nc=80)
    ad = YOLOv5Anchors(model, schedule=WarmupSchedule(soft_steps=10**9, cluster_steps=10**9))
    det = find_detect(model)
    size = batches[0][0].shape[-1]
    out = []
    for i in range(reps):
        targets = batches[i % len(batches)][1]
        t0 = time.perf_counter()
        with torch.no_grad():
            ad.anchors.log_wh += 1e-6  # a changed anchor: the sync copies and drops the grids
        ad.sync(det)
        anchors = ad.grid_anchors(0.5)
        warm = ad.anchors.warmup_loss(ad.target_wh(targets, (size, size)))
        (warm + anchors.sum()).backward()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def frcnn_arms(batches, size):
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    from fastanchor.torch.torchvision import learn_anchors

    def build(kind):
        torch.manual_seed(0)
        model = fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, num_classes=81, min_size=size, max_size=size
        ).train()
        gen = None
        if kind != "plain":
            gen = learn_anchors(model, schedule=WarmupSchedule(soft_steps=10**9, cluster_steps=10**9))
            if kind == "learned, after warm-ups":
                gen.advance(3 * 10**9)
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

        def step(i):
            imgs, _, corners = batches[i % len(batches)]
            targets = [
                {"boxes": torch.as_tensor(b, dtype=torch.float32), "labels": torch.as_tensor(c + 1)} for b, c in corners
            ]
            opt.zero_grad()
            losses = model(list(imgs), targets)
            loss = sum(losses.values())
            if gen is not None:
                loss = loss + gen.warmup_loss()
            loss.backward()
            opt.step()
            if gen is not None:
                gen.advance()

        return step

    return {k: build(k) for k in ("plain", "learned, warm-ups on", "learned, after warm-ups")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        choices=["yolov5n", "frcnn"],
        default="yolov5n",
        help="yolov5n or fasterrcnn_mobilenet_v3_large_320_fpn",
    )
    ap.add_argument("--img", type=int, default=160)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per arm")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per arm first")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    labels, img_wh = coco128_labels()
    rng = np.random.default_rng(0)
    batches = [
        synthetic_batch(labels, img_wh, rng.choice(len(labels), args.batch, replace=False), args.img, s)
        for s in range(8)
    ]
    arms = yolov5_arms(batches) if args.model == "yolov5n" else frcnn_arms(batches, args.img)
    names = list(arms)
    times = {n: [] for n in names}
    for i in range(args.warmup + args.steps):
        order = names[i % len(names) :] + names[: i % len(names)]
        for n in order:
            t0 = time.perf_counter()
            arms[n](i)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times[n].append(dt)
    base = statistics.median(times["plain"])
    result = {"args": vars(args), "median_s": {}, "overhead_pct": {}, "paired_ratio_median_pct": {}}
    for n in names:
        med = statistics.median(times[n])
        ratio = statistics.median(np.array(times[n]) / np.array(times["plain"]))
        result["median_s"][n] = med
        result["overhead_pct"][n] = 100 * (med / base - 1)
        result["paired_ratio_median_pct"][n] = 100 * (ratio - 1)
        print(
            f"{args.model} {args.img}px batch {args.batch}, {args.steps} steps: {n:26s} median {1000 * med:8.1f} ms"
            f"  overhead {100 * (med / base - 1):+6.2f}%  (median of paired ratios {100 * (ratio - 1):+6.2f}%)"
        )
    if args.model == "yolov5n":
        ops = adapter_ops_yolov5(batches)
        result["adapter_ops_alone_s"] = ops
        print(
            f"the adapter's own operations alone: median {1000 * ops:.3f} ms per step = "
            f"{100 * ops / base:.2f}% of the plain step"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
