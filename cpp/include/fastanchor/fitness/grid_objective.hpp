// fastanchor: the IoU objectives of the mutation search scored with the anchors placed on the
// detector's grids (boxes/grid.hpp) instead of corner-aligned with the boxes.
//
// A candidate's k anchors are sorted by area (ties by width, geometry.hpp's area_order) and split
// evenly over the levels, finest first, as split_levels does; box i's best IoU is then
// grid_best_iou_of (every anchor at the two columns and two rows of cells nearest the box centre,
// on its image's grids), and its term is that of objectives.hpp (iou_term): the best IoU
// ("avg_iou"), or [best >= t] ("recall", times best when IoU-weighted), times the scaled weight,
// rounded to a multiple of 2^-50 and summed as integers. The numpy reference is
// tests/reference.py, grid_objective.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "../boxes/box_iou.hpp"
#include "../boxes/grid.hpp"
#include "../common.hpp"
#include "../geometry.hpp"
#include "../parallel.hpp"
#include "metrics.hpp"
#include "objectives.hpp"

namespace fastanchor {

// The boxes of a grid-scored search: their corners and images, the levels' strides, and their
// scaled weights and fixed-point total weight (FitBoxes of the boxes' widths and heights).
struct GridBoxes {
    CornerSet boxes;
    std::vector<double> image_wh;  // W, H per box
    std::vector<double> strides;   // one per level, finest first
    FitBoxes weights;              // om and denom, in the boxes' order

    index_t size() const { return boxes.size(); }

    // From N rows (x1, y1, x2, y2), N rows (W, H), the strides and optional weights.
    static GridBoxes make(const double* xyxy, const double* image_wh, index_t n, const double* strides, int levels,
                          const double* weights, int n_threads) {
        GridBoxes g;
        g.boxes = CornerSet::from_rows(xyxy, n);
        g.image_wh.assign(image_wh, image_wh + 2 * n);
        g.strides.assign(strides, strides + levels);
        std::vector<double> wh(2 * static_cast<std::size_t>(n));
        for (index_t i = 0; i < n; ++i) {
            wh[2 * i] = xyxy[4 * i + 2] - xyxy[4 * i];
            wh[2 * i + 1] = xyxy[4 * i + 3] - xyxy[4 * i + 1];
        }
        g.weights = FitBoxes::make(wh.data(), weights, n, n_threads);
        return g;
    }
};

namespace fitdetail {

// The candidate's anchors as grid levels: sorted by area, split evenly, finest level first.
inline std::vector<GridLevel> grid_levels_of(const RatioAnchors& A, const std::vector<double>& strides) {
    const int levels = static_cast<int>(strides.size());
    if (levels <= 0 || A.k % levels != 0)
        throw std::invalid_argument("grid objective: the anchors must split evenly over the levels");
    const std::vector<int> order = area_order(A.w, A.a, A.k);
    const int per = A.k / levels;
    std::vector<GridLevel> out(levels);
    for (int l = 0; l < levels; ++l) {
        out[l].stride = strides[l];
        for (int q = 0; q < per; ++q) {
            const int j = order[l * per + q];
            out[l].w.push_back(A.w[j]);
            out[l].h.push_back(A.h[j]);
        }
    }
    return out;
}

}  // namespace fitdetail

// The grid-scored IoU objective of `count` candidate anchor sets, one pass over the boxes per
// candidate (each evaluates 4 placements of every anchor per box). Exact fixed-point sums: the
// same value for any number of threads.
inline void grid_objective_batch(const GridBoxes& G, const RatioAnchors* candidates, int count, const Objective& ob,
                                 double* out, int n_threads) {
    if (count <= 0) return;
    if (ob.kind == ObjectiveKind::Fitness) throw std::invalid_argument("grid_objective_batch: not an IoU objective");
    const index_t n = G.size();
    const index_t nc = n_chunks(n);
    const bool recall = ob.kind == ObjectiveKind::Recall, weighted = G.weights.weighted();
    std::vector<std::int64_t> part(static_cast<std::size_t>(nc));
    const double denom = static_cast<double>(G.weights.denom);
    for (int s = 0; s < count; ++s) {
        const std::vector<GridLevel> levels = fitdetail::grid_levels_of(candidates[s], G.strides);
        for_each_chunk(n, n_threads, [&](index_t c, index_t b, index_t e) {
            std::int64_t total = 0;
            for (index_t i = b; i < e; ++i) {
                const double best = grid_best_iou_of(G.boxes, i, G.image_wh[2 * i], G.image_wh[2 * i + 1], levels);
                total +=
                    fitdetail::iou_term(best, weighted ? G.weights.om[i] : 1.0, recall, ob.iou_weighted, ob.iou_thr);
            }
            part[static_cast<std::size_t>(c)] = total;
        });
        int128_t total = 0;
        for (const std::int64_t p : part) total += p;
        out[s] = static_cast<double>(total) / denom;
    }
}

}  // namespace fastanchor
