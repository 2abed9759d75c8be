// fastanchor: corner boxes (x1, y1, x2, y2): their IoU matrix, SSD prior matching and the
// recall of anchors placed on a detector's grids.
//
// Exactness contract (as iou.hpp): the IoU of two corner boxes is
//     iw = max(min(x2a, x2b) - max(x1a, x1b), 0);  ih = (same for y)
//     inter = iw * ih;  area = (x2 - x1) * (y2 - y1);  iou = inter / ((area_a + area_b) - inter)
// in IEEE double, one rounding per operation, no FMA contraction (-ffp-contract=off): the
// operations of the numpy reference (tests/reference.py: box_iou), so values are bit-identical.
// Every decision (argmax, threshold) is made on those rounded values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <vector>

#include "common.hpp"

namespace fastanchor {

// Corner boxes as structure of arrays; `a` caches the areas (x2 - x1) * (y2 - y1).
struct CornerSet {
    std::vector<double> x1, y1, x2, y2, a;

    CornerSet() = default;
    explicit CornerSet(index_t n) : x1(n), y1(n), x2(n), y2(n), a(n) {}

    index_t size() const { return static_cast<index_t>(x1.size()); }

    void set(index_t i, double bx1, double by1, double bx2, double by2) {
        x1[i] = bx1;
        y1[i] = by1;
        x2[i] = bx2;
        y2[i] = by2;
        a[i] = (bx2 - bx1) * (by2 - by1);
    }

    // From N rows (x1, y1, x2, y2), row-major.
    template <class T>
    static CornerSet from_rows(const T* data, index_t n) {
        CornerSet s(n);
        for (index_t i = 0; i < n; ++i) {
            const T* r = data + 4 * i;
            s.set(i, static_cast<double>(r[0]), static_cast<double>(r[1]), static_cast<double>(r[2]),
                  static_cast<double>(r[3]));
        }
        return s;
    }
};

inline double iou_box(double ax1, double ay1, double ax2, double ay2, double aa, double bx1, double by1, double bx2,
                      double by2, double ba) {
    const double iw = std::max(std::min(ax2, bx2) - std::max(ax1, bx1), 0.0);
    const double ih = std::max(std::min(ay2, by2) - std::max(ay1, by1), 0.0);
    const double inter = iw * ih;
    return inter / ((aa + ba) - inter);
}

namespace detail {

// out[j] = IoU of box (x1, y1, x2, y2, a) with boxes j of s, j in [0, m); vectorized over j.
template <class Out>
FASTANCHOR_CLONES void box_iou_row(double x1, double y1, double x2, double y2, double a,
                                   const double* __restrict bx1, const double* __restrict by1,
                                   const double* __restrict bx2, const double* __restrict by2,
                                   const double* __restrict ba, index_t m, Out* __restrict out) {
#pragma omp simd
    for (index_t j = 0; j < m; ++j) {
        const double iw = std::max(std::min(x2, bx2[j]) - std::max(x1, bx1[j]), 0.0);
        const double ih = std::max(std::min(y2, by2[j]) - std::max(y1, by1[j]), 0.0);
        const double inter = iw * ih;
        out[j] = static_cast<Out>(inter / ((a + ba[j]) - inter));
    }
}

}  // namespace detail

// The N x M IoU matrix (row-major) of s1 against s2, rows in fixed chunks of about kChunk cells.
template <class Out>
void box_iou_matrix(const CornerSet& s1, const CornerSet& s2, Out* out, int n_threads) {
    const index_t n = s1.size(), m = s2.size();
    if (n == 0 || m == 0) return;
    const index_t rows = std::max<index_t>(1, kChunk / m);
    const index_t nc = (n + rows - 1) / rows;
    const int nt = threads_for(n_threads, nc);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (index_t c = 0; c < nc; ++c) {
        const index_t e = std::min(n, (c + 1) * rows);
        for (index_t i = c * rows; i < e; ++i) {
            detail::box_iou_row<Out>(s1.x1[i], s1.y1[i], s1.x2[i], s1.y2[i], s1.a[i], s2.x1.data(), s2.y1.data(),
                                     s2.x2.data(), s2.y2.data(), s2.a.data(), m, out + i * m);
        }
    }
    (void)nt;
}

// ---- SSD prior matching ------------------------------------------------------------------------
//
// For one image with G ground-truth boxes and P priors (IoU matrix iou[g][p]):
//   1. Forced matches (greedy bipartite): min(G, P) rounds; each round takes the largest IoU
//      among the GT boxes and priors not yet taken, the lowest GT index and then the lowest
//      prior index on exact ties, and matches that prior to that GT. Every GT gets a prior of
//      its own (when P >= G), even with IoU 0.
//   2. Every other prior takes its best GT (the lowest GT index on ties) when that IoU is
//      >= threshold, else -1 (background).

// Images whose G x P IoU matrix has at most this many cells keep it for the greedy rounds
// (32 MB per thread); larger ones recompute a GT's row when its best prior is taken.
inline constexpr index_t kMaxStoredCells = index_t{1} << 22;

struct MatchScratch {
    std::vector<double> mat, buf, best_iou;
    std::vector<std::int32_t> best_gt;
    std::vector<char> taken;
    std::vector<double> g_iou;
    std::vector<std::int32_t> g_prior;
    std::vector<char> g_done;
    std::vector<double> bmax;
};

namespace detail {

// Index of the first maximum of x[0, n) (n >= 1). Blocks of 64 are reduced in 8 independent
// lanes, which the compiler vectorizes (an OpenMP max reduction did not vectorize with GCC and
// was 6x slower); the first block whose maximum is strictly the largest holds the first maximum,
// found there by a scan.
FASTANCHOR_CLONES inline index_t first_argmax(const double* __restrict x, index_t n, double* best) {
    constexpr index_t kB = 64;
    index_t bb = 0, b = 0;
    double bm = x[0];
    for (; b + kB <= n; b += kB) {
        double m[8];
        for (int l = 0; l < 8; ++l) m[l] = x[b + l];
        for (index_t j = 8; j < kB; j += 8) {
            for (int l = 0; l < 8; ++l) m[l] = m[l] > x[b + j + l] ? m[l] : x[b + j + l];
        }
        double r = m[0];
        for (int l = 1; l < 8; ++l) r = r > m[l] ? r : m[l];
        if (r > bm) {
            bm = r;
            bb = b;
        }
    }
    for (index_t j = b; j < n; ++j) {
        if (x[j] > bm) {
            bm = x[j];
            bb = j;
        }
    }
    index_t j = bb;
    while (x[j] != bm) ++j;
    *best = bm;
    return j;
}

// One GT row of the matching: row[j] = IoU of the GT box with prior j, the priors' best GT so
// far updated (a strictly higher IoU replaces it: the lowest GT index wins ties), and the row's
// first maximum returned (its value in *best). One pass, in blocks of kSkipBlock priors:
//  - a block that the GT box does not overlap at all (every intersection 0, so every IoU is
//    0 / union = 0 exactly) skips the divisions, which bound the pass (SSD priors are laid out
//    cell by cell, so a box overlaps few blocks of the fine layers);
//  - each block's maximum is kept in bmax, so the first maximum of the row is found in the first
//    block whose maximum is the row's, without a second pass over the row.
inline constexpr index_t kSkipBlock = 32;

FASTANCHOR_CLONES inline index_t match_row(double x1, double y1, double x2, double y2, double a,
                                           const CornerSet& pri, double* __restrict row,
                                           double* __restrict best_iou, std::int32_t* __restrict best_gt,
                                           std::int32_t g, double* __restrict bmax, double* best) {
    constexpr index_t B = kSkipBlock;
    const index_t m = pri.size();
    const double* __restrict bx1 = pri.x1.data();
    const double* __restrict by1 = pri.y1.data();
    const double* __restrict bx2 = pri.x2.data();
    const double* __restrict by2 = pri.y2.data();
    const double* __restrict ba = pri.a.data();
    // Whole blocks (a constant trip count: GCC vectorizes them far better), then the rest.
    index_t b = 0, nb = 0;
    for (; b + B <= m; b += B, ++nb) {
        constexpr index_t n = B;
        double inter[B];
        double any = 0.0;  // the block's largest intersection
#pragma omp simd reduction(max : any)
        for (index_t l = 0; l < n; ++l) {
            const index_t j = b + l;
            const double iw = std::max(std::min(x2, bx2[j]) - std::max(x1, bx1[j]), 0.0);
            const double ih = std::max(std::min(y2, by2[j]) - std::max(y1, by1[j]), 0.0);
            inter[l] = iw * ih;
            any = std::max(any, inter[l]);
        }
        double mx = 0.0;
        if (any > 0.0) {
#pragma omp simd reduction(max : mx)
            for (index_t l = 0; l < n; ++l) {
                const index_t j = b + l;
                const double v = inter[l] / ((a + ba[j]) - inter[l]);
                row[j] = v;
                mx = std::max(mx, v);
                const bool better = v > best_iou[j];
                best_iou[j] = better ? v : best_iou[j];
                best_gt[j] = better ? g : best_gt[j];
            }
        } else {
#pragma omp simd
            for (index_t l = 0; l < n; ++l) {
                const index_t j = b + l;
                row[j] = 0.0;
                const bool better = 0.0 > best_iou[j];
                best_iou[j] = better ? 0.0 : best_iou[j];
                best_gt[j] = better ? g : best_gt[j];
            }
        }
        bmax[nb] = mx;
    }
    if (b < m) {
        double mx = 0.0;
        for (index_t j = b; j < m; ++j) {
            const double iw = std::max(std::min(x2, bx2[j]) - std::max(x1, bx1[j]), 0.0);
            const double ih = std::max(std::min(y2, by2[j]) - std::max(y1, by1[j]), 0.0);
            const double inter = iw * ih;
            const double v = inter / ((a + ba[j]) - inter);
            row[j] = v;
            mx = std::max(mx, v);
            const bool better = v > best_iou[j];
            best_iou[j] = better ? v : best_iou[j];
            best_gt[j] = better ? g : best_gt[j];
        }
        bmax[nb++] = mx;
    }
    index_t k = 0;
    for (index_t c = 1; c < nb; ++c) k = bmax[c] > bmax[k] ? c : k;
    index_t j = k * B;
    while (row[j] != bmax[k]) ++j;
    *best = bmax[k];
    return j;
}

// Best prior of GT box g among the priors not taken (lowest index on ties), in buf's storage.
inline std::int32_t best_free_prior(const CornerSet& pri, const double* g, double ga, const std::vector<char>& taken,
                                    double* buf, double* best) {
    const index_t p = pri.size();
    box_iou_row<double>(g[0], g[1], g[2], g[3], ga, pri.x1.data(), pri.y1.data(), pri.x2.data(), pri.y2.data(),
                        pri.a.data(), p, buf);
    const char* t = taken.data();
#pragma omp simd
    for (index_t j = 0; j < p; ++j) buf[j] = t[j] ? -1.0 : buf[j];
    return static_cast<std::int32_t>(first_argmax(buf, p, best));
}

}  // namespace detail

// Matches of one image: gt holds G rows (x1, y1, x2, y2); out receives P GT indices or -1.
inline void match_image(const CornerSet& pri, const double* gt, index_t G, double threshold, std::int32_t* out,
                        MatchScratch& s, index_t max_stored_cells = kMaxStoredCells) {
    const index_t P = pri.size();
    std::fill(out, out + P, -1);
    if (G == 0 || P == 0) return;
    s.buf.resize(P);
    s.bmax.resize(P / detail::kSkipBlock + 1);
    s.best_iou.assign(P, -1.0);
    s.best_gt.assign(P, -1);
    s.taken.assign(P, 0);
    s.g_iou.resize(G);
    s.g_prior.resize(G);
    s.g_done.assign(G, 0);
    const bool stored = G * P <= max_stored_cells;
    if (stored) s.mat.resize(G * P);
    std::vector<double> ga(G);
    for (index_t g = 0; g < G; ++g) {
        const double* b = gt + 4 * g;
        ga[g] = (b[2] - b[0]) * (b[3] - b[1]);
        double* row = stored ? s.mat.data() + g * P : s.buf.data();
        // Best prior of this GT: the first maximum.
        s.g_prior[g] = static_cast<std::int32_t>(detail::match_row(b[0], b[1], b[2], b[3], ga[g], pri, row,
                                                                   s.best_iou.data(), s.best_gt.data(),
                                                                   static_cast<std::int32_t>(g), s.bmax.data(),
                                                                   &s.g_iou[g]));
    }
    // 1. Greedy forced matches. Invariant: g_prior[g] is GT g's best prior among those not taken
    // (with a stored matrix, the taken priors' cells of the open GT rows hold -1).
    const index_t rounds = std::min(G, P);
    for (index_t r = 0; r < rounds; ++r) {
        index_t gs = -1;
        double gv = -1.0;
        for (index_t g = 0; g < G; ++g) {
            if (!s.g_done[g] && s.g_iou[g] > gv) {
                gv = s.g_iou[g];
                gs = g;
            }
        }
        const std::int32_t p = s.g_prior[gs];
        out[p] = static_cast<std::int32_t>(gs);
        s.taken[p] = 1;
        s.g_done[gs] = 1;
        if (r + 1 == rounds) break;
        for (index_t g = 0; g < G; ++g) {
            if (s.g_done[g]) continue;
            if (stored) {
                double* row = s.mat.data() + g * P;
                row[p] = -1.0;
                if (s.g_prior[g] == p) s.g_prior[g] = static_cast<std::int32_t>(detail::first_argmax(row, P, &s.g_iou[g]));
            } else if (s.g_prior[g] == p) {
                s.g_prior[g] = detail::best_free_prior(pri, gt + 4 * g, ga[g], s.taken, s.buf.data(), &s.g_iou[g]);
            }
        }
    }
    // 2. The other priors: their best GT when it reaches the threshold.
    for (index_t j = 0; j < P; ++j) {
        if (!s.taken[j]) out[j] = s.best_iou[j] >= threshold ? s.best_gt[j] : -1;
    }
}

// Matches of B images: image b has gt rows [offsets[b], offsets[b + 1]) of gt; out is B x P.
// Images in parallel (each independent: results do not depend on the thread count); a batch of
// fewer than kMatchSerialCells IoU cells runs on the calling thread, where starting the team
// would cost more than the work. An allocation failure inside the parallel loop is caught there
// and rethrown afterwards.
inline constexpr index_t kMatchSerialCells = index_t{1} << 16;

inline void match_batch(const CornerSet& pri, const double* gt, const index_t* offsets, index_t n_images,
                        double threshold, std::int32_t* out, int n_threads,
                        index_t max_stored_cells = kMaxStoredCells) {
    const index_t P = pri.size();
    const index_t cells = (n_images > 0 ? offsets[n_images] - offsets[0] : 0) * P;
    const int nt = cells < kMatchSerialCells ? 1 : threads_for(n_threads, n_images);
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        MatchScratch s;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (index_t b = 0; b < n_images; ++b) {
            try {
                match_image(pri, gt + 4 * offsets[b], offsets[b + 1] - offsets[b], threshold, out + b * P, s,
                            max_stored_cells);
            } catch (...) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
                failed = 1;
            }
        }
    }
    (void)nt;
    if (failed) throw std::bad_alloc();
}

// ---- recall of anchors on a detector's grids ---------------------------------------------------
//
// Level l has stride s and anchors (w, h). An image W x H has ceil(W / s) x ceil(H / s) cells,
// the cell (i, j) centred at ((i + 0.5) * s, (j + 0.5) * s); the anchor placed there is the corner
// box (cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h). The IoU of a box with such an
// anchor only grows as the centres get closer in x and in y separately (the overlap in x is a
// non-increasing function of |dx|, the same in y, and IoU increases with the overlap), so the
// best cell is among the (at most) two columns and two rows nearest the box centre; those four
// cells are evaluated and the best IoU kept.

struct GridLevel {
    double stride;
    std::vector<double> w, h;
};

inline double cell_center(double stride, index_t i) { return (static_cast<double>(i) + 0.5) * stride; }

// Best IoU of every box with any anchor of any level on its image's grids.
inline void grid_best_iou(const CornerSet& boxes, const double* image_wh, const std::vector<GridLevel>& levels,
                          double* out, int n_threads) {
    for_each_chunk(boxes.size(), n_threads, [&](index_t, index_t b, index_t e) {
        for (index_t i = b; i < e; ++i) {
            const double W = image_wh[2 * i], H = image_wh[2 * i + 1];
            const double cx = 0.5 * (boxes.x1[i] + boxes.x2[i]), cy = 0.5 * (boxes.y1[i] + boxes.y2[i]);
            double best = 0.0;
            for (const GridLevel& L : levels) {
                const double s = L.stride;
                const index_t nx = std::max<index_t>(1, static_cast<index_t>(std::ceil(W / s)));
                const index_t ny = std::max<index_t>(1, static_cast<index_t>(std::ceil(H / s)));
                const double tx = std::floor(cx / s - 0.5), ty = std::floor(cy / s - 0.5);
                index_t cols[2], rows[2];
                for (int d = 0; d < 2; ++d) {
                    const double fx = std::min(std::max(tx + d, 0.0), static_cast<double>(nx - 1));
                    const double fy = std::min(std::max(ty + d, 0.0), static_cast<double>(ny - 1));
                    cols[d] = static_cast<index_t>(fx);
                    rows[d] = static_cast<index_t>(fy);
                }
                const index_t k = static_cast<index_t>(L.w.size());
                for (index_t a = 0; a < k; ++a) {
                    const double hw = 0.5 * L.w[a], hh = 0.5 * L.h[a];
                    for (int dx = 0; dx < 2; ++dx) {
                        const double ax = cell_center(s, cols[dx]);
                        const double ax1 = ax - hw, ax2 = ax + hw;
                        for (int dy = 0; dy < 2; ++dy) {
                            const double ay = cell_center(s, rows[dy]);
                            const double ay1 = ay - hh, ay2 = ay + hh;
                            const double aa = (ax2 - ax1) * (ay2 - ay1);
                            const double v = iou_box(boxes.x1[i], boxes.y1[i], boxes.x2[i], boxes.y2[i], boxes.a[i],
                                                     ax1, ay1, ax2, ay2, aa);
                            best = std::max(best, v);
                        }
                    }
                }
            }
            out[i] = best;
        }
    });
}

}  // namespace fastanchor
