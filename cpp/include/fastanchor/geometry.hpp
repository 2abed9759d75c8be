// fastanchor: the one written form of each formula. Every kernel computes these expressions in
// this order (the hand-written AVX2 kernels spell the same operations with intrinsics), so that
// values are bit-identical across kernels, threads and numpy.
//
// Exactness contract: IEEE arithmetic, one rounding per operation, no FMA contraction (the build
// passes -ffp-contract=off), the operations in the order written here: numpy's order, so that
// results in double are bit-identical to the numpy reference (tests/reference.py). A kernel that
// computes in float32 (the Lloyd ranking, k-means++'s potential) owes only a proven error bound and
// hands every decision it cannot prove to these double forms (docs/design.md).
#pragma once

#include <algorithm>
#include <numeric>
#include <vector>

namespace fastanchor {

// Intersection of two corner-aligned boxes [0, w] x [0, h].
template <class T>
inline T inter_wh(T w1, T h1, T w2, T h2) {
    return std::min(w1, w2) * std::min(h1, h2);
}

// IoU of two corner-aligned boxes (w, h) with areas a1 = w1 * h1 and a2 = w2 * h2:
//     inter / ((a1 + a2) - inter).
template <class T>
inline T iou_wh(T w1, T h1, T a1, T w2, T h2, T a2) {
    const T inter = inter_wh(w1, h1, w2, h2);
    return inter / ((a1 + a2) - inter);
}

// IoU of two corner boxes (x1, y1, x2, y2) with areas aa, ba: the intersection's sides clamped
// at 0, then inter / ((aa + ba) - inter).
inline double iou_box(double ax1, double ay1, double ax2, double ay2, double aa, double bx1, double by1, double bx2,
                      double by2, double ba) {
    const double iw = std::max(std::min(ax2, bx2) - std::max(ax1, bx1), 0.0);
    const double ih = std::max(std::min(ay2, by2) - std::max(ay1, by1), 0.0);
    const double inter = iw * ih;
    return inter / ((aa + ba) - inter);
}

// The side-ratio metric of YOLOv5's autoanchor for box (w, h) and anchor (aw, ah): the smaller of
// min(r, 1 / r) over the two sides, r = side / anchor side, with numpy's divisions.
inline double ratio_exact(double w, double h, double aw, double ah) {
    const double rw = w / aw, rh = h / ah;
    return std::min(std::min(rw, 1.0 / rw), std::min(rh, 1.0 / rh));
}

// ratio_exact from cached reciprocals (iw = 1 / w, ...), without a division: each product is
// within (1 +- u)^2 of the exact ratio, so the result is within a relative 5u of ratio_exact's
// (fitness/metrics.hpp decides every threshold inside that band with ratio_exact).
inline double ratio_fast(double w, double h, double iw, double ih, double aw, double ah, double iaw, double iah) {
    return std::min(std::min(w * iaw, aw * iw), std::min(h * iah, ah * ih));
}

// Indices of k anchors (sides w, areas a) by area ascending, ties by width, then by index (a
// stable sort): the order every result's anchors are returned in.
template <class Sides>
std::vector<int> area_order(const Sides& w, const Sides& a, int k) {
    std::vector<int> order(k);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) {
        if (a[x] != a[y]) return a[x] < a[y];
        return w[x] < w[y];
    });
    return order;
}

}  // namespace fastanchor
