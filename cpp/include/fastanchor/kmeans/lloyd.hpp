// fastanchor: one Lloyd run (Lloyd): the assignment passes, and the update through the run's
// engines: MeanEngine (mean.hpp), HistMedian (median_hist.hpp) or SortedMedian
// (median_sorted.hpp); the bounded passes' state is Bounds (bounds.hpp). docs/design.md maps
// which engine runs for which input.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "../common.hpp"
#include "../constants.hpp"
#include "../iou.hpp"
#include "bounds.hpp"
#include "flags.hpp"
#include "label.hpp"
#include "mean.hpp"
#include "median_hist.hpp"
#include "median_sorted.hpp"
#include "problem.hpp"
#include "thread.hpp"

namespace fastanchor {

enum class Update { Median, Mean };

// One Lloyd run on a Problem; L is the label type (std::uint8_t for k < kByteLabelNone, else
// std::int32_t).
//
// Assignment ranks boxes in float32 (detail::label_top2, boxes scaled by one power of two) and
// decides exactly in double every box whose two best float IoUs are too close to call, so the
// labels are those of the exact rule. Once the anchors move little, only the boxes whose 16-bit
// bound (Bounds) cannot prove their label are ranked again.
//
// Every box that changed cluster moves its contribution between the clusters' statistics at once
// (a thread's partials: counts, and the engine's exact sums or histogram counts, merged after the
// pass in thread order; integers, so the totals are the same in any order). The weighted mean
// moves box by box too when its values' integers fit 62 bits, else is summed again, per chunk in
// box order, for the chunks where a label changed; the weighted median's histograms add the
// boxes' integer weights beside their counts. Above the histograms' limit on k, the median is one pass over each coordinate's sort
// order.
//
// The SIMD level (simd_isa()) is read once, when the run starts.
template <class L>
class Lloyd {
public:
    static constexpr L kNone = std::is_signed<L>::value ? static_cast<L>(-1) : static_cast<L>(kByteLabelNone);
    static_assert(std::is_signed<L>::value || sizeof(L) == 1, "labels are one byte or signed");
    static constexpr int kMaxHistK = HistMedian<L>::kMaxHistK;

    // hist: the histogram median's layout, when the caller fixes it (ChunkLloyd).
    Lloyd(const Problem& p, int k, Update update, int n_threads, HistBins hist = {})
        : p_(p),
          k_(k),
          update_(update),
          nt_(n_threads),
          isa_(simd_isa()),
          labels_(p.size(), kNone),
          cnt_(k, 0),
          changed_(n_chunks(p.size()), 0),
          mean_(p, k, update == Update::Mean, labels_),
          hist_(p, k, n_threads, update == Update::Median && HistMedian<L>::serves(k), isa_, labels_, threads_, hist),
          bounds_(p.size(), k, std::is_same_v<L, std::uint8_t> && p.has_float && k <= kMaxFixedK) {
        threads_.resize(chunk_threads(p.size(), n_threads));
        for (auto& t : threads_)
            t.allocate(k, mean_.exact() && !mean_.slot(), hist_.hist_size(), hist_.weighted() ? hist_.hist_size() : 0);
        // An absent box keeps the label kNone: the engines that read every box's label (the
        // weighted or inexact mean's sums, the sort-based median) and int32 labels are not for it.
        if (p.skips() && !(std::is_same_v<L, std::uint8_t> && (update == Update::Mean ? mean_.exact() : hist_.on())))
            throw std::invalid_argument(
                "kmeans_iou: boxes are left out only for k < 255 with the median's histograms or exact mean sums");
    }

    // Assigns every box; returns how many labels changed.
    index_t assign(const WhSet& anchors) {
        use_float_ = set_float_anchors(anchors);
        bounds_.choose(anchors, use_float_);
        for_each_chunk(p_.size(), nt_, [&](index_t c, index_t b, index_t e) {
            changed_[c] = assign_chunk(anchors, b, e);
            if (changed_[c] > 0 && mean_.stats()) mean_.chunk_stats(c, b, e);
        });
        index_t changed = 0;
        for (const index_t x : changed_) changed += x;
        for (auto& t : threads_) {
            if (!t.any) continue;
            t.any = false;
            if (mean_.slot()) {
                mean_.merge_slots(t, cnt_);
                continue;
            }
            for (int c = 0; c < k_; ++c) cnt_[c] += t.count[c];
            std::fill(t.count.begin(), t.count.end(), 0);
            if (mean_.exact()) mean_.merge_sums(t);
            if (hist_.on()) hist_.merge(t);
        }
        return changed;
    }

    // The label of box i after the last assign().
    std::int32_t label(index_t i) const { return static_cast<std::int32_t>(labels_[i]); }
    // After an assign(): the labels, the members per cluster, the mean's exact sums (when
    // mean_exact()) and the median's histograms (when hist_on()).
    const std::vector<L>& labels() const { return labels_; }
    const std::vector<index_t>& counts() const { return cnt_; }
    bool mean_exact() const { return mean_.exact(); }
    const std::vector<int128_t>& mean_sums(int X) const { return mean_.sums(X); }
    // A weighted mean's integer weights per cluster, moved with its exact sums.
    const std::vector<int128_t>& mean_weights() const { return mean_.weights(); }
    bool hist_on() const { return hist_.on(); }
    const std::vector<std::uint32_t>& hist_counts() const { return hist_.counts(); }
    // The median's histograms of integer weights (a weighted fit's, when hist_on()).
    const std::vector<std::uint64_t>& hist_weights() const { return hist_.weights(); }
    index_t hist_weight(int c) const { return hist_.weight_of(c); }
    // How the last assign() went through the boxes (for tests): 0 ranked every box and stored its
    // bound, 1 ranked only those whose bounds could not prove their label, 2 ranked every box for
    // its label alone (bounds left invalid).
    int last_pass() const { return bounds_.bounded() ? 1 : bounds_.keep() ? 0 : 2; }

    // New anchors from the labels of the last assign(); `anchors` are those it used.
    WhSet update(const WhSet& anchors) {
        const int k = k_;
        WhSet out(k);
        std::vector<double> mw(k), mh(k);
        if (update_ == Update::Mean) mean_.update(cnt_, mw, mh);
        else if (hist_.on()) hist_.update(cnt_, mw, mh);
        else SortedMedian::update(p_, k, cnt_, [&](index_t i) { return label(i); }, nt_, mw, mh);
        std::vector<int> empty;
        for (int c = 0; c < k; ++c) {
            if (cnt_[c] > 0) out.set(c, mw[c], mh[c]);
            else empty.push_back(c);
        }
        if (!empty.empty()) fill_empty(anchors, empty, out);
        return out;
    }

private:
    using Thread = detail::LloydThread;
    static constexpr index_t kBlock = Thread::kBlock;

    Thread& thread() { return threads_[static_cast<std::size_t>(thread_index())]; }

    // Float copies of the anchors at the boxes' scale; false when the float ranking cannot serve
    // (the data's range, k above the fixed-K kernels, an anchor out of range).
    bool set_float_anchors(const WhSet& anchors) {
        if (!std::is_same_v<L, std::uint8_t> || !p_.has_float || k_ > kMaxFixedK) return false;
        for (int j = 0; j < k_; ++j) {
            const double w = anchors.w[j] * p_.fscale, h = anchors.h[j] * p_.fscale;
            if (!(w >= Problem::kFloatLo && w <= Problem::kFloatHi && h >= Problem::kFloatLo && h <= Problem::kFloatHi))
                return false;
            faw_[j] = static_cast<float>(w);
            fah_[j] = static_cast<float>(h);
            faa_[j] = faw_[j] * fah_[j];
        }
        return true;
    }

    // Ranks the m boxes of the float rows `rows` (labels `old`) against the anchors: labels and
    // flags (detail::label_top2) into T.lab, T.flag, and their slacks into T.slack: in units of
    // 2^-kSlackBits, a lower bound on the gap between the distance to any other anchor and to
    // the label's, plus the label's base (detail::label_top2's float gap, less what float
    // rounding may have added; 0 for the ties decided exactly).
    void rank_block(Thread& T, const float* rows, index_t m, const std::uint8_t* old) {
        const bool keep = bounds_.keep();
        detail::label_float_k(isa_, rows, static_cast<float>(p_.fscale), m, faw_.data(), fah_.data(), faa_.data(), k_,
                              old, T.lab.data(), T.flag.data(), keep ? T.gap.data() : nullptr);
        if (keep) bounds_.slacks(T.gap.data(), T.lab.data(), T.flag.data(), m, T.slack.data());
    }

    // One box in kDenseRanks ranked again is enough for the rows of the next block to be fetched
    // whole (a 64-byte line holds 8 boxes' rows).
    static constexpr index_t kDenseRanks = 32;

    // Boxes of a bounded pass in [b, e): those whose slack fails are gathered and ranked again.
    index_t assign_chunk_bounded(const WhSet& anchors, index_t b, index_t e) {
        Thread& T = thread();
        index_t changed = 0;
        std::uint16_t* slack = bounds_.slack();
        for (index_t s = b; s < e; s += kBlock) {
            const index_t m = std::min(e, s + kBlock) - s;
            const std::uint8_t* lab = nullptr;
            if constexpr (std::is_same_v<L, std::uint8_t>) lab = labels_.data() + s;
            else return changed;  // (bounds exist for one-byte labels only)
            const index_t nc =
                detail::boxes_to_rank(isa_, slack + s, lab, m, bounds_.threshold(), T.need.data(), T.idx.data());
            if (nc == 0) continue;
            const std::int32_t* idx = T.idx.data();
            // A few percent of a block's boxes ranked again touch most of its rows' cache lines,
            // in an order the hardware does not prefetch: the next block's rows are fetched
            // while this one is ranked.
            if (nc * kDenseRanks >= m && s + kBlock < e) {
                const float* next = p_.frows() + 2 * (s + kBlock);
                const index_t floats = 2 * (std::min(e, s + 2 * kBlock) - (s + kBlock));
                for (index_t j = 0; j < floats; j += 16) __builtin_prefetch(next + j);
            }
            std::uint8_t* old = T.old.data();
            p_.gather_float_rows(s, idx, nc, T.frows.data());
            for (index_t u = 0; u < nc; ++u) old[u] = lab[idx[u]];
            rank_block(T, T.frows.data(), nc, old);
            for (index_t u = 0; u < nc; ++u) {
                const index_t i = s + idx[u];
                slack[i] = T.slack[u];
                changed += commit(T, anchors, i, T.lab[u], T.flag[u]);
            }
        }
        return changed;
    }

    // Box i ranked in float with label l and flag f (detail::label_top2): a tie too close to call
    // in float is decided exactly. Returns 1 for a change. Inlined into the loops over flagged
    // boxes: called out of line, once per flagged box, it made the mean update's iteration 3-9%
    // slower (benchmarks/ab_engines.sh).
    __attribute__((always_inline)) int commit(Thread& T, const WhSet& anchors, index_t i, std::int32_t l,
                                              std::uint8_t f) {
        if (f == 0 || (p_.skips() && p_.absent(i))) return 0;  // (an absent box: give() would ignore it)
        if (f == 1) {
            const double w = p_.value(0, i), h = p_.value(1, i);
            l = detail::assign_exact(w, h, w * h, anchors.w.data(), anchors.h.data(), anchors.a.data(), k_);
        }
        return give(T, i, l);
    }

    // Labels boxes [b, e) (one chunk) block by block; returns how many labels changed.
    //
    // On the float path, with float32 rows, a block's flagged boxes are committed as soon as it
    // is ranked: the values a commit reads (exact sums, exact ties) are the rows just ranked.
    // With float64 rows (the ranking reads their float copy) they are committed after all the
    // chunk's blocks are ranked: the rows a commit reads are prefetched as they are found, and
    // arrive while the next blocks are ranked.
    index_t assign_chunk(const WhSet& anchors, index_t b, index_t e) {
        if (bounds_.bounded()) return assign_chunk_bounded(anchors, b, e);
        Thread& T = thread();
        const double *aw = anchors.w.data(), *ah = anchors.h.data(), *aa = anchors.a.data();
        index_t changed = 0, pending = 0;
        for (index_t s = b; s < e; s += kBlock) {
            const index_t m = std::min(e, s + kBlock) - s;
            if (!use_float_) {
                p_.load(s, s + m, T.w.data(), T.h.data(), T.a.data());
                detail::assign_rows(T.w.data(), T.h.data(), T.a.data(), m, aw, ah, aa, k_, T.lab.data());
                for (index_t t = 0; t < m; ++t) changed += give(T, s + t, T.lab[t]);
                continue;
            }
            if constexpr (std::is_same_v<L, std::uint8_t>) {  // k <= kMaxFixedK: one-byte labels
                rank_block(T, p_.frows() + 2 * s, m, labels_.data() + s);
                if (bounds_.keep()) std::copy(T.slack.begin(), T.slack.begin() + m, bounds_.slack() + s);
            }
            // The flagged boxes: new labels, and the few too close to call in float.
            const std::uint8_t* flag = T.flag.data();
            if (p_.f32) {
                std::int32_t* idx = T.idx.data();
                const index_t nc = detail::compact_flagged(flag, m, idx);
                for (index_t u = 0; u < nc; ++u) changed += commit(T, anchors, s + idx[u], T.lab[idx[u]], flag[idx[u]]);
                continue;
            }
            detail::for_each_flagged(flag, m, [&](index_t t) {
                p_.prefetch_row(s + t);
                T.pending[static_cast<std::size_t>(pending++)] = {s + t, T.lab[t], flag[t]};
            });
        }
        for (index_t u = 0; u < pending; ++u) {
            const auto& q = T.pending[static_cast<std::size_t>(u)];
            changed += commit(T, anchors, q.i, q.label, q.flag);
        }
        return changed;
    }

    // Gives box i label l; a change moves the box's share of the statistics (the thread's
    // partials). Returns 1 for a change.
    __attribute__((always_inline)) int give(Thread& T, index_t i, std::int32_t l) {
        if (p_.skips() && p_.absent(i)) return 0;  // never labelled, never counted
        const L from = labels_[i];
        if (static_cast<std::int32_t>(from) == l) return 0;  // (kNone is no label: never equal)
        labels_[i] = static_cast<L>(l);
        T.any = true;
        if (mean_.slot()) {  // one-byte labels: kNone has a slot of its own
            mean_.slot_move(T, i, static_cast<std::uint8_t>(from), l);
            return 1;
        }
        const std::int32_t f = from == kNone ? -1 : static_cast<std::int32_t>(from);
        ++T.count[l];
        if (f >= 0) --T.count[f];
        if (mean_.exact()) mean_.record_move(T, i, f, l);
        if (hist_.on()) hist_.record_move(T, i, f, l);
        return 1;
    }

    // Empty clusters, in index order, take the present boxes with the lowest IoU to their nearest
    // anchor, in increasing order of that IoU (ties by index), one box each.
    void fill_empty(const WhSet& anchors, const std::vector<int>& empty, WhSet& out) {
        const index_t n = p_.size();
        const std::size_t e = std::min<std::size_t>(empty.size(), static_cast<std::size_t>(n));
        using Key = std::pair<double, index_t>;  // (best IoU, index)
        // The e smallest keys of every chunk, then of all of them.
        std::vector<std::vector<Key>> part(n_chunks(n));
        const int k = static_cast<int>(anchors.size());
        p_.for_each_loaded_chunk(
            nt_, [&](index_t c, index_t b, index_t end, const double* w, const double* h, const double* a, double* q) {
                detail::best_iou_range(w, h, a, end - b, anchors.w.data(), anchors.h.data(), anchors.a.data(), k, q);
                std::vector<Key>& keys = part[c];
                keys.reserve(end - b);
                for (index_t i = b; i < end; ++i)
                    if (!p_.skips() || !p_.absent(i)) keys.emplace_back(q[i - b], i);
                const std::size_t m = std::min(e, keys.size());
                std::partial_sort(keys.begin(), keys.begin() + m, keys.end());
                keys.resize(m);
                keys.shrink_to_fit();
            });
        std::vector<Key> all;
        for (const auto& keys : part) all.insert(all.end(), keys.begin(), keys.end());
        const std::size_t taken = std::min(e, all.size());  // (fewer present boxes than empty clusters)
        std::partial_sort(all.begin(), all.begin() + taken, all.end());
        for (std::size_t t = 0; t < taken; ++t)
            out.set(empty[t], p_.value(0, all[t].second), p_.value(1, all[t].second));
    }

    const Problem& p_;
    int k_;
    Update update_;
    int nt_;
    Isa isa_;  // the hand-written kernels' instruction set for this run
    std::vector<L> labels_;
    std::vector<index_t> cnt_;      // members per cluster
    std::vector<index_t> changed_;  // per chunk, in the last assignment
    std::vector<Thread> threads_;   // per thread: partials and scratch
    MeanEngine<L> mean_;
    HistMedian<L> hist_;
    Bounds bounds_;
    bool use_float_ = false;
    std::array<float, kMaxFixedK> faw_{}, fah_{}, faa_{};
};

}  // namespace fastanchor
