// fastanchor: the histogram median of the Lloyd update (HistMedian), with no sort order kept.
//
// Per cluster and coordinate, a histogram of the boxes' keys (a value's float bit pattern,
// monotone in the value) over `bins_` bins of 2^shift keys each, kept up to date by every move
// (a thread's partial counts, merged after the pass: integers, so the same in any order). The bin
// of the median rank is found from the counts; one pass over the boxes then collects the values of
// that bin's members (refined by a finer histogram first when the bin holds too many), and the
// median is selected among them. So the median is exact. Once a median stays in its bin, the
// values around it are cached (Cached) and kept up to date by the moves, and the pass is skipped
// while the median stays inside them. docs/design.md, "The histogram median".
//
// Weighted boxes: a second histogram adds each box's integer weight (Problem::units), and the
// ranks are counted in those units. A box of weight u counts as u boxes of its value, so the
// median is the unit-weight median of that multiset: the first box whose cumulative weight reaches
// half the cluster's total, or on an exact half the mean of its value and the next one, as the
// sort-based median (median_sorted.hpp) and the chunked fits (step.hpp) take it. The box counts
// still size the gathers and cached ranges.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <iterator>
#include <limits>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../common.hpp"
#include "../constants.hpp"
#include "flags.hpp"
#include "median_targets.hpp"
#include "problem.hpp"
#include "ranges.hpp"
#include "thread.hpp"

namespace fastanchor {

// A histogram layout fixed by the caller: `bins` bins of 2^shift[X] keys from Problem::key_lo
// along X (bins 0: the histogram median chooses its own).
struct HistBins {
    int bins = 0;
    int shift[2] = {0, 0};
};

// The histogram median of one Lloyd run; L is the run's label type. It reads the run's labels and
// threads (their histogram partials, move logs and flag scratch).
template <class L>
class HistMedian {
public:
    using Thread = detail::LloydThread;
    // The largest k with a histogram median, and the budget of histogram bins per coordinate.
    static constexpr int kMaxHistK = 4096;
    static constexpr index_t kHistBudget = index_t{1} << 20;
    // A bin holding more boxes of a cluster than this is refined before its values are collected.
    static constexpr index_t kGatherCap = index_t{1} << 15;
    static constexpr int kRefineBits = 12;
    static constexpr index_t kBlock = Thread::kBlock;

    // Whether the histogram median serves the update of a problem (weighted or not) with k clusters.
    static bool serves(int k) { return k <= kMaxHistK; }

    // fixed: the layout of a chunk's histograms that merge with other chunks' (ChunkLloyd).
    HistMedian(const Problem& p, int k, int n_threads, bool on, Isa isa, const std::vector<L>& labels,
               std::vector<Thread>& threads, HistBins fixed = {})
        : p_(p),
          k_(k),
          nt_(n_threads),
          isa_(isa),
          labels_(labels),
          threads_(threads),
          on_(on),
          weighted_(on && !p.wq.empty()) {
        if (!on) return;
        bins_ = 4096;
        while (bins_ > 16 && static_cast<index_t>(bins_) * k > kHistBudget) bins_ /= 2;
        for (int X = 0; X < 2; ++X) {
            shift_[X] = 0;
            while (((p.key_hi[X] - p.key_lo[X]) >> shift_[X]) >= static_cast<std::uint32_t>(bins_)) ++shift_[X];
        }
        if (fixed.bins > 0) {
            bins_ = fixed.bins;
            shift_[0] = fixed.shift[0];
            shift_[1] = fixed.shift[1];
        }
        hist_.assign(2 * static_cast<std::size_t>(k) * bins_, 0);
        if (weighted_) whist_.assign(hist_.size(), 0);
        cache_.resize(2 * static_cast<std::size_t>(k));
        last_bin_.assign(2 * static_cast<std::size_t>(k), 0xffffffffu);
    }

    bool on() const { return on_; }
    // Whether the ranks are counted in units of weight (a second histogram, Thread::whist).
    bool weighted() const { return weighted_; }
    // Counts in a thread's histogram partial ([X][cluster][bin]).
    std::size_t hist_size() const { return hist_.size(); }
    // The counts of the boxes' keys per coordinate, cluster and bin ([X][cluster][bin]).
    const std::vector<std::uint32_t>& counts() const { return hist_; }
    // A weighted fit's sums of the boxes' integer weights, laid out as counts(), and cluster c's.
    const std::vector<std::uint64_t>& weights() const { return whist_; }
    index_t weight_of(int c) const { return ranks(0, c, 0, static_cast<std::uint32_t>(bins_ - 1)); }

    // Box i moves from cluster `from` (none: -1) to l: its keys' bins in T's partial histogram,
    // and the move logged where it enters or leaves a cached range.
    void record_move(Thread& T, index_t i, std::int32_t from, std::int32_t l) const {
        const std::uint32_t u = weighted_ ? p_.units(i) : 1u;
        for (int X = 0; X < 2; ++X) {
            const std::uint32_t key = p_.key(X, i);
            const std::size_t to = bin(X, l, key);
            ++T.hist[to];
            if (weighted_) T.whist[to] += u;
            if (from >= 0) {
                const std::size_t was = bin(X, from, key);
                --T.hist[was];
                if (weighted_) T.whist[was] -= u;
            }
            const std::int32_t sk = static_cast<std::int32_t>(key);
            const std::uint32_t to_slot = static_cast<std::uint32_t>(X * k_ + l);
            const Cached& in = cache_[to_slot];
            if (in.valid && sk >= in.lo && sk <= in.hi) T.log.push_back({to_slot, u, true, p_.value(X, i)});
            if (from >= 0) {
                const std::uint32_t from_slot = static_cast<std::uint32_t>(X * k_ + from);
                const Cached& out = cache_[from_slot];
                if (out.valid && sk >= out.lo && sk <= out.hi) T.log.push_back({from_slot, u, false, p_.value(X, i)});
            }
        }
    }

    // Adds a thread's partial histogram into the totals and clears it.
    void merge(Thread& t) {
        for (std::size_t j = 0; j < hist_.size(); ++j) hist_[j] += static_cast<std::uint32_t>(t.hist[j]);
        std::fill(t.hist.begin(), t.hist.end(), 0);
        if (!weighted_) return;
        for (std::size_t j = 0; j < whist_.size(); ++j) whist_[j] += static_cast<std::uint64_t>(t.whist[j]);
        std::fill(t.whist.begin(), t.whist.end(), 0);
    }

    // The medians of every cluster with members (counts[c] > 0) into mw and mh.
    void update(const std::vector<index_t>& counts, std::vector<double>& mw, std::vector<double>& mh) {
        apply_logs();
        std::vector<detail::SelectTarget> targets;
        // (target, rank slot) of each cluster's lower and upper median, per coordinate (first
        // -1: found in the cache, set at once).
        constexpr int kCachedHit = -1;
        std::vector<std::array<std::pair<int, int>, 2>> where(2 * static_cast<std::size_t>(k_));
        // Per cluster, the units its ranks are counted in: its boxes, or its total integer weight.
        std::vector<index_t> total(counts.begin(), counts.end());
        if (weighted_)
            for (int c = 0; c < k_; ++c) total[c] = counts[c] > 0 ? weight_of(c) : 0;
        for (int X = 0; X < 2; ++X) {
            double* med = X == 0 ? mw.data() : mh.data();
            for (int c = 0; c < k_; ++c) {
                const index_t cnt = counts[c];
                const std::size_t sl = static_cast<std::size_t>(X) * k_ + c;
                Cached& C = cache_[sl];
                if (cnt <= 0) {
                    C.valid = false;
                    continue;
                }
                const index_t r1 = (total[c] + 1) / 2;  // the lower median's rank
                const bool two = total[c] % 2 == 0;     // and the upper one's: r1 + 1
                const std::uint32_t* h = hist_.data() + sl * bins_;
                const auto [b1, q1] = find_rank(X, c, r1);
                // The upper median shares the lower one's bin, or is the first member of the next
                // non-empty bin.
                const bool shared = !two || q1 < ranks(X, c, b1, b1);
                const std::uint32_t b2 = shared ? b1 : find_rank(X, c, r1 + 1).first;
                auto members = [&](std::uint32_t from, std::uint32_t to) {
                    index_t m = 0;
                    for (std::uint32_t b = from; b <= to; ++b) m += h[b];
                    return m;
                };
                if (C.valid && C.bin0 <= b1 && b2 <= C.bin1) {
                    const index_t below = C.bin0 > 0 ? ranks(X, c, 0, C.bin0 - 1) : 0;
                    const index_t inside = ranks(X, c, C.bin0, C.bin1);
                    const std::size_t held = weighted_ ? C.wvalues.size() : C.values.size();
                    if (members(C.bin0, C.bin1) == static_cast<index_t>(held) && r1 > below &&
                        r1 - below + two <= inside) {
                        double lo = 0.0, hi = 0.0;
                        bool found = true;
                        if (weighted_) {
                            found = detail::unit_value(C.wvalues, r1 - below, lo) &&
                                    detail::unit_value(C.wvalues, r1 - below + two, hi);
                        } else {
                            lo = C.values[r1 - below - 1];
                            hi = two ? C.values[r1 - below] : lo;
                        }
                        if (found) {
                            // An even total: the cumulative count reaches half exactly at the
                            // lower median, so the median is the mean of it and the next member
                            // (numpy.median).
                            med[c] = two ? (lo + hi) / 2.0 : lo;
                            where[sl][0].first = kCachedHit;
                            continue;
                        }
                    }
                }
                C.valid = false;
                auto& w = where[sl];
                // A target for the members of cluster c in bins [B0, B1] along X.
                auto add = [&](std::uint32_t B0, std::uint32_t B1, index_t count, index_t rank) {
                    detail::SelectTarget t;
                    t.X = X;
                    t.c = c;
                    t.lo = p_.key_lo[X] + (B0 << shift_[X]);
                    t.hi = static_cast<std::uint32_t>(std::min<std::uint64_t>(
                        std::uint64_t{p_.key_lo[X]} + (std::uint64_t{B1 + 1} << shift_[X]) - 1, 0xffffffffu));
                    t.shift = shift_[X];
                    t.count = count;
                    t.rank[0] = rank;
                    targets.push_back(std::move(t));
                    return std::make_pair(static_cast<int>(targets.size()) - 1, 0);
                };
                // A run of bins around the median, gathered whole, when small enough; cached (with
                // kMargin bins on each side) once the median stays in its bin from one update to
                // the next (before that, the moves would soon take it out of any cached run).
                const bool settled = last_bin_[sl] == b1;
                last_bin_[sl] = b1;
                const std::uint32_t last = static_cast<std::uint32_t>(bins_ - 1);
                bool gathered = false;
                for (std::uint32_t margin : {settled ? kMargin : 0u, 0u}) {
                    const std::uint32_t B0 = b1 > margin ? b1 - margin : 0, B1 = std::min(last, b2 + margin);
                    const index_t count = members(B0, B1);
                    if (count > kGatherCap) continue;
                    const index_t below = B0 > 0 ? ranks(X, c, 0, B0 - 1) : 0;
                    w[0] = add(B0, B1, count, r1 - below);
                    w[1] = {w[0].first, two ? 1 : 0};
                    detail::SelectTarget& t = targets[w[0].first];
                    t.rank[1] = r1 - below + 1;
                    t.ranks = two ? 2 : 1;
                    t.whole = true;
                    t.keep = settled;
                    C.bin0 = B0;
                    C.bin1 = B1;
                    gathered = true;
                    break;
                }
                if (!gathered) {
                    // Crowded: one target per bin, refined by finer histograms if need be.
                    w[0] = add(b1, b1, h[b1], q1);
                    if (!two) {
                        w[1] = w[0];
                    } else if (shared) {
                        auto& t = targets[w[0].first];
                        t.rank[1] = q1 + 1;
                        t.ranks = 2;
                        w[1] = {w[0].first, 1};
                    } else {
                        w[1] = add(b2, b2, h[b2], 1);
                    }
                }
            }
        }
        if (targets.empty()) return;
        select(targets);
        for (int X = 0; X < 2; ++X) {
            double* med = X == 0 ? mw.data() : mh.data();
            for (int c = 0; c < k_; ++c) {
                const std::size_t sl = static_cast<std::size_t>(X) * k_ + c;
                const auto& w = where[sl];
                if (counts[c] <= 0 || w[0].first == kCachedHit) continue;
                detail::SelectTarget& t0 = targets[w[0].first];
                const double lo = t0.value[w[0].second];
                const double hi = targets[w[1].first].value[w[1].second];
                med[c] = total[c] % 2 == 1 ? lo : (lo + hi) / 2.0;
                if (t0.keep) {  // kept for the next updates (sorted by select)
                    Cached& C = cache_[sl];
                    C.values = std::move(t0.kept);
                    C.wvalues = std::move(t0.wkept);
                    C.lo = static_cast<std::int32_t>(t0.lo);
                    C.hi = static_cast<std::int32_t>(std::min<std::uint32_t>(t0.hi, 0x7fffffffu));
                    C.valid = true;
                }
            }
        }
    }

private:
    std::int32_t label(index_t i) const { return static_cast<std::int32_t>(labels_[i]); }

    // Histogram bin of a key along X (clamped: a value changed behind the fit's back cannot
    // index out of range).
    std::size_t bin(int X, int c, std::uint32_t key) const {
        const std::uint32_t b = std::min<std::uint32_t>((key - p_.key_lo[X]) >> shift_[X], bins_ - 1);
        return (static_cast<std::size_t>(X) * k_ + c) * bins_ + b;
    }

    // The bin of cluster c's histogram along X holding its rank-th smallest key (1-based; in
    // units of weight for a weighted fit), and the rank within that bin.
    std::pair<std::uint32_t, index_t> find_rank(int X, int c, index_t rank) const {
        const std::size_t at = (static_cast<std::size_t>(X) * k_ + c) * bins_;
        const auto [b, q] = weighted_
                                ? detail::rank_in_counts(whist_.data() + at, static_cast<std::size_t>(bins_), rank)
                                : detail::rank_in_counts(hist_.data() + at, static_cast<std::size_t>(bins_), rank);
        return {static_cast<std::uint32_t>(b), q};
    }

    // The ranks (boxes, or units of weight) of cluster c along X in bins [from, to].
    index_t ranks(int X, int c, std::uint32_t from, std::uint32_t to) const {
        const std::size_t at = (static_cast<std::size_t>(X) * k_ + c) * bins_;
        index_t m = 0;
        if (weighted_) {
            for (std::uint32_t b = from; b <= to; ++b) m += static_cast<index_t>(whist_[at + b]);
        } else {
            for (std::uint32_t b = from; b <= to; ++b) m += static_cast<index_t>(hist_[at + b]);
        }
        return m;
    }

    // The values gathered for cluster c along X: every member with a key in bins [bin0, bin1]
    // (keys [lo, hi]), sorted, kept up to date by the moves (Thread::log) so that a median that
    // stays in these bins needs no pass over the boxes.
    struct Cached {
        bool valid = false;
        std::uint32_t bin0 = 0, bin1 = 0;
        std::int32_t lo = 1, hi = 0;
        std::vector<double> values;                             // unit weights
        std::vector<std::pair<double, std::uint32_t>> wvalues;  // weighted: (value, units)
    };
    // Bins gathered on each side of the median's (when they hold at most kGatherCap members).
    static constexpr std::uint32_t kMargin = 2;

    // The moves since the last update into and out of the cached ranges, merged into the sorted
    // values (O(values + moves) per range that had any).
    void apply_logs() {
        if (weighted_) {
            apply_logs_as([](const Thread::Logged& e) { return std::make_pair(e.value, e.units); },
                          [](Cached& C) -> auto& { return C.wvalues; });
        } else {
            apply_logs_as([](const Thread::Logged& e) { return e.value; }, [](Cached& C) -> auto& { return C.values; });
        }
    }

    // apply_logs on the cached values values_of(C), each logged move read as entry(move).
    template <class Entry, class Values>
    void apply_logs_as(Entry entry, Values values_of) {
        using V = std::decay_t<decltype(entry(std::declval<const Thread::Logged&>()))>;
        std::vector<std::vector<V>> add(cache_.size()), del(cache_.size());
        bool any = false;
        for (auto& t : threads_) {
            for (const auto& e : t.log) (e.add ? add : del)[e.slot].push_back(entry(e));
            any |= !t.log.empty();
            t.log.clear();
        }
        if (!any) return;
        std::vector<V> kept, merged;
        for (std::size_t sl = 0; sl < cache_.size(); ++sl) {
            Cached& C = cache_[sl];
            if (!C.valid || (add[sl].empty() && del[sl].empty())) continue;
            std::vector<V>& values = values_of(C);
            std::sort(add[sl].begin(), add[sl].end());
            std::sort(del[sl].begin(), del[sl].end());
            kept.clear();
            std::set_difference(values.begin(), values.end(), del[sl].begin(), del[sl].end(), std::back_inserter(kept));
            if (kept.size() + del[sl].size() != values.size()) {  // only if the values changed meanwhile
                C.valid = false;
                continue;
            }
            merged.clear();
            std::merge(kept.begin(), kept.end(), add[sl].begin(), add[sl].end(), std::back_inserter(merged));
            values.swap(merged);
        }
    }

    // Whether a target's members are gathered (a run of whole bins, a small bin, or one key), not
    // refined by a finer histogram first.
    static bool gathers(const detail::SelectTarget& T) { return T.whole || T.count <= kGatherCap || T.shift == 0; }

    // detail::flag_ranges of the m boxes from s0 (the AVX2 form where it serves).
    std::uint8_t flag_block(const L* lab, index_t s0, index_t m, const std::int32_t* lo0, const std::int32_t* hi0,
                            const std::int32_t* lo1, const std::int32_t* hi1, std::uint8_t* hit) const {
        const float* fr = p_.frows();
        if (!fr) return detail::flag_in_ranges(lab, p_.f64 + 2 * s0, m, lo0, hi0, lo1, hi1, hit);
        return detail::flag_ranges(isa_, lab, fr + 2 * s0, m, k_, lo0, hi0, lo1, hi1, hit);
    }

    // Resolves every target: one pass over the boxes per round collects the values of the small
    // targets and a finer histogram (2^kRefineBits bins) of the large ones, which become smaller
    // targets for the next round.
    void select(std::vector<detail::SelectTarget>& targets) {
        const index_t n = p_.size();
        std::vector<int> pending(targets.size());
        std::iota(pending.begin(), pending.end(), 0);
        std::vector<std::pair<int, int>> split;  // (parent, target of its upper rank)
        while (!pending.empty()) {
            std::vector<int> gather, refine;
            for (const int t : pending) {
                detail::SelectTarget& T = targets[t];
                if (!T.whole && T.shift == 0 && p_.f32) {  // one key: one float32 value
                    T.value[0] = T.value[1] = Problem::key_value(T.lo);
                } else if (gathers(T)) {
                    gather.push_back(t);
                } else {
                    refine.push_back(t);
                }
            }
            if (gather.empty() && refine.empty()) break;
            // Per cluster and coordinate, the targets to look at (at most two in a round).
            constexpr int kNoTarget = -1;
            std::vector<std::array<int, 2>> table(2 * static_cast<std::size_t>(k_), {kNoTarget, kNoTarget});
            std::vector<int> role(targets.size(), -1);  // a refined target's index in refine
            auto enter = [&](int t) {
                auto& slot = table[static_cast<std::size_t>(targets[t].X) * k_ + targets[t].c];
                slot[slot[0] == kNoTarget ? 0 : 1] = t;
            };
            for (const int t : gather) enter(t);
            for (std::size_t r = 0; r < refine.size(); ++r) {
                role[refine[r]] = static_cast<int>(r);
                enter(refine[r]);
            }
            constexpr std::size_t kSub = std::size_t{1} << kRefineBits;
            const int nt = static_cast<int>(threads_.size());
            std::vector<std::vector<detail::Gathered>> found(nt);
            // The refined targets' finer histograms per thread: box counts, and a weighted fit's
            // units of weight.
            std::vector<std::vector<index_t>> sub(nt, std::vector<index_t>(refine.size() * kSub, 0));
            std::vector<std::vector<index_t>> wsub(weighted_ ? nt : 0, std::vector<index_t>(refine.size() * kSub, 0));
            // Per cluster and coordinate, the key range of its targets in this round (empty: lo >
            // hi). Keys of positive floats are below 2^31, so they compare as int32 (vectorizable).
            // With one-byte labels each coordinate's table has a slot for every label value, so
            // that the label kNone of a box left out of the fit (Problem::skips) reads an empty
            // range.
            const std::size_t slots = std::is_same_v<L, std::uint8_t> ? std::max<std::size_t>(k_, kByteLabelSlots)
                                                                      : static_cast<std::size_t>(k_);
            std::vector<std::int32_t> range_lo(2 * slots, 1), range_hi(2 * slots, 0);
            for (std::size_t entry = 0; entry < table.size(); ++entry) {
                const std::size_t kk = static_cast<std::size_t>(k_);
                const std::size_t slot = entry / kk * slots + entry % kk;  // (X, c) of the entry
                for (const int t : table[entry]) {
                    if (t == kNoTarget) continue;
                    const std::int64_t lo = targets[t].lo;
                    const std::int64_t hi =
                        std::min<std::int64_t>(targets[t].hi, std::numeric_limits<std::int32_t>::max());
                    const bool first = range_lo[slot] > range_hi[slot];
                    range_lo[slot] = static_cast<std::int32_t>(first ? lo : std::min<std::int64_t>(range_lo[slot], lo));
                    range_hi[slot] = static_cast<std::int32_t>(first ? hi : std::max<std::int64_t>(range_hi[slot], hi));
                }
            }
            const std::int32_t *lo0 = range_lo.data(), *hi0 = range_hi.data();
            const std::int32_t *lo1 = range_lo.data() + slots, *hi1 = range_hi.data() + slots;
            for_each_chunk(n, nt_, [&](index_t, index_t b, index_t e) {
                {
                    Thread& TH = threads_[static_cast<std::size_t>(thread_index())];
                    auto& out = found[static_cast<std::size_t>(thread_index())];
                    index_t* hs = sub[static_cast<std::size_t>(thread_index())].data();
                    index_t* ws = weighted_ ? wsub[static_cast<std::size_t>(thread_index())].data() : nullptr;
                    std::uint8_t* hit = TH.flag.data();
                    // (target, box i, X) of the values to gather: read at the end of the chunk,
                    // prefetched when found (float64 rows: the pass reads their float copy).
                    std::vector<std::tuple<int, index_t, int>> at;
                    for (index_t s0 = b; s0 < e; s0 += kBlock) {
                        const index_t m = std::min(e, s0 + kBlock) - s0;
                        const L* lab = labels_.data() + s0;
                        const std::uint8_t any = flag_block(lab, s0, m, lo0, hi0, lo1, hi1, hit);
                        if (!any) continue;
                        detail::for_each_flagged(hit, m, [&](index_t t) {
                            const index_t i = s0 + t;
                            const int c = label(i);
                            // (The AVX2 kernel's 16-entry tables read a label above 15 as another.)
                            if (c < 0 || c >= k_) return;
                            for (int X = 0; X < 2; ++X) {
                                if (!(hit[t] >> X & 1)) continue;
                                const std::uint32_t key = p_.key(X, i);
                                for (const int tg : table[static_cast<std::size_t>(X) * k_ + c]) {
                                    if (tg == kNoTarget) break;
                                    const detail::SelectTarget& T = targets[tg];
                                    const std::uint32_t off = key - T.lo;
                                    if (off > T.hi - T.lo) continue;
                                    if (gathers(T)) {
                                        p_.prefetch_row(i);
                                        at.emplace_back(tg, i, X);
                                    } else {
                                        const int fine = std::max(0, T.shift - kRefineBits);
                                        const std::size_t j = static_cast<std::size_t>(role[tg]) * kSub + (off >> fine);
                                        ++hs[j];
                                        if (ws) ws[j] += p_.units(i);
                                    }
                                    break;
                                }
                            }
                        });
                    }
                    for (const auto& [tg, i, X] : at) out.push_back({tg, p_.units(i), p_.value(X, i)});
                }
            });
            // The gathered values, target by target; the ranks selected among them. The values
            // of a target are the same set whatever the threads, so the selection is too.
            std::vector<std::vector<double>> values(weighted_ ? 0 : targets.size());
            std::vector<std::vector<std::pair<double, std::uint32_t>>> wvalues(weighted_ ? targets.size() : 0);
            for (auto& list : found) {
                for (const auto& g : list) {
                    if (weighted_) wvalues[g.target].emplace_back(g.value, g.units);
                    else values[g.target].push_back(g.value);
                }
            }
            for (const int t : gather) {
                detail::SelectTarget& T = targets[t];
                if (weighted_) {
                    detail::select_weighted(T, wvalues[t], Problem::key_value(T.lo));
                    continue;
                }
                std::vector<double>& v = values[t];
                if (v.empty()) {  // only if the values changed behind the fit's back
                    T.value[0] = T.value[1] = Problem::key_value(T.lo);
                    continue;
                }
                const index_t r0 = std::clamp<index_t>(T.rank[0], 1, static_cast<index_t>(v.size())) - 1;
                if (T.keep) {
                    std::sort(v.begin(), v.end());
                    T.value[0] = v[r0];
                    T.value[1] = v[std::min<index_t>(r0 + 1, static_cast<index_t>(v.size()) - 1)];
                    T.kept = std::move(v);
                    continue;
                }
                std::nth_element(v.begin(), v.begin() + r0, v.end());
                T.value[0] = v[r0];
                if (T.ranks == 2) {
                    T.value[1] = r0 + 1 < static_cast<index_t>(v.size())
                                     ? *std::min_element(v.begin() + r0 + 1, v.end())
                                     : v[r0];
                }
            }
            // Refined targets: each rank goes to its finer bin (a second rank may fall in the next
            // non-empty one: then it becomes a target of its own).
            std::vector<int> next;
            for (std::size_t r = 0; r < refine.size(); ++r) {
                const int t = refine[r];
                std::vector<index_t> h(kSub, 0), hw(weighted_ ? kSub : 0, 0);
                for (auto& s : sub)
                    for (std::size_t j = 0; j < kSub; ++j) h[j] += s[r * kSub + j];
                for (auto& s : wsub)
                    for (std::size_t j = 0; j < kSub; ++j) hw[j] += s[r * kSub + j];
                const std::vector<index_t>& by_rank = weighted_ ? hw : h;  // the ranks' units
                const detail::SelectTarget parent = targets[t];
                const int fine = std::max(0, parent.shift - kRefineBits);
                // parent narrowed to its finer bin j, holding the rank-th of that bin
                auto narrowed = [&](std::size_t j, index_t rank) {
                    detail::SelectTarget u = parent;
                    u.lo = parent.lo + (static_cast<std::uint32_t>(j) << fine);
                    u.hi = u.lo + ((std::uint32_t{1} << fine) - 1);
                    u.shift = fine;
                    u.count = h[j];
                    u.rank[0] = rank;
                    u.ranks = 1;
                    return u;
                };
                const auto [j0, q0] = detail::rank_in_counts(by_rank.data(), kSub, parent.rank[0]);
                targets[t] = narrowed(j0, q0);
                next.push_back(t);
                if (parent.ranks == 2) {
                    const auto [j1, q1] = detail::rank_in_counts(by_rank.data(), kSub, parent.rank[1]);
                    if (j1 == j0) {
                        targets[t].rank[1] = q1;
                        targets[t].ranks = 2;
                    } else {
                        // The upper rank is the first of a later bin: a separate target whose
                        // value is copied back below.
                        targets.push_back(narrowed(j1, q1));
                        split.push_back({t, static_cast<int>(targets.size()) - 1});
                        next.push_back(static_cast<int>(targets.size()) - 1);
                    }
                }
            }
            pending = std::move(next);
        }
        // Upper ranks resolved in targets of their own go back to their parent's second value.
        for (auto it = split.rbegin(); it != split.rend(); ++it) {
            targets[it->first].value[1] = targets[it->second].value[0];
            targets[it->first].ranks = 2;
        }
    }

    const Problem& p_;
    int k_;
    int nt_;
    Isa isa_;
    const std::vector<L>& labels_;
    std::vector<Thread>& threads_;
    bool on_ = false;
    bool weighted_ = false;
    int bins_ = 0;
    int shift_[2] = {0, 0};
    std::vector<std::uint32_t> hist_;      // [X][cluster][bin]: box counts
    std::vector<std::uint64_t> whist_;     // [X][cluster][bin]: integer weights (a weighted fit)
    std::vector<Cached> cache_;            // [X][cluster]
    std::vector<std::uint32_t> last_bin_;  // [X][cluster]: the lower median's bin at the last update
};

}  // namespace fastanchor
