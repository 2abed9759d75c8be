"""Plain-numpy reference implementation of fastanchor's anchor-box k-means.

This file is the *specification* the fast C++ core is tested against (with
hypothesis).  It values clarity and exact, documented semantics over speed:
every computation is done in float64 and follows a fixed operation order so
that the C++ implementation can reproduce the results bit-for-bit.

Boxes and anchors are arrays of shape (n, 2) holding (width, height).
"""

import math

import numpy as np

__all__ = [
    "wh_iou",
    "wh_iou_dtype",
    "assign",
    "avg_iou",
    "weighted_median",
    "sort_anchors",
    "lloyd",
]


def _iou_matrix(wh1, wh2):
    """IoU of two corner-aligned box sets; operates in the arrays' own dtype."""
    w1, h1 = wh1[:, 0], wh1[:, 1]
    w2, h2 = wh2[:, 0], wh2[:, 1]
    inter = np.minimum(w1[:, None], w2[None, :]) * np.minimum(h1[:, None], h2[None, :])
    a1 = w1 * h1
    a2 = w2 * h2
    return inter / ((a1[:, None] + a2[None, :]) - inter)


def wh_iou(wh1, wh2):
    """(N, M) float64 IoU matrix between boxes wh1 (N, 2) and wh2 (M, 2)."""
    wh1 = np.asarray(wh1, dtype=np.float64).reshape(-1, 2)
    wh2 = np.asarray(wh2, dtype=np.float64).reshape(-1, 2)
    return _iou_matrix(wh1, wh2)


def wh_iou_dtype(wh1, wh2):
    """Same as wh_iou, but computed in the common dtype of the inputs
    (float32 when both are float32); non-float inputs are computed in float64."""
    wh1 = np.asarray(wh1)
    wh2 = np.asarray(wh2)
    dtype = np.result_type(wh1.dtype, wh2.dtype)
    if not np.issubdtype(dtype, np.floating):
        dtype = np.float64
    return _iou_matrix(wh1.astype(dtype).reshape(-1, 2), wh2.astype(dtype).reshape(-1, 2))


def assign(anchors, wh):
    """Assign each box to its best anchor.

    Returns (labels int64 (N,), best_iou float64 (N,)); on exact ties the
    lowest anchor index wins (np.argmax semantics).
    """
    iou = wh_iou(wh, anchors)  # rows: boxes, columns: anchors
    labels = np.argmax(iou, axis=1).astype(np.int64)
    best = np.max(iou, axis=1)
    return labels, best


def avg_iou(anchors, wh, sample_weight=None):
    """Weighted mean over boxes of the best IoU with any anchor."""
    _, best = assign(anchors, wh)
    wt = _weights(sample_weight, best.shape[0])
    return float(np.sum(wt * best) / np.sum(wt))


MEDIAN_WEIGHT_BITS = 31


def median_int_weights(wt):
    """The weighted median's integer weights: max(1, round(ldexp(w, s))) (half to even), with s
    chosen so that the largest weight lies in [2^(MEDIAN_WEIGHT_BITS - 1), 2^MEDIAN_WEIGHT_BITS)."""
    wt = np.asarray(wt, dtype=np.float64).reshape(-1)
    s = MEDIAN_WEIGHT_BITS - 1 - (math.frexp(float(wt.max()))[1] - 1)
    return np.maximum(1, np.rint(np.ldexp(wt, s))).astype(np.int64)


def weighted_median(x, units):
    """Weighted median of 1-D x with positive integer weights ``units`` (median_int_weights).

    The lower weighted median, except that when the cumulative weight hits
    exactly half the total, the midpoint of that value and the next one is
    returned.  With unit weights this equals numpy.median (for both odd and
    even lengths).  The cumulative weights are exact integer sums in ascending
    order of x, so the result depends only on the (value, weight) pairs.
    """
    x = np.asarray(x, dtype=np.float64)
    u = np.asarray(units, dtype=np.int64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    c = np.cumsum(u[order])  # exact: below 2^63
    total = int(c[-1])
    i = int(np.argmax(c >= total - c))  # the first with 2 * cum >= total
    if int(c[i]) == total - int(c[i]) and i < len(xs) - 1:
        return float((xs[i] + xs[i + 1]) / 2)
    return float(xs[i])


def sort_anchors(anchors, labels):
    """Sort anchors by area ascending, then width ascending, then original index.

    Returns (sorted anchors float64 (k, 2), labels remapped to the sorted
    order as int32).
    """
    anchors = np.asarray(anchors, dtype=np.float64)
    labels = np.asarray(labels)
    k = anchors.shape[0]
    w, h = anchors[:, 0], anchors[:, 1]
    area = w * h
    order = np.lexsort((np.arange(k), w, area))  # last key is the primary key
    new_index = np.empty(k, dtype=np.int64)
    new_index[order] = np.arange(k)  # old anchor index -> position after sorting
    return anchors[order], new_index[labels].astype(np.int32)


def _weights(sample_weight, n):
    if sample_weight is None:
        return np.ones(n, dtype=np.float64)
    wt = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if wt.shape[0] != n:
        raise ValueError("sample_weight must have one entry per box")
    if n and (wt == wt[0]).all() and wt[0] > 0:
        return np.ones(n, dtype=np.float64)  # equal weights are unit weights: the same fit, exact sums
    return wt


def _update_step(anchors, labels, best, wh, wt, update):
    """One Lloyd update: recompute non-empty clusters, re-seed empty ones.

    `best` is each box's best IoU with the current (pre-update) anchors.
    """
    k = anchors.shape[0]
    w, h = wh[:, 0], wh[:, 1]
    new = anchors.copy()
    counts = np.bincount(labels, minlength=k)
    nonempty = counts > 0

    if update == "mean":  # (the core's sums are exact: of integer weights times the values)
        units = median_int_weights(wt).astype(np.float64)
        s_w = np.bincount(labels, weights=units * w, minlength=k)
        s_h = np.bincount(labels, weights=units * h, minlength=k)
        s_1 = np.bincount(labels, weights=units, minlength=k)
        new[nonempty, 0] = s_w[nonempty] / s_1[nonempty]
        new[nonempty, 1] = s_h[nonempty] / s_1[nonempty]
    else:  # "median"
        units = median_int_weights(wt)
        for j in np.flatnonzero(nonempty):
            members = labels == j  # boolean mask keeps members in index order
            new[j, 0] = weighted_median(w[members], units[members])
            new[j, 1] = weighted_median(h[members], units[members])

    # Empty clusters, in increasing anchor index, take the worst-fitting boxes:
    # ordered by (best IoU ascending, box index ascending).
    empty = np.flatnonzero(~nonempty)
    if empty.size:
        worst_first = np.lexsort((np.arange(wh.shape[0]), best))
        for rank, j in enumerate(empty):
            new[j] = wh[worst_first[rank]]
    return new


def lloyd(wh, init_anchors, *, update="median", max_iter=300, tol=0.0, sample_weight=None):
    """Lloyd k-means on (width, height) boxes with 1 - IoU as the distance.

    Returns dict(anchors (k, 2) sorted by sort_anchors, labels int32 (N,),
    avg_iou float, n_iter int, converged bool).

    The rule on ties, and why converged means a fixed point: a box tied between anchors goes to
    the lowest anchor index (assign), so the order of the anchors decides ties. The labels are
    taken as repeated (converged) only while the anchors are in sort_anchors' order (area, then
    width, then index); when they repeat with the anchors in another order, the anchors are put
    in that order and the iterations go on (within max_iter). So the returned (sorted) anchors
    are the ones the last assignment used, each anchor with boxes is the median (mean) of its
    returned labels' boxes, and a refit from the returned anchors returns the same anchors and
    labels, converged after one update. With tol > 0 a run may stop as converged before its
    labels repeat: no fixed point is promised then.
    """
    if update not in ("median", "mean"):
        raise ValueError("update must be 'median' or 'mean'")
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.array(init_anchors, dtype=np.float64).reshape(-1, 2)  # copy
    n, k = wh.shape[0], anchors.shape[0]
    if not 1 <= k <= n:
        # k <= n guarantees enough boxes to re-seed every empty cluster.
        raise ValueError("need 1 <= number of anchors <= number of boxes")
    wt = _weights(sample_weight, n)

    prev = None
    n_iter = 0
    converged = False
    while True:
        labels, best = assign(anchors, wh)
        if prev is not None and np.array_equal(labels, prev):
            order = np.lexsort((np.arange(k), anchors[:, 0], anchors[:, 0] * anchors[:, 1]))
            if np.array_equal(order, np.arange(k)):
                converged = True
                break
            anchors = anchors[order]  # assign again in area order (prev stays: the labels change)
            continue
        if n_iter >= max_iter:
            break
        new = _update_step(anchors, labels, best, wh, wt, update)
        n_iter += 1
        rel_w = np.abs(new[:, 0] - anchors[:, 0]) / anchors[:, 0]
        rel_h = np.abs(new[:, 1] - anchors[:, 1]) / anchors[:, 1]
        shift = np.max(np.maximum(rel_w, rel_h))
        anchors = new
        prev = labels
        if tol > 0 and shift <= tol:
            labels, best = assign(anchors, wh)
            converged = True
            break

    sorted_anchors, _ = sort_anchors(anchors, labels)
    # The returned labels are the assignment to the returned (sorted) anchors, so that the
    # lowest-index rule holds for them even for boxes tied between anchors the sort reordered.
    sorted_labels = assign(sorted_anchors, wh)[0].astype(np.int32)
    return dict(
        anchors=sorted_anchors,
        labels=sorted_labels,
        avg_iou=avg_iou(sorted_anchors, wh, wt),
        n_iter=n_iter,
        converged=converged,
    )


# --------------------------------------------------------------------------------------------
# Anchor fitness (YOLOv5's side-ratio metric) and YOLOv5's mutation search.


def ratio_metric(anchors, wh):
    """(N, k) YOLOv5 ratio metric x_ij = min over (w, h) of min(r, 1/r), r = wh_i / anchor_j."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    r = wh[:, None, :] / anchors[None, :, :]
    return np.minimum(r, 1 / r).min(axis=2)


def anchor_fitness(anchors, wh, thr=4.0, sample_weight=None):
    """dict(fitness, bpr, aat, avg_iou) of anchors on boxes, means weighted by sample_weight.

    best_i = max_j x_ij; with t = 1/thr: fitness = mean(best * [best > t]),
    bpr = mean([best > t]), aat = mean(#{j: x_ij > t}), avg_iou = mean(max_j IoU_ij).
    """
    x = ratio_metric(anchors, wh)
    best = x.max(axis=1)
    t = 1 / thr
    wt = _weights(sample_weight, x.shape[0])
    total = np.sum(wt)
    _, best_iou = assign(anchors, wh)
    return dict(
        fitness=float(np.sum(wt * (best * (best > t))) / total),
        bpr=float(np.sum(wt * (best > t)) / total),
        aat=float(np.sum(wt * (x > t).sum(axis=1)) / total),
        avg_iou=float(np.sum(wt * best_iou) / total),
    )


_MASK64 = (1 << 64) - 1


def _splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def derive_seed(seed, stream):
    """fastanchor::derive_seed: the seed of stream `stream` of `seed`."""
    _, z = _splitmix64(seed ^ ((0xD1B54A32D192ED03 * (stream + 1)) & _MASK64))
    return z


class Rng:
    """fastanchor::Rng (random.hpp) in Python: xoshiro256** seeded by SplitMix64, uniform with
    53 random bits, normal by Marsaglia's polar method keeping the second value of each pair."""

    def __init__(self, seed):
        state = seed & _MASK64
        self.s = []
        for _ in range(4):
            state, z = _splitmix64(state)
            self.s.append(z)
        self.spare = None

    @staticmethod
    def _rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & _MASK64

    def next(self):
        s = self.s
        result = (self._rotl((s[1] * 5) & _MASK64, 7) * 9) & _MASK64
        t = (s[1] << 17) & _MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def uniform(self):
        return float(self.next() >> 11) * 2.0**-53

    def normal(self):
        import math  # libm's log and sqrt, as the C++ core calls them (numpy's may differ in the last bit)

        if self.spare is not None:
            z, self.spare = self.spare, None
            return z
        while True:
            u = 2.0 * self.uniform() - 1.0
            v = 2.0 * self.uniform() - 1.0
            s = u * u + v * v
            if s < 1.0 and s != 0.0:
                break
        f = math.sqrt(-2.0 * math.log(s) / s)
        self.spare = v * f
        return u * f


#: The search's stream of the seed (fitness.hpp: kEvolveStream), and the redraw limit.
EVOLVE_STREAM = 0x65766F6C7665
MAX_REDRAWS = 1000


def yolov5_factors(rng, k, mutation_prob, sigma):
    """YOLOv5's mutation factors (k, 2) from `rng`, or None when every attempt left all ones.

    Per attempt: 2k uniforms u (row-major), one rho, 2k normals z;
    v = clip(([u < mutation_prob] * rho) * z * sigma + 1, 0.3, 3.0), redrawn while all v == 1.
    """
    for _ in range(MAX_REDRAWS):
        u = np.array([rng.uniform() for _ in range(2 * k)])
        rho = rng.uniform()
        z = np.array([rng.normal() for _ in range(2 * k)])
        v = ((u < mutation_prob) * rho * z * sigma + 1).clip(0.3, 3.0)
        if not (v == 1).all():
            return v.reshape(k, 2)
    return None


def sort_by_area(anchors):
    """Anchors sorted by area ascending, then width, then original index."""
    anchors = np.asarray(anchors, dtype=np.float64)
    return anchors[np.lexsort((np.arange(anchors.shape[0]), anchors[:, 0], anchors[:, 0] * anchors[:, 1]))]


def yolov5_evolve(
    anchors,
    wh,
    *,
    thr=4.0,
    generations=1000,
    mutation_prob=0.9,
    sigma=0.1,
    min_size=2.0,
    seed=0,
    sample_weight=None,
    fitness=None,
):
    """YOLOv5's kmean_anchors mutation search, sequentially, with fastanchor's generator.

    Starts from max(anchors, min_size); each generation draws factors v (yolov5_factors; a
    generation without factors is skipped), candidate = max(best * v, min_size), accepted only if
    its fitness is strictly higher. `fitness(anchors)` defaults to anchor_fitness(...)["fitness"].
    Returns dict(anchors sorted by area, fitness, history, n_improved).
    """
    if fitness is None:

        def fitness(a):
            return anchor_fitness(a, wh, thr, sample_weight)["fitness"]

    rng = Rng(derive_seed(seed, EVOLVE_STREAM))
    best = np.maximum(np.asarray(anchors, dtype=np.float64).reshape(-1, 2), min_size)
    f = fitness(best)
    history = []
    n_improved = 0
    for _ in range(generations):
        v = yolov5_factors(rng, best.shape[0], mutation_prob, sigma) if mutation_prob > 0 else None
        if v is not None:
            cand = np.maximum(best * v, min_size)
            fc = fitness(cand)
            if fc > f:
                best, f = cand, fc
                n_improved += 1
        history.append(f)
    return dict(anchors=sort_by_area(best), fitness=f, history=np.array(history), n_improved=n_improved)


# ---- SSD / corner boxes (issue 6) ---------------------------------------------------------------


def box_iou(b1, b2):
    """(N, M) IoU of corner boxes (x1, y1, x2, y2), float64, in this exact operation order:
    iw = max(min(x2) - max(x1), 0), ih likewise, inter = iw * ih,
    iou = inter / ((area1 + area2) - inter), area = (x2 - x1) * (y2 - y1)."""
    b1 = np.asarray(b1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(b2, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(b1[:, None, 2], b2[None, :, 2]) - np.maximum(b1[:, None, 0], b2[None, :, 0])
    ih = np.minimum(b1[:, None, 3], b2[None, :, 3]) - np.maximum(b1[:, None, 1], b2[None, :, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    a1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    a2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    return inter / ((a1[:, None] + a2[None, :]) - inter)


def match_priors(priors, gt, threshold=0.5):
    """SSD matching of one image: (P,) int64 GT index per prior, -1 for background.

    1. min(G, P) greedy rounds: the largest IoU among GT rows and prior columns not yet taken
       (the first in row-major order on ties: lowest GT, then lowest prior) matches that pair.
    2. Every other prior: its best GT (lowest index on ties) if that IoU >= threshold, else -1.
    """
    priors = np.asarray(priors, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    P, G = priors.shape[0], gt.shape[0]
    matches = np.full(P, -1, dtype=np.int64)
    if G == 0 or P == 0:
        return matches
    iou = box_iou(gt, priors)  # (G, P)
    best_gt = iou.argmax(axis=0)
    best_val = iou.max(axis=0)
    ok = best_val >= threshold
    matches[ok] = best_gt[ok]
    work = iou.copy()
    for _ in range(min(G, P)):
        g, p = divmod(int(work.argmax()), P)
        matches[p] = g
        work[g, :] = -1.0
        work[:, p] = -1.0
    return matches


def ssd_encode(matched_gt, priors, variances=(0.1, 0.2)):
    """SSD offsets of corner boxes against center-form priors (cx, cy, w, h)."""
    g = np.asarray(matched_gt, dtype=np.float64)
    d = np.asarray(priors, dtype=np.float64)
    gc = (g[..., :2] + g[..., 2:]) / 2
    gwh = g[..., 2:] - g[..., :2]
    return np.concatenate([(gc - d[:, :2]) / (d[:, 2:] * variances[0]), np.log(gwh / d[:, 2:]) / variances[1]], -1)


def ssd_decode(loc, priors, variances=(0.1, 0.2)):
    """Corner boxes from SSD offsets (the inverse formulas of ssd_encode)."""
    t = np.asarray(loc, dtype=np.float64)
    d = np.asarray(priors, dtype=np.float64)
    c = d[:, :2] + t[..., :2] * variances[0] * d[:, 2:]
    wh = d[:, 2:] * np.exp(t[..., 2:] * variances[1])
    return np.concatenate([c - wh / 2, c + wh / 2], -1)


def ssd_default_boxes(feature_maps, aspect_ratios, min_scale=0.2, max_scale=0.9, clip=True):
    """SSD paper default boxes, written out loop by loop (square maps, one ratio list for all
    layers, reciprocals): per location [s_k square, sqrt(s_k s_k+1) square, a, 1/a ...]."""
    m = len(feature_maps)
    scales = [min_scale + (max_scale - min_scale) * k / (m - 1) for k in range(m)] if m > 1 else [min_scale]
    scales.append(1.0)
    rows = []
    for k, f in enumerate(feature_maps):
        s, s2 = scales[k], scales[k + 1]
        for i in range(f):
            for j in range(f):
                cx, cy = (j + 0.5) / f, (i + 0.5) / f
                rows.append([cx, cy, s, s])
                e = np.sqrt(s * s2)
                rows.append([cx, cy, e, e])
                for a in aspect_ratios:
                    if a == 1:
                        continue
                    r = np.sqrt(a)
                    rows.append([cx, cy, s * r, s / r])
                    rows.append([cx, cy, s / r, s * r])
    out = np.array(rows)
    if clip:
        lo = np.clip(out[:, :2] - out[:, 2:] / 2, 0, 1)
        hi = np.clip(out[:, :2] + out[:, 2:] / 2, 0, 1)
        out = np.concatenate([(lo + hi) / 2, hi - lo], 1)
    return out


def tf_ssd_anchors(
    feature_maps,
    aspect_ratios,
    min_scale=0.2,
    max_scale=0.95,
    interpolated_scale_aspect_ratio=1.0,
    reduce_boxes_in_lowest_layer=True,
    base_anchor_size=(1.0, 1.0),
    anchor_strides=None,
    anchor_offsets=None,
    im_height=1.0,
    im_width=1.0,
):
    """TensorFlow's ssd_anchor_generator (MultipleGridAnchorGenerator over create_ssd_anchors'
    box specs), written from its documented semantics, unclipped, in center form (cx, cy, w, h).

    feature_maps: (height, width) per layer. Box specs per layer: (scale, ratio) pairs, the
    lowest layer (0.1, 1), (s0, 2), (s0, 0.5) when reduced, else every ratio at s_k then the
    interpolated ratio at sqrt(s_k s_k+1). base_anchor_size is (height, width), scaled by
    min(im) / im_height and min(im) / im_width. anchor_strides / anchor_offsets: per layer (y, x)
    pairs in pixels, divided by the image height and width; by default stride = 1 / grid size
    and offset = stride / 2. A box: h = scale / sqrt(ratio) * base_h, w = scale * sqrt(ratio) *
    base_w, centred at (x_j, y_i) = (j * stride_x + offset_x, i * stride_y + offset_y).
    """
    m = len(feature_maps)
    scales = [min_scale + (max_scale - min_scale) * i / (m - 1) for i in range(m)] if m > 1 else [min_scale]
    scales.append(1.0)
    mn = min(im_height, im_width)
    base_h, base_w = base_anchor_size[0] * mn / im_height, base_anchor_size[1] * mn / im_width
    rows = []
    for k, (H, W) in enumerate(feature_maps):
        if k == 0 and reduce_boxes_in_lowest_layer:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[k], a) for a in aspect_ratios]
            if interpolated_scale_aspect_ratio > 0:
                specs.append((np.sqrt(scales[k] * scales[k + 1]), interpolated_scale_aspect_ratio))
        if anchor_strides is None:
            sy, sx = 1.0 / H, 1.0 / W
        else:
            sy, sx = anchor_strides[k][0] / im_height, anchor_strides[k][1] / im_width
        if anchor_offsets is None:
            oy, ox = 0.5 * sy, 0.5 * sx
        else:
            oy, ox = anchor_offsets[k][0] / im_height, anchor_offsets[k][1] / im_width
        for i in range(H):
            for j in range(W):
                for scale, a in specs:
                    r = np.sqrt(a)
                    rows.append([j * sx + ox, i * sy + oy, scale * r * base_w, scale / r * base_h])
    return np.array(rows)


def grid_best_iou(levels, boxes, image_wh):
    """Best IoU of each corner box with any anchor placed at a cell centre of any level.

    levels: list of (stride, (k, 2) anchors); image_wh (N, 2). Level s has ceil(W / s) x
    ceil(H / s) cells centred at c = (i + 0.5) * s; an anchor there is the corner box
    (c - 0.5 * w, c + 0.5 * w) (y likewise), compared by box_iou. Only the two columns and two
    rows nearest the box centre 0.5 * (x1 + x2) are tried: i0 = floor(cx / s - 0.5) and i0 + 1,
    clamped to the grid. In exact arithmetic the maximum over all cells is there (the overlap in
    x only shrinks as |dx| grows, the same in y); grid_best_iou_all_cells checks it to rounding.
    Cell counts and indices are float64 integers (never converted to an integer type), so an
    image of more than 2^63 cells is handled like any other.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros(boxes.shape[0])
    for n, b in enumerate(boxes):
        W, H = image_wh[n]
        cx, cy = 0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3])
        for s, anchors in levels:
            nx, ny = max(1.0, float(np.ceil(W / s))), max(1.0, float(np.ceil(H / s)))
            ix, iy = float(np.floor(cx / s - 0.5)), float(np.floor(cy / s - 0.5))
            cols = [min(max(ix + d, 0.0), nx - 1.0) for d in (0, 1)]
            rows = [min(max(iy + d, 0.0), ny - 1.0) for d in (0, 1)]
            for w, h in np.asarray(anchors, dtype=np.float64):
                for i in cols:
                    for j in rows:
                        x, y = (i + 0.5) * s, (j + 0.5) * s
                        cell = np.array([[x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h]])
                        out[n] = max(out[n], box_iou(b[None], cell)[0, 0])
    return out


def grid_best_iou_all_cells(levels, boxes, image_wh):
    """grid_best_iou by brute force over every cell of every level."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros(boxes.shape[0])
    for n, b in enumerate(boxes):
        W, H = image_wh[n]
        for s, anchors in levels:
            nx, ny = max(1, int(np.ceil(W / s))), max(1, int(np.ceil(H / s)))
            X, Y = np.meshgrid((np.arange(nx) + 0.5) * s, (np.arange(ny) + 0.5) * s, indexing="ij")
            X, Y = X.ravel(), Y.ravel()
            for w, h in np.asarray(anchors, dtype=np.float64):
                cells = np.stack([X - 0.5 * w, Y - 0.5 * h, X + 0.5 * w, Y + 0.5 * h], 1)
                out[n] = max(out[n], box_iou(b[None], cells).max())
    return out


# --- k-means in log space (fastanchor.kmeans_log) -------------------------------------------------
# The contract of cpp/include/fastanchor/kmeans/log_space.hpp, bit for bit: logs by math.log per
# element (the C library's log, as the core's std::log; numpy's vectorized np.log may differ in the
# last bit on some CPUs), each log rounded half to even to a multiple of 2^-LOG_FRAC_BITS, integer
# weights, exact integer sums, one rounding of each sum to float and one division.

LOG_FRAC_BITS = 40
LOG_WEIGHT_BITS = 40


def log_rows(wh):
    """(N, 2) float64 logs of (N, 2) positive rows, element by element with math.log."""
    a = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    return np.array([[math.log(w), math.log(h)] for w, h in a.tolist()], dtype=np.float64).reshape(-1, 2)


def log_fixed(logs):
    """Python ints round(ldexp(log, LOG_FRAC_BITS)) (half to even), as nested lists."""
    return [[round(math.ldexp(x, LOG_FRAC_BITS)) for x in row] for row in np.asarray(logs).tolist()]


def log_int_weights(sample_weight, n):
    """Integer weights: 1 each for None, else max(1, round(ldexp(w, s))) with the largest weight in
    [2^(LOG_WEIGHT_BITS - 1), 2^LOG_WEIGHT_BITS)."""
    if sample_weight is None:
        return [1] * n
    wt = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    s = LOG_WEIGHT_BITS - 1 - (math.frexp(float(wt.max()))[1] - 1)
    return [max(1, round(math.ldexp(w, s))) for w in wt.tolist()]


def log_dist(log_anchors, logs):
    """(N, k) squared distances in log space: dw * dw + dh * dh (the core's operation order)."""
    dw = logs[:, None, 0] - log_anchors[None, :, 0]
    dh = logs[:, None, 1] - log_anchors[None, :, 1]
    return dw * dw + dh * dh


def kmeans_log(wh, init_anchors, *, max_iter=300, tol=0.0, sample_weight=None):
    """Lloyd's k-means with the squared distance in log space, from the given initial anchors.

    Every box goes to the nearest anchor in log space (lowest anchor index on an exact tie); every
    anchor whose boxes have positive total weight moves to their weighted mean log (the weighted
    geometric mean per side), computed exactly as described above; an anchor without boxes stays
    where it is (with its given value; a moved anchor is the math.exp of its log). Stops when no
    label changes, after ``max_iter`` updates, or (tol > 0) once no log anchor moved by more than
    ``tol`` (after one last assignment).

    Returns a dict: ``log_anchors`` (k, 2) in the initial order, ``anchors`` (k, 2), ``labels``
    (N,), ``n_iter``, ``converged``.
    """
    logs = log_rows(wh)
    q = log_fixed(logs)
    wq = log_int_weights(sample_weight, logs.shape[0])
    anchors = np.array(init_anchors, dtype=np.float64).reshape(-1, 2)
    la = log_rows(anchors)
    k = la.shape[0]
    labels = np.argmin(log_dist(la, logs), axis=1)
    n_iter, converged = 0, False
    while n_iter < max_iter:
        shift = 0.0
        for j in range(k):
            idx = np.flatnonzero(labels == j).tolist()
            total = sum(wq[i] for i in idx)
            if total <= 0:
                continue
            for c in range(2):
                m = math.ldexp(float(sum(wq[i] * q[i][c] for i in idx)) / float(total), -LOG_FRAC_BITS)
                shift = max(shift, abs(m - la[j, c]))
                la[j, c] = m
                anchors[j, c] = math.exp(m)
        n_iter += 1
        new = np.argmin(log_dist(la, logs), axis=1)
        if tol > 0 and shift <= tol:
            labels, converged = new, True
            break
        if np.array_equal(new, labels):
            converged = True
            break
        labels = new
    return {"log_anchors": la, "anchors": anchors, "labels": labels, "n_iter": n_iter, "converged": converged}


def log_inertia(log_anchors, wh, sample_weight=None):
    """sum(weight * min_j d(box, anchor j)) in log space (float64; summation order unspecified)."""
    d = log_dist(np.asarray(log_anchors, dtype=np.float64), log_rows(wh)).min(1)
    return float((_weights(sample_weight, d.shape[0]) * d).sum())


# ==== k-means in log space (the fixed point of learned anchors' online clustering) ==============
# Kept apart from the IoU k-means above: distance = squared difference of log sides, update =
# weighted mean of log sides (the weighted geometric mean of widths and of heights).


def log_sq_dist(anchors, wh):
    """(N, k) float64: (log w - log a_w)^2 + (log h - log a_h)^2 for boxes wh (N, 2), anchors (k, 2)."""
    lg = np.log(np.asarray(wh, dtype=np.float64).reshape(-1, 2))
    la = np.log(np.asarray(anchors, dtype=np.float64).reshape(-1, 2))
    d = lg[:, None, :] - la[None, :, :]
    return d[..., 0] ** 2 + d[..., 1] ** 2


def kmeans_log_float(wh, init_anchors, *, max_iter=300, sample_weight=None):
    """The float64 form of :func:`kmeans_log` that the learned-anchor tests compare with (np.log, float
    sums; it agrees with the exact form to rounding). Lloyd's k-means with the squared distance in log space, from the given initial anchors.

    Every box goes to the nearest anchor in log space (lowest anchor index on an exact tie); every
    anchor with boxes of positive total weight moves to their weighted geometric mean (per side);
    an anchor without such boxes stays where it is. Stops when no label changes (or after
    ``max_iter`` updates). Deterministic given ``init_anchors``.

    Returns (anchors (k, 2) float64 in the initial order, labels (N,) int, n_iter).
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.array(init_anchors, dtype=np.float64).reshape(-1, 2)
    wt = _weights(sample_weight, wh.shape[0])
    lg = np.log(wh)
    labels = np.argmin(log_sq_dist(anchors, wh), axis=1)
    n_iter = 0
    for _ in range(max_iter):
        for j in range(anchors.shape[0]):
            m = labels == j
            total = wt[m].sum()
            if total > 0:
                anchors[j] = np.exp((wt[m, None] * lg[m]).sum(0) / total)
        n_iter += 1
        new = np.argmin(log_sq_dist(anchors, wh), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    return anchors, labels, n_iter


def log_soft_assignment(anchors, wh, temperature):
    """(N, k) softmax over anchors of -log_sq_dist / temperature (each row sums to 1)."""
    z = -log_sq_dist(anchors, wh) / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def learned_anchor_gradient(anchors, wh, assignment, delta=None, cluster_lambda=0.0):
    """Closed-form gradient on the log anchors (k, 2) of
    (1/N) sum_ij d_ij |D_ij + a_i - g_j|^2 + lambda/(2N) sum_ij d_ij |a_i - g_j|^2, the assignment
    d held constant: (2/N) sum_j d_kj (D_kj + a_k - g_j) + (lambda/N) sum_j d_kj (a_k - g_j)."""
    lg = np.log(np.asarray(wh, dtype=np.float64).reshape(-1, 2))
    la = np.log(np.asarray(anchors, dtype=np.float64).reshape(-1, 2))
    d = np.asarray(assignment, dtype=np.float64)
    n = lg.shape[0]
    r0 = la[None, :, :] - lg[:, None, :]  # (N, k, 2)
    r = r0 if delta is None else r0 + np.asarray(delta, dtype=np.float64)
    return (2.0 / n) * (d[..., None] * r).sum(0) + (cluster_lambda / n) * (d[..., None] * r0).sum(0)


# ---- search objectives: average best IoU and recall at an IoU threshold -------------------------


def iou_objective(anchors, wh, objective="avg_iou", iou_thr=0.5, iou_weighted=False, sample_weight=None):
    """The IoU objectives of the mutation search, exactly as the core sums them.

    IoU_ij = min(w, aw) * min(h, ah) / ((w * h + aw * ah) - min(w, aw) * min(h, ah)) (corner-aligned,
    float64, this operation order); best_i = max_j IoU_ij. Term z_i: best_i ("avg_iou"), or
    [best_i >= iou_thr] ("recall"; best_i * [best_i >= iou_thr] when iou_weighted). With weights,
    om = w / max(w) and the term is om * z_i. Every term is rounded to a multiple of 2^-50
    (half to even) and the integers are added exactly; the value is the integer total over the
    total weight (n * 2^50, or the sum of round(om * 2^50)), each rounded once to float64.
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    w, h = wh[:, :1], wh[:, 1:]
    aw, ah = anchors[None, :, 0], anchors[None, :, 1]
    inter = np.minimum(w, aw) * np.minimum(h, ah)
    best = (inter / ((w * h + aw * ah) - inter)).max(axis=1)
    return _objective_of_best(best, objective, iou_thr, iou_weighted, sample_weight)


def grid_objective(
    anchors, boxes, image_wh, strides, objective="avg_iou", iou_thr=0.5, iou_weighted=False, sample_weight=None
):
    """The IoU objectives with the anchors placed on the detector's grids, exactly as the core sums them.

    The anchors are sorted by area (ties by width, stable) and split evenly over the levels,
    finest first; best_i is grid_best_iou of box i; the terms and their sum are those of
    iou_objective.
    """
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    order = np.lexsort((np.arange(len(anchors)), anchors[:, 0], anchors[:, 0] * anchors[:, 1]))
    a = anchors[order]
    per = len(a) // len(strides)
    levels = [(float(s), a[i * per : (i + 1) * per]) for i, s in enumerate(strides)]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    img = np.broadcast_to(np.asarray(image_wh, dtype=np.float64), (len(boxes), 2))
    best = grid_best_iou(levels, boxes, img)
    return _objective_of_best(best, objective, iou_thr, iou_weighted, sample_weight)


def _objective_of_best(best, objective, iou_thr, iou_weighted, sample_weight):
    if objective == "recall":
        z = np.where(best >= iou_thr, best if iou_weighted else 1.0, 0.0)
    elif objective == "avg_iou":
        z = best
    else:
        raise ValueError(objective)
    scale = 2.0**50
    if sample_weight is None:
        denom = best.shape[0] * (1 << 50)
    else:
        sw = np.asarray(sample_weight, dtype=np.float64)
        om = sw / sw.max()
        z = om * z
        denom = sum(int(v) for v in np.rint(om * scale))
    total = sum(int(v) for v in np.rint(z * scale))
    return float(total) / float(denom)


def gather_windows(wh, labels, k, lo, hi, key_lo, shift, bins, cap):
    """The chunk kernel's median windows (kmeans/windows.hpp, gather_windows): per slot j = X * k + c
    (a coordinate and a cluster), the distinct values of cluster c along X whose float32 key lies in
    [lo[X, c], hi[X, c]] with their counts, unless more than ``cap`` distinct or 8 * cap + 1024 in all
    (then overflow[X, c] = 1), and
    the count of the cluster's keys from the first key of the histogram bin holding lo up to lo."""
    keys = np.asarray(wh).astype(np.float32).view(np.uint32).astype(np.int64)
    values, counts, slots = [], [], []
    below = np.zeros((2, k), np.int64)
    overflow = np.zeros((2, k), np.int64)
    for X in range(2):
        for c in range(k):
            first, last = int(lo[X, c]), int(hi[X, c])
            if first > last:
                continue
            b = min((first - key_lo[X] if first >= key_lo[X] else 0) >> shift[X], bins - 1)
            start = 0 if b == 0 else key_lo[X] + (b << shift[X])
            mine = labels == c
            below[X, c] = np.count_nonzero(mine & (keys[:, X] >= start) & (keys[:, X] < first))
            inside = np.asarray(wh, np.float64)[mine & (keys[:, X] >= first) & (keys[:, X] <= last), X]
            v, cnt = np.unique(inside, return_counts=True)
            if v.size > cap or inside.size > 8 * cap + 1024:
                overflow[X, c] = 1
                continue
            values.append(v)
            counts.append(cnt)
            slots.append(np.full(v.size, X * k + c))

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return cat(values, np.float64), cat(counts, np.int64), cat(slots, np.int32), below, overflow


def merge_windows(runs):
    """The union of gathered window runs, (values, counts, slots) triples as gather_windows gives
    them (kmeans/windows.hpp, merge_windows): each (slot, value) once with its counts added, in
    (slot, value) order."""
    total = {}
    for values, counts, slots in runs:
        for v, c, j in zip(np.asarray(values).tolist(), np.asarray(counts).tolist(), np.asarray(slots).tolist()):
            total[(j, v)] = total.get((j, v), 0) + c
    keys = sorted(total)
    return (
        np.array([v for _, v in keys], np.float64),
        np.array([total[key] for key in keys], np.int64),
        np.array([j for j, _ in keys], np.int32),
    )


def first_distinct(seq, m):
    """The first m distinct values of seq, in the order of their first occurrence."""
    out, seen = [], set()
    for v in np.asarray(seq).tolist():
        if len(out) == m:
            break
        if v not in seen:
            seen.add(v)
            out.append(v)
    return np.array(out, dtype=np.int64)


def sample_index(gen, n, m):
    """Sorted indices of a uniform random m-subset of range(n), drawn from gen as fastanchor draws
    them (the draws, their number and the generator's state after): a permutation when
    n <= 8 m, else the first m distinct values of uniform draws, found by numpy's unique."""
    if n <= 8 * m:
        return np.sort(gen.permutation(n)[:m])
    chosen = np.empty(0, dtype=np.int64)
    while chosen.size < m:
        need = m - chosen.size
        seq = np.concatenate([chosen, gen.integers(0, n, size=need + need // 8 + 64, dtype=np.int64)])
        first = np.sort(np.unique(seq, return_index=True)[1])
        chosen = seq[first[:m]]
    return np.sort(chosen)
