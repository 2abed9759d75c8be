// fastanchor: the mean update of the Lloyd iterations (MeanEngine).
//
// Unit weights (Problem::exact_sums): every box's value is an integer number of units 2^sum_exp,
// and each cluster keeps the exact integer sums of its members, moved box by box as labels change
// (a thread's partials, merged after the pass): an update costs O(moves), and the sums are the
// same for any order of the moves, threads or chunks. With one-byte labels the moves go to
// per-label slots (LloydThread::MeanMoves; 64-bit when every sum fits, Problem::sums64) with no
// branch. Weighted boxes: the exact sums of each box's integer weight (Problem::units) times its
// value's integer, moved box by box when those integers fit 62 bits (Problem::fixed64), else
// per chunk for the chunks where a label changed, in two halves (exact_wsums); or, when the values
// span too many binary orders for those, the float sums of weight times value in box order per
// chunk, combined in chunk order. docs/design.md,
// "Fixed-point sums".
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../common.hpp"
#include "problem.hpp"
#include "thread.hpp"

namespace fastanchor {

template <class L>
class MeanEngine {
public:
    using Thread = detail::LloydThread;
    // Per cluster and chunk: sum of weight * w, weight * h, weight (mean without exact sums).
    static constexpr int kStats = 3;

    // on: the run's update is the mean. labels: the run's labels (read by the chunk sums).
    MeanEngine(const Problem& p, int k, bool on, const std::vector<L>& labels)
        : p_(p), k_(k), labels_(labels), on_(on) {
        // Weighted, values' integers below 2^62: the moves' exact sums of weight times value;
        // wider: the chunks' sums, in two halves.
        wmoves_ = on && p.exact_wsums && p.fixed64;
        wexact_ = on && p.exact_wsums && !p.fixed64;
        exact_ = on && (p.exact_sums || wmoves_);
        slot_ = std::is_same_v<L, std::uint8_t> && on && p.exact_sums;
        if (exact_) {
            sum_w_.assign(k, 0);
            sum_h_.assign(k, 0);
            sum_u_.assign(k, 0);
        }
        const auto per_chunk = static_cast<std::size_t>(n_chunks(p.size())) * k;
        if (wexact_) wpart_.assign(per_chunk * kWStats, 0);
        else if (stats()) part_.assign(per_chunk * kStats, 0.0);
    }

    // Exact weighted sums: a value's integer (below 2^Problem::kSumBits) in two halves of
    // kSplitBits bits, each half times a weight (below 2^31) summed over up to 2^32 boxes within
    // 2^110 (integers below 2^62, Problem::fixed64: whole, within 2^125). Per cluster and chunk:
    // the weight, then the high and low halves' sums of w and of h.
    static constexpr int kSplitBits = 47;
    static constexpr int kWStats = 5;
    static_assert(Problem::kSumBits <= 2 * kSplitBits, "two halves hold a value's integer");

    bool on() const { return on_; }
    // The exact sums, moved by record_move into a thread's per-cluster partials.
    bool exact() const { return exact_; }
    // The exact sums, moved by slot_move into a thread's per-label slots (one-byte labels).
    bool slot() const { return slot_; }
    // The weighted sums per chunk (chunk_stats): exact (wexact_) or floats.
    bool stats() const { return on_ && !exact_; }

    // Box i moves from one-byte label `from` (none: kByteLabelNone, whose slot nobody reads) to l
    // (slot()): without a branch, small enough to inline into the loops over flagged boxes.
    __attribute__((always_inline)) void slot_move(Thread& T, index_t i, std::uint8_t from, std::int32_t l) const {
        if (p_.sums64) slot_move_into(T.mean64, i, from, l);
        else slot_move_into(T.mean128, i, from, l);
    }

    // Box i moves from cluster `from` (none: -1) to l (exact(), not slot()); weighted, its weight
    // times its values (below 2^93: sums within 2^125 for 2^32 boxes) and its weight.
    void record_move(Thread& T, index_t i, std::int32_t from, std::int32_t l) const {
        if (wmoves_) {
            using u128 = unsigned __int128;
            const std::uint64_t u = p_.units(i);
            const auto w =
                static_cast<int128_t>(static_cast<u128>(u) * static_cast<std::uint64_t>(p_.fixed_small(0, i)));
            const auto h =
                static_cast<int128_t>(static_cast<u128>(u) * static_cast<std::uint64_t>(p_.fixed_small(1, i)));
            T.sum_w[l] += w;
            T.sum_h[l] += h;
            T.sum_u[l] += u;
            if (from >= 0) {
                T.sum_w[from] -= w;
                T.sum_h[from] -= h;
                T.sum_u[from] -= u;
            }
            return;
        }
        const int128_t w = p_.fixed(0, i), h = p_.fixed(1, i);
        T.sum_w[l] += w;
        T.sum_h[l] += h;
        if (from >= 0) {
            T.sum_w[from] -= w;
            T.sum_h[from] -= h;
        }
    }

    // A thread's slot partials (counts and sums) into the totals, cleared (slot()).
    void merge_slots(Thread& t, std::vector<index_t>& cnt) {
        auto merge = [&](auto& d) {
            for (int c = 0; c < k_; ++c) {
                cnt[c] += d.count[c];
                sum_w_[c] += d.w[c];
                sum_h_[c] += d.h[c];
            }
            d = {};
        };
        if (p_.sums64) merge(t.mean64);
        else merge(t.mean128);
    }

    // A thread's per-cluster partial sums into the totals, cleared (exact(), not slot()).
    void merge_sums(Thread& t) {
        for (int c = 0; c < k_; ++c) {
            sum_w_[c] += t.sum_w[c];
            sum_h_[c] += t.sum_h[c];
            sum_u_[c] += t.sum_u[c];
        }
        std::fill(t.sum_w.begin(), t.sum_w.end(), 0);
        std::fill(t.sum_h.begin(), t.sum_h.end(), 0);
        std::fill(t.sum_u.begin(), t.sum_u.end(), 0);
    }

    // The exact sums per cluster along X, in units of 2^Problem::sum_exp (exact()).
    const std::vector<int128_t>& sums(int X) const { return X == 0 ? sum_w_ : sum_h_; }
    // The integer weights per cluster, moved with the weighted exact sums.
    const std::vector<int128_t>& weights() const { return sum_u_; }

    // The means of every cluster with members (cnt[c] > 0) into mw and mh.
    void update(const std::vector<index_t>& cnt, std::vector<double>& mw, std::vector<double>& mh) const {
        const int k = k_;
        if (exact_) {
            for (int c = 0; c < k; ++c) {
                if (cnt[c] == 0) continue;
                if (wmoves_) {  // (as split_to_double(0, sum): one rounding of the integer)
                    const double weight = static_cast<double>(sum_u_[c]);
                    mw[c] = std::ldexp(static_cast<double>(sum_w_[c]), p_.sum_exp) / weight;
                    mh[c] = std::ldexp(static_cast<double>(sum_h_[c]), p_.sum_exp) / weight;
                } else {
                    mw[c] = p_.fixed_mean(sum_w_[c], cnt[c]);
                    mh[c] = p_.fixed_mean(sum_h_[c], cnt[c]);
                }
            }
            return;
        }
        const std::size_t chunks = static_cast<std::size_t>(n_chunks(p_.size()));
        if (wexact_) {
            std::vector<int128_t> tot(static_cast<std::size_t>(k) * kWStats, 0);
            for (std::size_t c = 0; c < chunks; ++c) {
                const int128_t* pc = wpart_.data() + c * k * kWStats;
                for (std::size_t j = 0; j < tot.size(); ++j) tot[j] += pc[j];
            }
            for (int c = 0; c < k; ++c) {
                if (cnt[c] == 0) continue;
                const int128_t* t = tot.data() + static_cast<std::size_t>(c) * kWStats;
                const double weight = static_cast<double>(t[0]);
                mw[c] = std::ldexp(split_to_double(t[1], t[2]), p_.sum_exp) / weight;
                mh[c] = std::ldexp(split_to_double(t[3], t[4]), p_.sum_exp) / weight;
            }
            return;
        }
        std::vector<double> st(static_cast<std::size_t>(k) * kStats, 0.0);
        for (std::size_t c = 0; c < chunks; ++c) {
            const double* pc = part_.data() + c * k * kStats;
            for (std::size_t j = 0; j < st.size(); ++j) st[j] += pc[j];
        }
        for (int c = 0; c < k; ++c) {
            if (cnt[c] == 0) continue;
            const double sw = st[c * kStats], sh = st[c * kStats + 1], total = st[c * kStats + 2];
            mw[c] = sw / total;
            mh[c] = sh / total;
            // Sums this small may hold products weight * value that underflowed
            // (weights spanning 290 orders of magnitude and more).
            if (!(sw >= kTinySum && sh >= kTinySum)) rescaled_mean(c, mw[c], mh[c]);
        }
    }

    // Below this, a sum of weight * value may have lost precision to subnormal products (each
    // off by at most 2^-1075; above it, that is below 2^-74 relative for any n < 2^32).
    static constexpr double kTinySum = 0x1p-969;

    // Cluster c's weighted mean again, every weight divided by the cluster's largest, so that
    // the largest term is the value itself: for sums below kTinySum.
    void rescaled_mean(int c, double& mw, double& mh) const {
        const index_t n = p_.size();
        double top = 0.0;
        for (index_t i = 0; i < n; ++i)
            if (label(i) == c) top = std::max(top, p_.wt(i));
        double sw = 0.0, sh = 0.0, st = 0.0;
        for (index_t i = 0; i < n; ++i) {
            if (label(i) != c) continue;
            const double q = p_.wt(i) / top;
            sw += q * p_.value(0, i);
            sh += q * p_.value(1, i);
            st += q;
        }
        mw = sw / st;
        mh = sh / st;
    }

    // hi * 2^kSplitBits + lo (both non-negative, below 2^126) rounded once to a double (to
    // nearest, ties to even, as a conversion of the whole integer is: Python's float() of it).
    static double split_to_double(int128_t hi, int128_t lo) {
        using u128 = unsigned __int128;
        const u128 h = static_cast<u128>(hi), l = static_cast<u128>(lo);
        // The sum as top * 2^128 + low, then its leading 128 bits with a sticky bit for the rest.
        const u128 shifted = h << kSplitBits;
        const u128 low = shifted + l;
        const u128 top = (h >> (128 - kSplitBits)) + (low < shifted ? 1 : 0);
        if (top == 0) return static_cast<double>(low);
        int s = 0;
        while ((top >> s) != 0) ++s;  // top < 2^s: keep 128 bits from bit s up
        const u128 rest = low & ((u128{1} << s) - 1);
        const u128 lead = (top << (128 - s)) | (low >> s) | (rest != 0 ? 1 : 0);
        return std::ldexp(static_cast<double>(lead), s);
    }

    // Chunk c's statistics (mean without exact sums), summed in box order. Box i goes to copy
    // i % kCopies of the sums, the copies then added in a fixed order: consecutive boxes, which
    // often share a cluster, do not wait on each other's additions. With exact weighted sums,
    // the chunk's integers (in any order).
    void chunk_stats(index_t c, index_t b, index_t e) {
        if (wexact_) {
            int128_t* st = wpart_.data() + static_cast<std::size_t>(c) * k_ * kWStats;
            std::fill(st, st + static_cast<std::size_t>(k_) * kWStats, 0);
            constexpr int128_t kMask = (int128_t{1} << kSplitBits) - 1;
            for (index_t i = b; i < e; ++i) {
                int128_t* sl = st + static_cast<std::size_t>(label(i)) * kWStats;
                const int128_t u = p_.units(i), w = p_.fixed(0, i), h = p_.fixed(1, i);
                sl[0] += u;
                sl[1] += u * (w >> kSplitBits);
                sl[2] += u * (w & kMask);
                sl[3] += u * (h >> kSplitBits);
                sl[4] += u * (h & kMask);
            }
            return;
        }
        constexpr int kCopies = 4;
        const std::size_t per = static_cast<std::size_t>(k_) * kStats;
        std::vector<double> acc(kCopies * per, 0.0);
        for (index_t i = b; i < e; ++i) {
            double* sl =
                acc.data() + static_cast<std::size_t>(i % kCopies) * per + static_cast<std::size_t>(label(i)) * kStats;
            const double wi = p_.wt(i);
            sl[0] += wi * p_.value(0, i);
            sl[1] += wi * p_.value(1, i);
            sl[2] += wi;
        }
        double* st = part_.data() + static_cast<std::size_t>(c) * per;
        for (std::size_t j = 0; j < per; ++j) st[j] = (acc[j] + acc[per + j]) + (acc[2 * per + j] + acc[3 * per + j]);
    }

private:
    std::int32_t label(index_t i) const { return static_cast<std::int32_t>(labels_[i]); }

    template <class Moves>
    __attribute__((always_inline)) void slot_move_into(Moves& d, index_t i, std::uint8_t f, std::int32_t l) const {
        using Sum = std::remove_reference_t<decltype(d.w[0])>;
        Sum w, h;
        if constexpr (std::is_same_v<Sum, std::int64_t>) {
            w = p_.fixed_small(0, i);
            h = p_.fixed_small(1, i);
        } else {
            w = p_.fixed(0, i);
            h = p_.fixed(1, i);
        }
        ++d.count[l];
        --d.count[f];
        d.w[l] += w;
        d.w[f] -= w;
        d.h[l] += h;
        d.h[f] -= h;
    }

    const Problem& p_;
    int k_;
    const std::vector<L>& labels_;
    bool on_ = false;
    bool exact_ = false;                   // the mean from exact sums (Problem::exact_sums)
    bool wmoves_ = false;                  // ... weighted, moved box by box (exact_wsums, fixed64)
    bool wexact_ = false;                  // ... weighted, per chunk in two halves (exact_wsums)
    bool slot_ = false;                    // ... moved by slot_move (one-byte labels)
    std::vector<int128_t> sum_w_, sum_h_;  // per cluster, in units of 2^sum_exp (weighted: times weights)
    std::vector<int128_t> sum_u_;          // per cluster: the integer weights (wmoves_)
    std::vector<double> part_;             // per chunk and cluster: kStats sums (weighted mean)
    std::vector<int128_t> wpart_;          // per chunk and cluster: kWStats exact sums (wexact_)
};

}  // namespace fastanchor
