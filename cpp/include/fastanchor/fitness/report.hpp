// fastanchor: a chunk's report. The chunked autoanchor scores the k-means anchors and the evolved
// ones on every kept box once at the end: YOLOv5's four metrics (metrics.hpp) and the IoU
// objectives' totals (objectives.hpp) of each anchor set. ChunkReport adds one chunk of rows to
// those sums sub-block by sub-block, in buffers it keeps from one sub-block to the next: a Dask
// worker returns freed memory to the system at once (glibc's trim threshold set to 64 KiB), so a
// buffer allocated per sub-block was faulted in again every time, which made the report 1.6
// times slower there than in a plain process.
//
// Every sum is exact fixed point, so the totals do not depend on the sub-blocks, the chunks or
// their order: they are the sums over all the rows at once, bit for bit.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common.hpp"
#include "metrics.hpp"
#include "objectives.hpp"
#include "tiles.hpp"

namespace fastanchor {

class ChunkReport {
public:
    // Rows per sub-block: its doubles (1 MiB) and layout stay in cache through the passes over it.
    static constexpr index_t kSubRows = index_t{1} << 16;

    ChunkReport(std::vector<RatioAnchors> sets, double thr, std::vector<Objective> objectives)
        : sets_(std::move(sets)),
          objectives_(std::move(objectives)),
          thr_(thr),
          th_(thr),
          metrics_(sets_.size()),
          totals_(sets_.size() * objectives_.size(), 0),
          part_(sets_.size(), 0) {}

    // Adds the rows (w, h) of wh [0, n) whose larger side is at least skip_below (0: every row).
    // The sides are compared as doubles (a float32 side converts exactly).
    template <class Row>
    void add(const Row* wh, index_t n, double skip_below) {
        rows_.resize(2 * static_cast<std::size_t>(std::min(n, kSubRows)));
        for (index_t b = 0; b < n; b += kSubRows) {
            const index_t e = std::min(n, b + kSubRows);
            index_t m = 0;
            for (index_t i = b; i < e; ++i) {
                const double w = wh[2 * i], h = wh[2 * i + 1];
                if (std::max(w, h) < skip_below) continue;
                rows_[2 * m] = w;
                rows_[2 * m + 1] = h;
                ++m;
            }
            if (m > 0) score(m);
        }
    }

    // The four metrics' sums of anchor set s (metrics.hpp's ChunkMetrics, unit weights).
    const fitdetail::ChunkMetrics& metrics(std::size_t s) const { return metrics_[s]; }
    // The total of objective o for anchor set s, in units of 2^-50 (objective_totals').
    int128_t total(std::size_t o, std::size_t s) const { return totals_[o * sets_.size() + s]; }

private:
    void score(index_t m) {
        const fitdetail::RowBoxes<double> src{rows_.data(), nullptr, 1.0};
        for (std::size_t s = 0; s < sets_.size(); ++s) {
            for (index_t b = 0; b < m; b += kChunk) {
                fitdetail::ChunkMetrics p;
                fitdetail::metrics_chunk(src, b, std::min(m, b + kChunk), sets_[s], th_, p);
                fitdetail::ChunkMetrics& acc = metrics_[s];
                acc.fit += p.fit;
                acc.bpr += p.bpr;
                acc.aat += p.aat;
                acc.iou += p.iou;
                acc.den += p.den;
            }
        }
        if (objectives_.empty()) return;
        layout_.rebucket(rows_.data(), m, scratch_);
        const int count = static_cast<int>(sets_.size());
        for (std::size_t o = 0; o < objectives_.size(); ++o) {
            objective_totals(layout_, sets_.data(), count, objectives_[o], thr_, part_.data(), 1);
            for (std::size_t s = 0; s < sets_.size(); ++s) totals_[o * sets_.size() + s] += part_[s];
        }
    }

    std::vector<RatioAnchors> sets_;
    std::vector<Objective> objectives_;
    double thr_;
    Threshold th_;
    std::vector<fitdetail::ChunkMetrics> metrics_;
    std::vector<int128_t> totals_;
    std::vector<int128_t> part_;
    std::vector<double> rows_;  // a sub-block's kept rows
    TiledBoxes layout_;
    TiledBoxes::BucketScratch scratch_;
};

}  // namespace fastanchor
