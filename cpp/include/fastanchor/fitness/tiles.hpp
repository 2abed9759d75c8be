// fastanchor: the fitness search's layout (TiledBoxes: boxes in Z-order of (log w, log h), cut
// into tiles with bounding rectangles) and the batch kernel that scores candidate anchor sets
// with per-tile pruning (fitness_batch), bit for bit the report's fitness (metrics.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common.hpp"
#include "../parallel.hpp"
#include "../sort.hpp"
#include "metrics.hpp"

namespace fastanchor {

// ---------------------------------------------------------------------------------------------
// The search's layout: the boxes in Z-order of (log w, log h) within blocks of 2^16 rows, cut into
// tiles of 64 consecutive boxes, each with its bounding rectangle. For one candidate anchor set,
// the ratio of any box of a tile to anchor j lies between
//     L_j = min(w0 / aw, aw / w1, h0 / ah, ah / h1)   (the rectangle's farthest corner) and
//     U_j = min(1, w1 / aw, aw / w0, 1, h1 / ah, ah / h0)   (its nearest point),
// so anchor j can be skipped in the tile when U_j < max_j' L_j' (another anchor beats it for
// every box) or U_j <= t (it never passes the threshold). On COCO-like data about 1.1 anchors per
// tile remain of 9. Bounds are computed with the cached reciprocals and widened by 1e-12, far
// beyond their rounding, so a skipped anchor is never the maximum of the fast ratios: the best
// ratio of every box is the same value the full evaluation gets, bit for bit.
//
// The layout keeps the boxes' sides in their own precision (float32 rows as floats: 8 bytes per
// box, float64 as doubles: 16) in its order, plus the scaled weights when weighted, and 1 byte per
// box of tile bounds. A kernel visiting a tile gathers its widths, heights, reciprocals and
// weights (TileBoxes) by the operations the report kernel computes them with on rows (RowBoxes),
// so every value is the same bit for bit. A prepared copy of doubles and reciprocals took 32
// bytes per box (and the sort 20 more while it was built); the reciprocals cost two divisions per
// box and pass instead, which the smaller stream of rows pays back.

// One tile's boxes, gathered: m boxes (the rest of the arrays unset; om only when weighted).
struct TileBoxes {
    int m = 0;
    alignas(64) double w[fitdetail::kTile];
    alignas(64) double h[fitdetail::kTile];
    alignas(64) double iw[fitdetail::kTile];
    alignas(64) double ih[fitdetail::kTile];
    alignas(64) double om[fitdetail::kTile];
};

struct TiledBoxes {
    // Rows per block of the sort: a whole number of tiles, small enough that a block's keys and
    // rows stay in cache while it is sorted and gathered.
    static constexpr index_t kSortBlock = index_t{1} << 16;
    static_assert(kSortBlock % fitdetail::kTile == 0, "a sort block holds whole tiles");

    index_t n = 0;
    index_t n_tiles = 0;
    // The sides (w, h) in the layout's order: one of the two is filled, in the input's precision.
    std::vector<float> rows32;
    std::vector<double> rows64;
    // The weights scaled to a largest weight of 1, in the layout's order (empty: unit weights),
    // and the fixed-point total weight: sum of round(om * 2^50) (n * 2^50 for unit weights).
    std::vector<double> om;
    int128_t denom = 0;
    // Tile bounds: smallest and largest width and height, and their reciprocals.
    std::vector<double> w0, w1, h0, h1, iw0, iw1, ih0, ih1;

    index_t size() const { return n; }
    bool weighted() const { return !om.empty(); }
    // Bytes the layout holds.
    std::size_t nbytes() const {
        return rows32.size() * sizeof(float) + (rows64.size() + om.size()) * sizeof(double) +
               static_cast<std::size_t>(n_tiles) * 8 * sizeof(double);
    }

    // The layout of n rows wh (float or double) with optional weights (n values, null: unit),
    // scaled by `top`: their largest when 0, else the largest weight of all the chunks a chunk's
    // layout belongs to (then its om and denom are that chunk's share of the whole one's).
    template <class Row>
    static TiledBoxes make(const Row* wh, const double* weights, index_t n, int n_threads = 1, double top = 0.0) {
        TiledBoxes t;
        t.n = n;
        if (!weights) top = 1.0;
        else if (!(top > 0.0)) top = fitdetail::largest_weight(weights, n, n_threads);
        t.denom = weights ? fitdetail::weight_total(weights, n, top, n_threads) : unit_denom(n);
        // Z-order key of 10-bit cells over the data's range of (log w, log h); the log is the
        // double's exponent and top mantissa bits (piecewise linear in log2, monotone). Only the
        // speed depends on this order: every sum is exact in any order.
        const index_t nc = n_chunks(n);
        std::vector<std::uint32_t> lo_w(nc, ~0u), hi_w(nc, 0u), lo_h(nc, ~0u), hi_h(nc, 0u);
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) {
                const std::uint32_t a = log_bits(wh[2 * i]), d = log_bits(wh[2 * i + 1]);
                lo_w[c] = std::min(lo_w[c], a);
                hi_w[c] = std::max(hi_w[c], a);
                lo_h[c] = std::min(lo_h[c], d);
                hi_h[c] = std::max(hi_h[c], d);
            }
        });
        const std::uint32_t w0 = *std::min_element(lo_w.begin(), lo_w.end());
        const std::uint32_t w1 = *std::max_element(hi_w.begin(), hi_w.end());
        const std::uint32_t h0 = *std::min_element(lo_h.begin(), lo_h.end());
        const std::uint32_t h1 = *std::max_element(hi_h.begin(), hi_h.end());
        const double sw = w1 > w0 ? 1023.0 / (w1 - w0) : 0.0, sh = h1 > h0 ? 1023.0 / (h1 - h0) : 0.0;
        std::vector<Row>& out = t.rows_of(static_cast<const Row*>(nullptr));
        out.resize(2 * static_cast<std::size_t>(n));
        if (weights) t.om.resize(static_cast<std::size_t>(n));
        // A stable sort of the 20-bit keys within each block (sort.hpp skips the digit all keys
        // share), the blocks on the threads: a block's keys, sort and rows stay in cache.
        const index_t blocks = (n + kSortBlock - 1) / kSortBlock;
        parallel_for(blocks, n_threads, [&](index_t q) {
            const index_t b = q * kSortBlock, e = std::min(n, b + kSortBlock);
            std::vector<std::uint32_t> key(static_cast<std::size_t>(e - b));
            for (index_t i = b; i < e; ++i) {
                const auto qw = static_cast<std::uint32_t>(std::min(1023.0, (log_bits(wh[2 * i]) - w0) * sw));
                const auto qh = static_cast<std::uint32_t>(std::min(1023.0, (log_bits(wh[2 * i + 1]) - h0) * sh));
                key[i - b] = interleave(qw) | (interleave(qh) << 1);
            }
            const std::vector<std::uint16_t> local = detail::radix_argsort<std::uint16_t>(key, e - b);
            for (index_t i = b; i < e; ++i) {
                const index_t s = b + local[i - b];
                out[2 * i] = wh[2 * s];
                out[2 * i + 1] = wh[2 * s + 1];
                if (weights) t.om[i] = weights[s] / top;
            }
        });
        t.bound_tiles(n_threads);
        return t;
    }

    // A layout that is cheaper to build, for boxes scored in a few passes only (a chunk of the
    // chunked search, laid out again in every pass): one counting sort of the rows by a 12-bit
    // Z-order key (6 bits of each side's log over the rows' range), in row order within a key.
    // Its tiles are looser than make()'s, so the pruning skips a little less; the sums are the
    // same, exact in any order. Unit weights.
    static TiledBoxes make_bucketed(const double* wh, index_t n) {
        TiledBoxes t;
        BucketScratch scratch;
        t.rebucket(wh, n, scratch);
        return t;
    }

    // The sort keys and bucket starts of make_bucketed, kept by a caller that lays out many
    // chunks in turn (with rebucket) so that no pass allocates them again.
    struct BucketScratch {
        std::vector<std::uint16_t> key;
        std::vector<index_t> start;
    };

    // This layout made again as make_bucketed(wh, n) makes it, in the storage it already holds
    // (a Dask worker returns freed memory to the system at once, so a buffer allocated per
    // chunk is faulted in again every time).
    void rebucket(const double* wh, index_t n_rows, BucketScratch& scratch) {
        constexpr int kCellBits = 6, kCells = 1 << kCellBits, kBuckets = kCells * kCells;
        n = n_rows;
        denom = unit_denom(n_rows);
        rows32.clear();
        om.clear();
        std::uint32_t key_w0 = ~0u, key_w1 = 0u, key_h0 = ~0u, key_h1 = 0u;
        for (index_t i = 0; i < n_rows; ++i) {
            const std::uint32_t a = log_bits(wh[2 * i]), b = log_bits(wh[2 * i + 1]);
            key_w0 = std::min(key_w0, a);
            key_w1 = std::max(key_w1, a);
            key_h0 = std::min(key_h0, b);
            key_h1 = std::max(key_h1, b);
        }
        const double sw = key_w1 > key_w0 ? (kCells - 1.0) / (key_w1 - key_w0) : 0.0;
        const double sh = key_h1 > key_h0 ? (kCells - 1.0) / (key_h1 - key_h0) : 0.0;
        std::vector<std::uint16_t>& key = scratch.key;
        std::vector<index_t>& start = scratch.start;
        key.resize(static_cast<std::size_t>(n_rows));
        start.assign(kBuckets + 1, 0);
        for (index_t i = 0; i < n_rows; ++i) {
            const auto qw = static_cast<std::uint32_t>((log_bits(wh[2 * i]) - key_w0) * sw + 0.5);
            const auto qh = static_cast<std::uint32_t>((log_bits(wh[2 * i + 1]) - key_h0) * sh + 0.5);
            key[i] = static_cast<std::uint16_t>(interleave(qw) | (interleave(qh) << 1));
            ++start[key[i] + 1];
        }
        for (int b = 0; b < kBuckets; ++b) start[b + 1] += start[b];
        rows64.resize(2 * static_cast<std::size_t>(n_rows));
        for (index_t i = 0; i < n_rows; ++i) {
            const index_t d = start[key[i]]++;
            rows64[2 * d] = wh[2 * i];
            rows64[2 * d + 1] = wh[2 * i + 1];
        }
        bound_tiles(1);
    }

    // Gathers tile q's boxes into out: sides always, reciprocals when Recip, and the scaled
    // weights when weighted (out.om is left unset for unit weights).
    template <bool Recip>
    __attribute__((always_inline)) void gather(index_t q, TileBoxes& out) const {
        const index_t b = q * fitdetail::kTile;
        const int m = static_cast<int>(std::min<index_t>(fitdetail::kTile, n - b));
        out.m = m;
        if (!rows32.empty()) {
            const float* r = rows32.data() + 2 * b;
            for (int l = 0; l < m; ++l) {
                out.w[l] = r[2 * l];
                out.h[l] = r[2 * l + 1];
            }
        } else {
            const double* r = rows64.data() + 2 * b;
            for (int l = 0; l < m; ++l) {
                out.w[l] = r[2 * l];
                out.h[l] = r[2 * l + 1];
            }
        }
        if (Recip) {
            for (int l = 0; l < m; ++l) {
                out.iw[l] = 1.0 / out.w[l];
                out.ih[l] = 1.0 / out.h[l];
            }
        }
        if (!om.empty())
            for (int l = 0; l < m; ++l) out.om[l] = om[b + l];
    }

private:
    // The fixed-point total weight of n boxes of unit weight.
    static int128_t unit_denom(index_t n) { return static_cast<int128_t>(n) * (INT64_C(1) << 50); }

    std::vector<float>& rows_of(const float*) { return rows32; }
    std::vector<double>& rows_of(const double*) { return rows64; }

    // The tiles of 64 consecutive boxes and their bounding rectangles.
    void bound_tiles(int n_threads) {
        n_tiles = (n + fitdetail::kTile - 1) / fitdetail::kTile;
        for (auto* v : {&w0, &w1, &h0, &h1, &iw0, &iw1, &ih0, &ih1}) v->resize(n_tiles);
        parallel_for(n_chunks(n), n_threads, [&](index_t c) {
            TileBoxes tb;
            const index_t q_end = std::min(n_tiles, (c + 1) * fitdetail::kTilesPerChunk);
            for (index_t q = c * fitdetail::kTilesPerChunk; q < q_end; ++q) {
                gather<false>(q, tb);
                double a0 = tb.w[0], a1 = tb.w[0], c0 = tb.h[0], c1 = tb.h[0];
                for (int i = 1; i < tb.m; ++i) {
                    a0 = std::min(a0, tb.w[i]);
                    a1 = std::max(a1, tb.w[i]);
                    c0 = std::min(c0, tb.h[i]);
                    c1 = std::max(c1, tb.h[i]);
                }
                w0[q] = a0;
                w1[q] = a1;
                h0[q] = c0;
                h1[q] = c1;
                iw0[q] = 1.0 / a0;
                iw1[q] = 1.0 / a1;
                ih0[q] = 1.0 / c0;
                ih1[q] = 1.0 / c1;
            }
        });
    }
    // The high 32 bits of a positive double: 11 exponent and 20 mantissa bits, monotone.
    static std::uint32_t log_bits(double x) {
        std::uint64_t u;
        std::memcpy(&u, &x, sizeof u);
        return static_cast<std::uint32_t>(u >> 32);
    }

    // The bits of a 10-bit value spread to the even positions of 20 bits.
    static std::uint32_t interleave(std::uint32_t x) {
        x = (x | (x << 8)) & 0x00FF00FFu;
        x = (x | (x << 4)) & 0x0F0F0F0Fu;
        x = (x | (x << 2)) & 0x33333333u;
        x = (x | (x << 1)) & 0x55555555u;
        return x;
    }
};

namespace fitdetail {

// Pruning masks of one candidate for the tiles [q0, q1) of a chunk: bit j of mask[q] is set when
// anchor j may hold the best ratio of some box of tile q above the threshold band's floor.
//
// sure[q] is set when every box of tile q has its best ratio above the band's ceiling (the
// largest lower bound exceeds it), so no box of the tile needs a threshold check.
FASTANCHOR_CLONES inline void tile_masks(const TiledBoxes& T, index_t q0, index_t q1, const RatioAnchors& A,
                                         const Threshold& th, std::uint64_t* mask, std::uint8_t* sure) {
    const int k = A.k;
    const int nq = static_cast<int>(q1 - q0);
    const double *aw = A.w.data(), *ah = A.h.data(), *aiw = A.iw.data(), *aih = A.ih.data();
    const double lo = th.lo;
    double M[kTilesPerChunk];
    const double *w0 = T.w0.data() + q0, *w1 = T.w1.data() + q0, *h0 = T.h0.data() + q0, *h1 = T.h1.data() + q0;
    const double *iw0 = T.iw0.data() + q0, *iw1 = T.iw1.data() + q0, *ih0 = T.ih0.data() + q0, *ih1 = T.ih1.data() + q0;
    for (int q = 0; q < nq; ++q) {
        M[q] = 0.0;
        mask[q] = 0;
    }
    for (int j = 0; j < k; ++j) {
        const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j];
        for (int q = 0; q < nq; ++q) {
            const double L = std::min(std::min(w0[q] * iwj, awj * iw1[q]), std::min(h0[q] * ihj, ahj * ih1[q]));
            M[q] = L > M[q] ? L : M[q];
        }
    }
    for (int q = 0; q < nq; ++q) {
        M[q] *= 1.0 - kBand;
        sure[q] = M[q] > th.t + th.band ? 1 : 0;
    }
    for (int j = 0; j < k; ++j) {
        const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j];
        const std::uint64_t bit = std::uint64_t{1} << j;
        for (int q = 0; q < nq; ++q) {
            const double cw = std::min(1.0, std::min(w1[q] * iwj, awj * iw0[q]));
            const double ch = std::min(1.0, std::min(h1[q] * ihj, ahj * ih0[q]));
            const double U = std::min(cw, ch) * (1.0 + kBand);
            mask[q] |= (U >= M[q] && U > lo) ? bit : std::uint64_t{0};
        }
    }
}

// Fixed-point fitness sums of `count` candidates over the tiles [q0, q1) of one chunk: each tile
// is loaded once and scored against every candidate (its active anchors only) while in cache.
template <bool Weighted>
FASTANCHOR_CLONES void tiled_sums(const TiledBoxes& T, index_t q0, index_t q1, const RatioAnchors* cands, int count,
                                  const Threshold& th, const std::uint64_t* masks, const std::uint8_t* sures,
                                  std::int64_t* acc /* count x 16 */, std::int64_t* extra /* count */) {
    const double t = th.t, band = th.band;
    const int nq = static_cast<int>(q1 - q0);
    TileBoxes tb;
    for (int q = 0; q < nq; ++q) {
        T.gather<true>(q0 + q, tb);
        const index_t m = tb.m;
        const double *w = tb.w, *h = tb.h, *iw = tb.iw, *ih = tb.ih, *om = tb.om;
        for (int s = 0; s < count; ++s) {
            std::uint64_t mk = masks[static_cast<std::size_t>(s) * kTilesPerChunk + q];
            if (mk == 0) continue;
            const RatioAnchors& A = cands[s];
            const double *aw = A.w.data(), *ah = A.h.data(), *aiw = A.iw.data(), *aih = A.ih.data();
            std::int64_t* a = acc + static_cast<std::size_t>(s) * kLanes;
            const bool sure = sures[static_cast<std::size_t>(s) * kTilesPerChunk + q] != 0;
            if (m == kTile && sure && (mk & (mk - 1)) == 0) {
                // The common case: one anchor holds every box's best ratio, all above the band.
                const int j = __builtin_ctzll(mk);
                const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j];
                for (int l0 = 0; l0 < kTile; l0 += kLanes) {
                    for (int l = 0; l < kLanes; ++l) {
                        const int i = l0 + l;
                        const double x = ratio_fast(w[i], h[i], iw[i], ih[i], awj, ahj, iwj, ihj);
                        a[l] += fix_round((Weighted ? om[i] * x : x) * kFixScale);
                    }
                }
            } else if (m == kTile) {
                double best[kTile];
                {
                    const int j = __builtin_ctzll(mk);
                    mk &= mk - 1;
                    const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j];
                    for (int l = 0; l < kTile; ++l) best[l] = ratio_fast(w[l], h[l], iw[l], ih[l], awj, ahj, iwj, ihj);
                }
                while (mk != 0) {
                    const int j = __builtin_ctzll(mk);
                    mk &= mk - 1;
                    const double awj = aw[j], ahj = ah[j], iwj = aiw[j], ihj = aih[j];
                    for (int l = 0; l < kTile; ++l) {
                        const double x = ratio_fast(w[l], h[l], iw[l], ih[l], awj, ahj, iwj, ihj);
                        best[l] = x > best[l] ? x : best[l];
                    }
                }
                double above[kTile];
                int n_amb = 0;
                for (int l = 0; l < kTile; ++l) {
                    above[l] = best[l] > t ? 1.0 : 0.0;
                    n_amb += std::abs(best[l] - t) <= band ? 1 : 0;
                }
                if (n_amb != 0) {
                    for (int l = 0; l < kTile; ++l) {
                        if (!(std::abs(best[l] - t) <= band)) continue;
                        bool ab;
                        int c;
                        exact_box(w[l], h[l], A, th.t, ab, c);
                        above[l] = ab ? 1.0 : 0.0;
                    }
                }
                for (int l0 = 0; l0 < kTile; l0 += kLanes) {
                    for (int l = 0; l < kLanes; ++l) {
                        const double bl = best[l0 + l];
                        const double z = Weighted ? om[l0 + l] * bl : bl;
                        a[l] += fix_round(above[l0 + l] != 0.0 ? z * kFixScale : 0.0);
                    }
                }
            } else {
                for (index_t i = 0; i < m; ++i) {
                    double bl = 0.0;
                    for (std::uint64_t r = mk; r != 0; r &= r - 1) {
                        const int j = __builtin_ctzll(r);
                        bl = std::max(bl, ratio_fast(w[i], h[i], iw[i], ih[i], aw[j], ah[j], aiw[j], aih[j]));
                    }
                    bool ab = bl > t;
                    if (std::abs(bl - t) <= band) {
                        int c;
                        exact_box(w[i], h[i], A, th.t, ab, c);
                    }
                    if (ab) extra[s] += fix_round((Weighted ? om[i] * bl : bl) * kFixScale);
                }
            }
        }
    }
}

// Fitness sums without pruning (more than 64 anchors) over the tiles [q0, q1): every anchor.
template <bool Weighted>
FASTANCHOR_CLONES std::int64_t plain_sum(const TiledBoxes& T, index_t q0, index_t q1, const RatioAnchors& A,
                                         const Threshold& th) {
    const int k = A.k;
    const double *aw = A.w.data(), *ah = A.h.data(), *aiw = A.iw.data(), *aih = A.ih.data();
    std::int64_t total = 0;
    TileBoxes tb;
    for (index_t q = q0; q < q1; ++q) {
        T.gather<true>(q, tb);
        const double *w = tb.w, *h = tb.h, *iw = tb.iw, *ih = tb.ih;
        for (int i0 = 0; i0 < tb.m; i0 += kLanes) {
            const int m = std::min(kLanes, tb.m - i0);
            double best[kLanes];
            for (int l = 0; l < kLanes; ++l) best[l] = 0.0;
            for (int j = 0; j < k; ++j) {
                for (int l = 0; l < m; ++l) {
                    const int i = i0 + l;
                    best[l] = std::max(best[l], ratio_fast(w[i], h[i], iw[i], ih[i], aw[j], ah[j], aiw[j], aih[j]));
                }
            }
            for (int l = 0; l < m; ++l) {
                const int i = i0 + l;
                bool ab = best[l] > th.t;
                if (std::abs(best[l] - th.t) <= th.band) {
                    int c;
                    exact_box(w[i], h[i], A, th.t, ab, c);
                }
                if (ab) total += fix_round((Weighted ? tb.om[i] * best[l] : best[l]) * kFixScale);
            }
        }
    }
    return total;
}

}  // namespace fitdetail

// Fixed-point fitness totals of `count` candidate anchor sets in one pass over the boxes (each
// chunk of boxes is visited once and scored against every candidate while it is in cache):
// totals[c] / T.denom is the fitness of candidates[c]. Totals of disjoint sets of boxes add
// up to the total of their union, exactly.
inline void fitness_totals(const TiledBoxes& T, const RatioAnchors* candidates, int count, double thr, int128_t* totals,
                           int n_threads) {
    if (count <= 0) return;
    const Threshold th(thr);
    const index_t n = T.size();
    const index_t nc = n_chunks(n);
    std::vector<std::int64_t> part(static_cast<std::size_t>(nc) * count);
    const bool weighted = T.weighted();
    const bool pruned = candidates[0].k <= fitdetail::kMaxPruned;
    // Per-thread scratch, allocated here: nothing may throw inside the parallel region.
    const std::size_t tiles = static_cast<std::size_t>(count) * fitdetail::kTilesPerChunk;
    const std::size_t lanes = static_cast<std::size_t>(count) * fitdetail::kLanes;
    const std::size_t threads = static_cast<std::size_t>(chunk_threads(n, n_threads));
    std::vector<std::uint64_t> all_masks(pruned ? threads * tiles : 0);
    std::vector<std::uint8_t> all_sures(pruned ? threads * tiles : 0);
    std::vector<std::int64_t> all_acc(pruned ? threads * lanes : 0);
    for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
        std::int64_t* out_c = part.data() + static_cast<std::size_t>(c) * count;
        // (Check points between candidates and between slices of tiles: a chunk of many large
        // candidates is a lot of work.)
        const index_t k = candidates[0].k;
        const index_t q0 = b / fitdetail::kTile, q1 = (e + fitdetail::kTile - 1) / fitdetail::kTile;
        if (!pruned) {
            checked_slices(count, (e - b) * k, [&](index_t s0, index_t s1) {
                for (index_t s = s0; s < s1; ++s)
                    out_c[s] = weighted ? fitdetail::plain_sum<true>(T, q0, q1, candidates[s], th)
                                        : fitdetail::plain_sum<false>(T, q0, q1, candidates[s], th);
            });
            return;
        }
        const std::size_t t = static_cast<std::size_t>(thread_index());
        std::uint64_t* masks = all_masks.data() + t * tiles;
        std::uint8_t* sures = all_sures.data() + t * tiles;
        std::int64_t* acc = all_acc.data() + t * lanes;
        std::fill(acc, acc + lanes, std::int64_t{0});
        checked_slices(count, (e - b) * k, [&](index_t s0, index_t s1) {
            for (index_t s = s0; s < s1; ++s) {
                const std::size_t at = static_cast<std::size_t>(s) * fitdetail::kTilesPerChunk;
                fitdetail::tile_masks(T, q0, q1, candidates[s], th, masks + at, sures + at);
            }
        });
        for (int s = 0; s < count; ++s) out_c[s] = 0;
        // Integer sums: slicing the tiles changes no total.
        checked_slices(q1 - q0, fitdetail::kTile * count, [&](index_t u0, index_t u1) {
            if (weighted)
                fitdetail::tiled_sums<true>(T, q0 + u0, q0 + u1, candidates, count, th, masks + u0, sures + u0, acc,
                                            out_c);
            else
                fitdetail::tiled_sums<false>(T, q0 + u0, q0 + u1, candidates, count, th, masks + u0, sures + u0, acc,
                                             out_c);
        });
        for (int s = 0; s < count; ++s)
            for (int l = 0; l < fitdetail::kLanes; ++l)
                out_c[s] += acc[static_cast<std::size_t>(s) * fitdetail::kLanes + l];
    });
    for (int s = 0; s < count; ++s) {
        int128_t total = 0;
        for (index_t c = 0; c < nc; ++c) total += part[static_cast<std::size_t>(c) * count + s];
        totals[s] = total;
    }
}

// Fitness of `count` candidate anchor sets in one pass over the boxes: out[c] = fitness of
// candidates[c].
inline void fitness_batch(const TiledBoxes& T, const RatioAnchors* candidates, int count, double thr, double* out,
                          int n_threads) {
    if (count <= 0) return;
    std::vector<int128_t> totals(static_cast<std::size_t>(count));
    fitness_totals(T, candidates, count, thr, totals.data(), n_threads);
    const double denom = static_cast<double>(T.denom);
    for (int s = 0; s < count; ++s) out[s] = static_cast<double>(totals[s]) / denom;
}

namespace fitdetail {

// The report kernel's source of boxes (metrics.hpp) on a layout: its rows and scaled weights,
// the reciprocals computed by the same operations, tails padded with unit boxes of weight 0.
struct LayoutBoxes {
    const TiledBoxes& T;
    bool weighted() const { return T.weighted(); }
    __attribute__((always_inline)) void load(index_t i0, int m, VBd& w, VBd& h, VBd& iw, VBd& ih, VBd& om) const {
        const float* r32 = T.rows32.empty() ? nullptr : T.rows32.data() + 2 * i0;
        const double* r64 = T.rows64.empty() ? nullptr : T.rows64.data() + 2 * i0;
        for (int l = 0; l < kBlock; ++l) {
            const bool in = l < m;
            w[l] = in ? (r32 ? r32[2 * l] : r64[2 * l]) : 1.0;
            h[l] = in ? (r32 ? r32[2 * l + 1] : r64[2 * l + 1]) : 1.0;
            om[l] = in ? (T.weighted() ? T.om[i0 + l] : 1.0) : 0.0;
        }
        iw = 1.0 / w;
        ih = 1.0 / h;
    }
};

}  // namespace fitdetail

// Fitness, best possible recall, anchors above threshold and average IoU of `A` on the laid-out
// boxes (the same values as on the rows, bit for bit: the sums are exact in any order).
inline FitnessMetrics fitness_metrics(const TiledBoxes& T, const RatioAnchors& A, double thr, int n_threads) {
    return fitdetail::metrics_of(fitdetail::LayoutBoxes{T}, T.size(), A, thr, n_threads);
}

}  // namespace fastanchor
