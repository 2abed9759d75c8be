"""A short end-to-end CPU training of YOLOv5n: fixed k-means anchors against learned ones.

Images are synthesized from coco128's real box layouts (letterboxed, each box filled with its
class's colour on a noisy background; the dataset ships no images): train on train2017's labels,
evaluate on val2017's. Arms, all from the same network initialization and batch order:

* ``kmeans``: fixed anchors from ``fastanchor.kmeans_iou`` on the training boxes at this size;
* ``poor-fixed``: a poor start (all 9 anchors identical, at the boxes' geometric mean), fixed;
* ``poor-learned``: that poor start, learned with the warm-ups (``fastanchor.torch.yolov5``);
* ``poor-learned-nowarm``: that poor start, learned without the warm-ups (YOLOv5's own loss only);
* ``poor-learned-sfn``: as ``poor-learned``, with the shift-free normalization on the Detect outputs;
* ``poor-learned-trained``: as ``poor-learned``, the soft warm-up term also training the network's offsets;
* ``kmeans-learned``: the k-means anchors, learned.

Reports per epoch the training box loss (YOLOv5's CIoU term), and at the end the validation box
loss, recall at IoU 0.5 (class-agnostic, the top 100 detections with confidence >= 0.001 after NMS), the mean
best IoU of the validation boxes, the anchors' trajectory, the distinct anchors (anchors closer than 1% per
side count as one) and the dead ones (the nearest, in log space, of no training box).

    PYTHONPATH=python nice -n 10 /work/venv-torch/bin/python benchmarks/learned_anchors/e2e.py \\
        --epochs 10 --out /tmp/learned_anchors
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import coco128_labels, dead_anchors, distinct_anchors, synthetic_batch  # noqa: E402

import fastanchor  # noqa: E402
from fastanchor.torch import WarmupSchedule  # noqa: E402
from fastanchor.torch.yolov5 import YOLOv5Anchors, find_detect  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import yaml
    import yolov5
    from yolov5.models.yolo import Model
    from yolov5.utils.general import non_max_suppression
    from yolov5.utils.loss import ComputeLoss
    from yolov5.utils.metrics import box_iou


def batches(labels, img_wh, size, batch, seed):
    order = np.random.default_rng(seed).permutation(len(labels))
    return [
        synthetic_batch(labels, img_wh, order[i : i + batch], size, seed * 1000 + i)
        for i in range(0, len(order) - batch + 1, batch)
    ]


def evaluate(model, loss_fn, val):
    model.eval()
    hits = total = 0
    best_ious, lbox = [], []
    with torch.no_grad():
        for imgs, targets, corners in val:
            pred, raw = model(imgs)
            lbox.append(float(loss_fn(raw, targets)[1][0]))
            dets = non_max_suppression(pred, conf_thres=0.001, iou_thres=0.6, max_det=100)
            for d, (box, _) in zip(dets, corners):
                if len(box) == 0:
                    continue
                total += len(box)
                if len(d) == 0:
                    best_ious.extend([0.0] * len(box))
                    continue
                iou = box_iou(torch.as_tensor(box, dtype=torch.float32), d[:, :4]).max(1).values
                hits += int((iou >= 0.5).sum())
                best_ious.extend(iou.tolist())
    model.train()
    return {
        "val_box_loss": float(np.mean(lbox)),
        "recall50": hits / max(total, 1),
        "mean_best_iou": float(np.mean(best_ious)) if best_ious else 0.0,
    }


def run_arm(name, init_anchors, learn, args, train_sets, val, hyp, cfg, warmups=True, **adapter):
    torch.manual_seed(args.seed)
    model = Model(str(cfg), nc=80).train()
    model.hyp = hyp
    det = find_detect(model)
    with torch.no_grad():  # the arm's starting anchors, in the model's level order
        start = torch.tensor(np.array(init_anchors), dtype=torch.float32).view(3, 3, 2)
        det.anchors.copy_(start / det.stride.view(-1, 1, 1))
    raw_loss = ComputeLoss(model)
    groups = [{"params": model.parameters(), "lr": args.lr}]
    ad = None
    loss_fn = raw_loss
    steps = args.epochs * len(train_sets[0])
    if learn:
        sched = WarmupSchedule(soft_steps=steps // 8, handover_steps=steps // 8, cluster_steps=steps // 2)
        ad = YOLOv5Anchors(model, schedule=sched if warmups else WarmupSchedule.off(), **adapter)
        groups[0]["params"] = list(model.parameters())  # with the shift-free norms, if any
        loss_fn = ad.wrap_loss(raw_loss)
        groups.append({"params": ad.parameters(), "lr": args.anchor_lr, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups)
    traj = [np.asarray(init_anchors, dtype=np.float64).tolist()]
    epochs = []
    t0 = time.perf_counter()
    for e in range(args.epochs):
        tb = []
        for imgs, targets, _ in train_sets[e % len(train_sets)]:
            opt.zero_grad()
            loss, items = loss_fn(model(imgs), targets)
            loss.backward()
            opt.step()
            if ad is not None:
                ad.advance()
            tb.append(float(items[0]))
        anchors = (det.anchors * det.stride.view(-1, 1, 1)).reshape(-1, 2).detach().double().numpy()
        traj.append(anchors.tolist())
        epochs.append({"epoch": e + 1, "train_box_loss": float(np.mean(tb))})
        print(
            f"{name:15s} epoch {e + 1:2d}: train box loss {np.mean(tb):.4f}  anchors "
            + " ".join(f"{w:.0f}x{h:.0f}" for w, h in anchors),
            flush=True,
        )
    ev = evaluate(model, raw_loss, val)
    print(
        f"{name:15s} final: val box loss {ev['val_box_loss']:.4f}  recall@0.5 {ev['recall50']:.4f}  "
        f"mean best IoU {ev['mean_best_iou']:.4f}  ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    return {"epochs": epochs, "final": ev, "trajectory": traj, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--img", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of the network")
    ap.add_argument("--anchor-lr", type=float, default=0.02, help="Adam learning rate of the log anchors")
    ap.add_argument("--arms", nargs="+", default=["kmeans", "poor-fixed", "poor-learned", "kmeans-learned"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/learned_anchors")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = Path(yolov5.__file__).parent / "models" / "yolov5n.yaml"
    hyp = yaml.safe_load((Path(yolov5.__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    labels, img_wh = coco128_labels("train2017")
    vlabels, vimg_wh = coco128_labels("val2017")
    train_sets = [batches(labels, img_wh, args.img, args.batch, args.seed + e) for e in range(3)]
    val = batches(vlabels, vimg_wh, args.img, args.batch, 99)
    wh = np.concatenate(
        [
            np.asarray([[b[2] - b[0], b[3] - b[1]] for b in box]).reshape(-1, 2)
            for s in train_sets[:1]
            for _, _, c in s
            for box, _ in c
        ]
    )
    wh = wh[(wh >= 1).all(1)]
    km = fastanchor.kmeans_iou(wh, 9, seed=args.seed).anchors  # sorted by area: P3, P4, P5 in order
    poor = np.repeat(np.exp(np.log(wh).mean(0, keepdims=True)), 9, axis=0)
    starts = {
        "kmeans": (km, False),
        "poor-fixed": (poor, False),
        "poor-learned": (poor, True),
        "poor-learned-nowarm": (poor, True),
        "poor-learned-sfn": (poor, True),
        "poor-learned-trained": (poor, True),
        "kmeans-learned": (km, True),
    }
    print(
        f"{len(wh)} training boxes at {args.img}px; k-means anchors "
        + " ".join(f"{w:.0f}x{h:.0f}" for w, h in km)
        + f"; poor start {poor[0, 0]:.0f}x{poor[0, 1]:.0f}",
        flush=True,
    )
    report = {
        "args": vars(args),
        "train_boxes": int(len(wh)),
        "kmeans": km.tolist(),
        "poor": poor[0].tolist(),
        "arms": {},
    }
    for name in args.arms:
        init, learn = starts[name]
        report["arms"][name] = run_arm(
            name,
            init,
            learn,
            args,
            train_sets,
            val,
            hyp,
            cfg,
            warmups=name != "poor-learned-nowarm",
            shift_free_norm=name == "poor-learned-sfn",
            train_offsets=name == "poor-learned-trained",
        )
        final = np.asarray(report["arms"][name]["trajectory"][-1])
        report["arms"][name]["check"] = fastanchor.check_anchors(final, wh).bpr
        report["arms"][name]["distinct"] = distinct_anchors(final)
        report["arms"][name]["dead"] = dead_anchors(final, wh)
        print(
            f"{name:15s} BPR {report['arms'][name]['check']:.3f}  distinct anchors "
            f"{report['arms'][name]['distinct']}  dead {report['arms'][name]['dead']}",
            flush=True,
        )
        (out / "e2e.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'e2e.json'}")


if __name__ == "__main__":
    main()
