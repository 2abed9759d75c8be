// fastanchor: the recall of anchors placed on a detector's grids (the best IoU of every box with
// any anchor at any cell of its image's grids).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common.hpp"
#include "../geometry.hpp"
#include "box_iou.hpp"

namespace fastanchor {

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

// The centre of the cell whose (integer-valued) index is i.
inline double cell_center(double stride, double i) { return (i + 0.5) * stride; }

// Best IoU of box i of `boxes` with any anchor of any level on the grids of its W x H image. Cell
// indices and counts stay in double (integers there, exact up to 2^53): an image may hold more
// cells than any integer type counts, and no index is ever needed as an integer. Beyond 2^53
// cells the nearest columns are found to within the rounding of cx / s (a relative 2^-52 of the
// box's position).
inline double grid_best_iou_of(const CornerSet& boxes, index_t i, double W, double H,
                               const std::vector<GridLevel>& levels) {
    const double cx = 0.5 * (boxes.x1[i] + boxes.x2[i]), cy = 0.5 * (boxes.y1[i] + boxes.y2[i]);
    double best = 0.0;
    for (const GridLevel& L : levels) {
        const double s = L.stride;
        const double nx = std::max(1.0, std::ceil(W / s)), ny = std::max(1.0, std::ceil(H / s));
        const double tx = std::floor(cx / s - 0.5), ty = std::floor(cy / s - 0.5);
        double cols[2], rows[2];
        for (int d = 0; d < 2; ++d) {
            cols[d] = std::min(std::max(tx + d, 0.0), nx - 1.0);
            rows[d] = std::min(std::max(ty + d, 0.0), ny - 1.0);
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
                    const double v =
                        iou_box(boxes.x1[i], boxes.y1[i], boxes.x2[i], boxes.y2[i], boxes.a[i], ax1, ay1, ax2, ay2, aa);
                    best = std::max(best, v);
                }
            }
        }
    }
    return best;
}

// Best IoU of every box with any anchor of any level on its image's grids (image_wh: W, H per box).
inline void grid_best_iou(const CornerSet& boxes, const double* image_wh, const std::vector<GridLevel>& levels,
                          double* out, int n_threads) {
    for_each_chunk(boxes.size(), n_threads, [&](index_t, index_t b, index_t e) {
        for (index_t i = b; i < e; ++i)
            out[i] = grid_best_iou_of(boxes, i, image_wh[2 * i], image_wh[2 * i + 1], levels);
    });
}

}  // namespace fastanchor
