// fastanchor: a chunk's Lloyd state, kept between the passes of a chunked fit (ChunkLloyd).
//
// The stateless chunk kernel (step.hpp) labels every box of its chunk at every pass. A process
// that keeps a chunk's state between passes (python/fastanchor/_chunked.py, ChunkCache) runs the
// in-memory engine on it instead: Lloyd's bounded assignment (only the boxes whose bounds cannot
// prove their label are ranked again) and its statistics moved box by box. Its partials are the
// stateless kernel's, bit for bit: the counts, the mean's exact sums in the chunk's units, the
// median's histograms over the fit's shared layout. docs/design.md, "The Lloyd step kernel".
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "../common.hpp"
#include "lloyd.hpp"
#include "problem.hpp"
#include "step.hpp"

namespace fastanchor {

class ChunkLloyd {
    // f(the Lloyd object of the state's label type).
    template <class F>
    decltype(auto) with(F&& f) const {
        if (l8_) return f(*l8_);
        return f(*l32_);
    }
    template <class F>
    decltype(auto) with(F&& f) {
        if (l8_) return f(*l8_);
        return f(*l32_);
    }

public:
    // rows: the chunk's n rows, read in place for the state's whole life. layout: the fit's median
    // histograms (ignored for the mean). units: the rows' integer weights in the fit's units (empty:
    // unit weights). A weighted state moves the weights with the boxes, as the in-memory weighted
    // fit does: the median's histograms of weights, or the mean's exact sums of weight times value
    // when the chunk's values' integers fit 62 bits (Problem::fixed64), are its partials. A wider
    // chunk's weighted mean state keeps only the labels of the unit-weight engine, and makes the
    // partials from them and the weights (partials()).
    ChunkLloyd(BoxRows rows, index_t n, int k, Update update, const HistLayout& layout,
               std::vector<std::uint32_t> units = {})
        : p_(Problem::make(rows, nullptr, n, false, 1)),
          k_(k),
          update_(update),
          layout_(layout),
          weighted_(!units.empty()) {
        if (n <= 0 || k <= 0) throw std::invalid_argument("ChunkLloyd: need boxes and anchors");
        if (weighted_ && static_cast<index_t>(units.size()) != n)
            throw std::invalid_argument("ChunkLloyd: one weight per row");
        // The weighted mean's sums move with the boxes (as in memory) where the values' integers fit
        // 62 bits.
        moved_ = weighted_ && update == Update::Mean && p_.exact_sums && p_.fixed64;
        if (moved_) {
            p_.exact_wsums = true;
            p_.exact_sums = p_.sums64 = false;
        }
        if (update == Update::Median || moved_) p_.wq = std::move(units);  // (the moved weights)
        else units_ = std::move(units);
        HistBins bins;
        if (update == Update::Median) {
            p_.key_lo[0] = layout.key_lo[0];
            p_.key_lo[1] = layout.key_lo[1];
            bins.bins = layout.bins;
            bins.shift[0] = layout.shift[0];
            bins.shift[1] = layout.shift[1];
        }
        if (k < kByteLabelNone) l8_ = std::make_unique<Lloyd<std::uint8_t>>(p_, k, update, 1, bins);
        else l32_ = std::make_unique<Lloyd<std::int32_t>>(p_, k, update, 1, bins);
    }
    ChunkLloyd(const ChunkLloyd&) = delete;
    ChunkLloyd& operator=(const ChunkLloyd&) = delete;

    // Whether the state gives the partials of the fit's update: the mean's exact sums (the
    // chunk's values within the exact sums' range) or the median's histograms (k <= 4096, with
    // unit or integer weights); or, for the weighted mean, the partials of its labels (always).
    bool exact() const {
        if (weighted_ && update_ == Update::Mean) return true;
        return with([&](const auto& ll) { return update_ == Update::Mean ? ll.mean_exact() : ll.hist_on(); });
    }

    // Labels every box against `anchors`; returns how many labels changed since the last call
    // (every box at the first).
    index_t assign(const WhSet& anchors) {
        return with([&](auto& ll) { return ll.assign(anchors); });
    }

    // The last assign()'s partials into `out` (made for k clusters and the update's mode, as
    // lloyd_step's): added, so that out.merge() of other chunks' partials gives the totals.
    // Weighted: made from the labels and the weights (kmeans/step.hpp, accumulate_partials), into
    // fresh partials.
    void partials(StepPartials& out) const {
        if (!exact()) throw std::logic_error("ChunkLloyd: no exact partials for this chunk");
        if (moved_) {  // the moved sums S as the stateless kernel's halves: S = hi * 2^47 + lo
            with([&](const auto& ll) {
                constexpr int kSplit = StepPartials::kWSplit;
                constexpr int128_t kMask = (int128_t{1} << kSplit) - 1;
                out.sum_exp = p_.sum_exp;
                out.wsum_hi.assign(2 * static_cast<std::size_t>(k_), 0);
                out.wsum_lo.assign(2 * static_cast<std::size_t>(k_), 0);
                for (int c = 0; c < k_; ++c) {
                    out.count[c] += ll.counts()[c];
                    out.weight[c] += static_cast<std::int64_t>(ll.mean_weights()[c]);
                    for (int X = 0; X < 2; ++X) {
                        const int128_t s = ll.mean_sums(X)[c];
                        out.wsum_hi[static_cast<std::size_t>(X) * k_ + c] = s >> kSplit;
                        out.wsum_lo[static_cast<std::size_t>(X) * k_ + c] = s & kMask;
                    }
                }
                return 0;
            });
            return;
        }
        if (weighted_ && update_ == Update::Mean) {
            with([&](const auto& ll) {
                accumulate_partials(rows(), p_.size(), ll.labels().data(), k_, StepMode::Mean, &layout_, units_.data(),
                                    out);
                return 0;
            });
            return;
        }
        with([&](const auto& ll) {
            StepPartials mine(k_, update_ == Update::Mean ? StepMode::Mean : StepMode::Median, &layout_);
            for (int c = 0; c < k_; ++c) mine.count[c] = mine.weight[c] = ll.counts()[c];
            if (update_ == Update::Mean) {
                mine.sum_w = ll.mean_sums(0);
                mine.sum_h = ll.mean_sums(1);
                mine.sum_exp = p_.sum_exp;
            } else if (weighted_) {  // the histograms of weights, and each cluster's weight
                const auto& h = ll.hist_weights();
                mine.hist.assign(h.begin(), h.end());
                for (int c = 0; c < k_; ++c) mine.weight[c] = ll.hist_weight(c);
            } else {
                const auto& h = ll.hist_counts();
                mine.hist.assign(h.begin(), h.end());
            }
            out.merge(mine);
            return 0;
        });
    }

    // The last assign()'s labels into out (n values).
    void labels(std::int32_t* out) const {
        with([&](const auto& ll) {
            const auto& l = ll.labels();
            for (index_t i = 0; i < p_.size(); ++i) out[i] = static_cast<std::int32_t>(l[i]);
            return 0;
        });
    }

    // select_values (step.hpp) over the last assign()'s labels (and a weighted median state's
    // integer weights): the median's selection pass on the state's rows.
    void select(const SelectPlan& plan, std::vector<double> (&values)[4], std::vector<std::int32_t> (&labs)[4],
                std::uint64_t* hist, std::vector<std::uint32_t>* wts) const {
        with([&](const auto& ll) {
            select_values(rows(), p_.size(), ll.labels().data(), k_, plan, values, labs, hist,
                          p_.wq.empty() ? nullptr : p_.wq.data(), wts);
            return 0;
        });
    }

    // gather_windows (windows.hpp) over the last assign()'s labels.
    void gather(const std::uint32_t* lo, const std::uint32_t* hi, const std::uint32_t* from, index_t cap,
                WindowValues& out, std::int64_t* below, std::int64_t* overflow) const {
        with([&](const auto& ll) {
            gather_windows(rows(), p_.size(), ll.labels().data(), k_, lo, hi, from, cap, out, below, overflow,
                           p_.wq.empty() ? nullptr : p_.wq.data());
            return 0;
        });
    }

    index_t size() const { return p_.size(); }
    // The state's bytes beside the rows: labels, bounds, float copies, histograms (about).
    std::size_t nbytes() const {
        const std::size_t n = static_cast<std::size_t>(p_.size());
        const std::size_t label = l8_ ? 1 : 4;
        const std::size_t hist = 2 * static_cast<std::size_t>(k_) * static_cast<std::size_t>(layout_.bins) * 8;
        return n * (label + 2) + p_.f64_as_f32.size() * sizeof(float) +
               (units_.size() + p_.wq.size()) * sizeof(std::uint32_t) + hist * (weighted_ ? 2 : 1);
    }

private:
    // The rows the state reads (float32 rows for float64 rows that hold floats: the same values).
    BoxRows rows() const {
        BoxRows r;
        r.f32 = p_.f32;
        r.f64 = p_.f32 ? nullptr : p_.f64;
        return r;
    }

    Problem p_;  // (the Lloyd objects hold references to it: a ChunkLloyd does not move)
    int k_;
    Update update_;
    HistLayout layout_;
    std::unique_ptr<Lloyd<std::uint8_t>> l8_;
    std::unique_ptr<Lloyd<std::int32_t>> l32_;
    bool weighted_;
    bool moved_ = false;                // a weighted mean state whose exact sums move with the boxes
    std::vector<std::uint32_t> units_;  // a weighted mean state's integer weights, when not moved_ (else p_.wq)
};

}  // namespace fastanchor
