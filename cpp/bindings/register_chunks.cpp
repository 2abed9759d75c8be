// Bindings of the chunk kernels of the k-means behind fastanchor.dask and the out-of-core fits (the
// Lloyd pass, the chunk states kept between passes, the median's selection, the boxes that re-seed
// empty clusters and the initial anchors): each call reads one chunk of rows and returns its share
// of a whole-data result as numpy arrays (picklable), which python/fastanchor/_chunked.py merges
// exactly in any order. The scores of a chunk are in register_chunk_scores.cpp. kmeans/step.hpp;
// docs/design.md, "The Lloyd step kernel".
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "box_rows.hpp"
#include "chunk_common.hpp"
#include "fastanchor/iou.hpp"
#include "fastanchor/kmeans.hpp"

namespace fastanchor_py {
namespace {

fa::HistLayout hist_layout(fa::StepMode m, std::uint32_t key_lo_w, std::uint32_t key_lo_h, int shift_w, int shift_h,
                           int bins) {
    if (bins < 1 || shift_w < 0 || shift_w > 31 || shift_h < 0 || shift_h > 31)
        throw py::value_error("bins must be >= 1 and the shifts in [0, 31]");
    fa::HistLayout layout;
    layout.key_lo[0] = key_lo_w;
    layout.key_lo[1] = key_lo_h;
    layout.shift[0] = shift_w;
    layout.shift[1] = shift_h;
    layout.bins = m == fa::StepMode::Median ? bins : 1;
    return layout;
}

// The median's windows of a Lloyd pass (kmeans/windows.hpp, gather_windows): the arguments, checked,
// then the gathered values into a dict.
class Windows {
public:
    using KeyArray = py::array_t<std::uint32_t, py::array::c_style | py::array::forcecast>;

    Windows(const py::object& lo, const py::object& hi, std::int64_t cap, fa::StepMode m, int k,
            const fa::HistLayout& layout)
        : on_(!lo.is_none()),
          cap_(cap),
          below_(on_ ? 2 * static_cast<std::size_t>(k) : 0, 0),
          overflow_(below_.size(), 0),
          from_(below_.size()),
          k_(k) {
        if (on_ != !hi.is_none()) throw py::value_error("window_lo and window_hi go together");
        if (on_ && m != fa::StepMode::Median) throw py::value_error("windows are for mode 'median'");
        if (cap < 0) throw py::value_error("window_cap must be >= 0");
        if (!on_) return;
        lo_ = lo.cast<KeyArray>();
        hi_ = hi.cast<KeyArray>();
        const auto slots = static_cast<py::ssize_t>(2 * k);
        if (lo_.size() != slots || hi_.size() != slots) throw py::value_error("windows must have shape (2, k)");
        for (int X = 0; X < 2; ++X)
            for (int c = 0; c < k; ++c) from_[X * k + c] = layout.bin_start(X, lo_.data()[X * k + c]);
    }
    bool on() const { return on_; }

    // gather(lo, hi, from, cap, values, below, overflow) runs the gather (without the GIL).
    template <class Gather>
    void run(Gather&& gather) {
        if (on_) gather(lo_.data(), hi_.data(), from_.data(), cap_, win_, below_.data(), overflow_.data());
    }

    void into(py::dict& d) const {
        if (!on_) return;
        const auto m = static_cast<py::ssize_t>(win_.values.size());
        d["window_values"] = py::array_t<double>(m, win_.values.data());
        d["window_counts"] = py::array_t<std::int64_t>(m, win_.counts.data());
        d["window_slots"] = py::array_t<std::int32_t>(m, win_.slots.data());
        py::array_t<std::int64_t> below({py::ssize_t{2}, static_cast<py::ssize_t>(k_)});
        py::array_t<std::int64_t> overflow({py::ssize_t{2}, static_cast<py::ssize_t>(k_)});
        std::copy(below_.begin(), below_.end(), below.mutable_data());
        std::copy(overflow_.begin(), overflow_.end(), overflow.mutable_data());
        d["window_below"] = below;
        d["window_overflow"] = overflow;
    }

private:
    bool on_;
    fa::index_t cap_;
    KeyArray lo_, hi_;
    std::vector<std::int64_t> below_, overflow_;
    std::vector<std::uint32_t> from_;
    fa::WindowValues win_;
    int k_;
};

// A chunk's integer weights (weight_units.hpp) in the units of `shift`, from the float64 weights of
// its n rows (None: unit weights, an empty vector). The fit's first pass checked the weights and
// found the largest, from which `shift` comes; a weight changed since reads as one unit at least.
std::vector<std::uint32_t> chunk_units(const py::object& weights, std::int64_t shift, fa::index_t n) {
    if (weights.is_none()) return {};
    const auto w = weights.cast<py::array_t<double, py::array::c_style | py::array::forcecast>>();
    if (w.ndim() != 1 || w.shape(0) != static_cast<py::ssize_t>(n))
        throw py::value_error("weights must have one value per row");
    if (shift < -1100 || shift > 1100) throw py::value_error("weight_shift is out of range");
    const fa::WeightUnits units{static_cast<int>(shift)};
    constexpr double kTop = 0x1p31;  // (a weight above the largest would not fit)
    std::vector<std::uint32_t> out(static_cast<std::size_t>(n));
    const double* wp = w.data();
    py::gil_scoped_release release;
    for (fa::index_t i = 0; i < n; ++i) {
        const double x = std::ldexp(wp[i], static_cast<int>(shift));
        if (!(x >= 0.0 && x < kTop)) throw std::invalid_argument("a weight lies outside [0, the largest weight]");
        out[static_cast<std::size_t>(i)] = static_cast<std::uint32_t>(units(wp[i]));
    }
    return out;
}

// A chunk's partials (counts and weights, and the mean's exact sums, `weighted` in two halves, or
// the median's histograms) into d.
void partials_into(py::dict& d, const fa::StepPartials& part, fa::StepMode m, int k, int bins, bool weighted = false) {
    py::array_t<std::int64_t> count(k), weight(k);
    std::copy(part.count.begin(), part.count.end(), count.mutable_data());
    std::copy(part.weight.begin(), part.weight.end(), weight.mutable_data());
    d["count"] = count;
    d["weight"] = weight;
    if (m == fa::StepMode::Mean && weighted) {  // the high and low halves' sums, [X][cluster]
        for (const auto* half : {&part.wsum_hi, &part.wsum_lo}) {
            U64Array sums({py::ssize_t{2}, static_cast<py::ssize_t>(k), py::ssize_t{2}});
            std::uint64_t* s = sums.mutable_data();
            for (int j = 0; j < 2 * k; ++j) put_u128(s + 2 * j, half->empty() ? 0 : (*half)[j]);
            d[half == &part.wsum_hi ? "sums_hi" : "sums_lo"] = sums;
        }
        d["sum_exp"] =
            part.sum_exp == fa::StepPartials::kNoExp ? py::object(py::none()) : py::object(py::int_(part.sum_exp));
    } else if (m == fa::StepMode::Mean) {
        U64Array sums({py::ssize_t{2}, static_cast<py::ssize_t>(k), py::ssize_t{2}});
        std::uint64_t* s = sums.mutable_data();
        for (int c = 0; c < k; ++c) {
            put_u128(s + 2 * c, part.sum_w[c]);
            put_u128(s + 2 * (k + c), part.sum_h[c]);
        }
        d["sums"] = sums;
        d["sum_exp"] =
            part.sum_exp == fa::StepPartials::kNoExp ? py::object(py::none()) : py::object(py::int_(part.sum_exp));
    } else {
        U64Array hist({py::ssize_t{2}, static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(bins)});
        std::copy(part.hist.begin(), part.hist.end(), hist.mutable_data());
        d["hist"] = hist;
    }
}

// One Lloyd step over a chunk (kmeans/step.hpp): labels by the exact rule against `anchors`; the
// number of labels that differ from those against `prev_anchors` (when given, else -1); and, for
// mode "mean", the counts and exact sums (sum_exp, sums (2, k, 2) as (hi, lo) of 128-bit
// integers), for "median", the counts and histograms (2, k, bins) over the layout (key_lo, shift)
// per coordinate, and with windows (window_lo, window_hi: uint32 (2, k), kmeans/step.hpp
// gather_windows, at most window_cap distinct values per slot) the distinct values in them with
// their counts and slots X * k + c (window_values, window_counts, window_slots), and per slot the
// count of the cluster's values below the window within its first histogram bin and whether it
// held too many (window_below, window_overflow: int64 (2, k)). With `weights` (float64, one per
// row, positive), the histograms, the windows' counts and window_below add the rows' integer
// weights in the units of `weight_shift` (weight_units.hpp), "weight" holds each cluster's (else
// its count), and the mean's
// sums of weight times value come in two halves (sums_hi, sums_lo: (2, k, 2) as (hi, lo) of
// 128-bit integers; the sum is sums_hi * 2^47 + sums_lo, in units of 2^sum_exp).
py::dict chunk_lloyd(const py::array& wh, const Array& anchors, const py::object& prev_anchors, const std::string& mode,
                     std::uint32_t key_lo_w, std::uint32_t key_lo_h, int shift_w, int shift_h, int bins,
                     bool want_labels, const py::object& window_lo, const py::object& window_hi,
                     std::int64_t window_cap, const py::object& weights, std::int64_t weight_shift) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    checked_anchors(anchors, "anchors");
    const int kind = choice(mode, "mode", {"assign", "mean", "median"});
    const fa::StepMode m = kind == 0 ? fa::StepMode::AssignOnly : kind == 1 ? fa::StepMode::Mean : fa::StepMode::Median;
    const fa::HistLayout layout = hist_layout(m, key_lo_w, key_lo_h, shift_w, shift_h, bins);
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const int k = static_cast<int>(anchors.shape(0));
    Array prev;
    const bool has_prev = !prev_anchors.is_none();
    if (has_prev) {
        prev = prev_anchors.cast<Array>();
        check_rows(prev, "prev_anchors", 2, k);
    }
    Windows windows(window_lo, window_hi, window_cap, m, k, layout);
    const std::vector<std::uint32_t> units = chunk_units(weights, weight_shift, n);
    const fa::WhSet A = to_whset(anchors);
    const fa::WhSet P = has_prev ? to_whset(prev) : fa::WhSet();
    py::array_t<std::int32_t> labels(static_cast<py::ssize_t>(n));
    std::int32_t* lptr = labels.mutable_data();
    fa::StepPartials part(k, m, &layout);
    std::int64_t changed = -1;
    {
        py::gil_scoped_release release;
        fa::lloyd_step(rows, n, A, lptr, m, &layout, &part, units.empty() ? nullptr : units.data());
        const std::uint32_t* uptr = units.empty() ? nullptr : units.data();
        windows.run([&](auto&&... args) { fa::gather_windows(rows, n, lptr, k, args..., uptr); });
        if (has_prev) {
            std::vector<std::int32_t> before(static_cast<std::size_t>(n));
            fa::lloyd_step(rows, n, P, before.data(), fa::StepMode::AssignOnly, nullptr, nullptr);
            changed = 0;
            for (fa::index_t i = 0; i < n; ++i) changed += before[i] != lptr[i] ? 1 : 0;
        }
    }
    py::dict d;
    if (want_labels) d["labels"] = labels;
    d["changed"] = changed;
    if (m == fa::StepMode::AssignOnly) return d;
    partials_into(d, part, m, k, bins, !weights.is_none());
    windows.into(d);
    return d;
}

// A chunk's Lloyd state kept by the process between a fit's passes (kmeans/chunk_state.hpp),
// with the rows it reads in place.
struct ChunkState {
    py::object rows;  // the chunk's rows, kept alive
    std::unique_ptr<fa::ChunkLloyd> lloyd;
    fa::StepMode mode;
    int k;
    fa::HistLayout layout;
    bool weighted = false;
};

// With `weights` (as chunk_lloyd's), a weighted state: its partials are those of its labels and
// the rows' integer weights.
std::shared_ptr<ChunkState> chunk_state(const py::array& wh, int k, const std::string& mode, std::uint32_t key_lo_w,
                                        std::uint32_t key_lo_h, int shift_w, int shift_h, int bins,
                                        const py::object& weights, std::int64_t weight_shift) {
    auto st = std::make_shared<ChunkState>();
    const fa::BoxRows rows = box_rows(wh, st->rows);
    const int kind = choice(mode, "mode", {"mean", "median"});
    st->mode = kind == 0 ? fa::StepMode::Mean : fa::StepMode::Median;
    if (k < 1) throw py::value_error("k must be >= 1");
    if (wh.shape(0) < 1) throw py::value_error("a chunk state needs at least one row");
    st->layout = hist_layout(st->mode, key_lo_w, key_lo_h, shift_w, shift_h, bins);
    st->k = k;
    const fa::Update update = kind == 0 ? fa::Update::Mean : fa::Update::Median;
    std::vector<std::uint32_t> units = chunk_units(weights, weight_shift, static_cast<fa::index_t>(wh.shape(0)));
    st->weighted = !weights.is_none();
    py::gil_scoped_release release;
    st->lloyd = std::make_unique<fa::ChunkLloyd>(rows, static_cast<fa::index_t>(wh.shape(0)), k, update, st->layout,
                                                 std::move(units));
    return st;
}

// The state's step against `anchors`: the number of labels changed since its last step (every
// row at the first), the partials and the windows' values, as chunk_lloyd returns them.
py::dict chunk_state_step(ChunkState& st, const Array& anchors, const py::object& window_lo,
                          const py::object& window_hi, std::int64_t window_cap) {
    check_rows(anchors, "anchors", 2, st.k);
    Windows windows(window_lo, window_hi, window_cap, st.mode, st.k, st.layout);
    const fa::WhSet A = to_whset(anchors);
    fa::StepPartials part(st.k, st.mode, &st.layout);
    fa::index_t changed = 0;
    {
        py::gil_scoped_release release;
        changed = st.lloyd->assign(A);
        st.lloyd->partials(part);
        windows.run([&](auto&&... args) { st.lloyd->gather(args...); });
    }
    py::dict d;
    d["changed"] = static_cast<std::int64_t>(changed);
    partials_into(d, part, st.mode, st.k, st.layout.bins, st.weighted);
    windows.into(d);
    return d;
}

// The median's selection pass over a chunk (python/fastanchor/_chunked.py, task_select): labels
// against `anchors`, then for each target t (a median rank, 0 or 1), coordinate X and cluster c
// with mode[t, X, c] = 1 the values of cluster c along X whose float32 keys lie in
// [first, last][t, X, c] (returned per (t, X) as values and labels, in row order), and with mode 2
// their histogram over bins of 2^shift[t, X, c] keys from first (hist (2, 2, k, bins)). With
// `weights` (as chunk_lloyd's), the gathered values' integer weights too (per (t, X), "weights"),
// and histograms of weights.
using ModeArray = py::array_t<std::int8_t, py::array::c_style | py::array::forcecast>;

// A selection pass's plan (chunk_select's first, last, mode, shift and bins for k clusters),
// checked; its arrays kept alive with it.
struct CheckedPlan {
    IndexArray first, last, shift;
    ModeArray mode;
    fa::SelectPlan plan;

    CheckedPlan(const IndexArray& first_in, const IndexArray& last_in, const ModeArray& mode_in,
                const IndexArray& shift_in, int bins, int k)
        : first(aligned(first_in).cast<IndexArray>()),
          last(aligned(last_in).cast<IndexArray>()),
          shift(aligned(shift_in).cast<IndexArray>()),
          mode(mode_in) {
        const auto size = static_cast<py::ssize_t>(4 * k);
        if (first.size() != size || last.size() != size || mode.size() != size || shift.size() != size)
            throw py::value_error("first, last, mode and shift must have shape (2, 2, k)");
        if (bins < 1) throw py::value_error("bins must be >= 1");
        for (py::ssize_t j = 0; j < size; ++j)
            if (mode.data()[j] == 2 && (shift.data()[j] < 0 || shift.data()[j] > 32))
                throw py::value_error("shift must be in [0, 32]");
        plan.first = first.data();
        plan.last = last.data();
        plan.shift = shift.data();
        plan.mode = mode.data();
        plan.bins = bins;
    }
};

// A selection pass's output as chunk_select returns it: run(values, labels, hist, weights) fills
// the buffers (called without the GIL).
template <class Run>
py::dict select_dict(int k, int bins, bool weighted, Run&& run) {
    std::vector<double> vals[4];
    std::vector<std::int32_t> labs[4];
    std::vector<std::uint32_t> wts[4];
    U64Array hist({py::ssize_t{2}, py::ssize_t{2}, static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(bins)});
    std::uint64_t* hp = hist.mutable_data();
    std::fill(hp, hp + hist.size(), std::uint64_t{0});
    {
        py::gil_scoped_release release;
        run(vals, labs, hp, wts);
    }
    py::list values, labels, weights_out;
    for (int q = 0; q < 4; ++q) {
        values.append(py::array_t<double>(static_cast<py::ssize_t>(vals[q].size()), vals[q].data()));
        labels.append(py::array_t<std::int32_t>(static_cast<py::ssize_t>(labs[q].size()), labs[q].data()));
        weights_out.append(py::array_t<std::uint32_t>(static_cast<py::ssize_t>(wts[q].size()), wts[q].data()));
    }
    py::dict d;
    d["values"] = values;
    d["labels"] = labels;
    if (weighted) d["weights"] = weights_out;
    d["hist"] = hist;
    return d;
}

py::dict chunk_select(const py::array& wh, const py::object& labels_in, const Array& anchors,
                      const IndexArray& first_in, const IndexArray& last_in, const ModeArray& mode,
                      const IndexArray& shift_in, int bins, const py::object& weights, std::int64_t weight_shift) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    checked_anchors(anchors, "anchors");
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const int k = static_cast<int>(anchors.shape(0));
    const CheckedPlan checked(first_in, last_in, mode, shift_in, bins, k);
    const fa::WhSet A = to_whset(anchors);
    // The chunk's labels against the anchors: given (kept by the fit from its Lloyd pass), or
    // computed here.
    py::array_t<std::int32_t, py::array::c_style | py::array::forcecast> given;
    if (!labels_in.is_none()) {
        given = labels_in.cast<py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>>();
        if (given.ndim() != 1 || given.shape(0) != static_cast<py::ssize_t>(n))
            throw py::value_error("labels must have one value per row");
        const std::int32_t* g = given.data();
        for (fa::index_t i = 0; i < n; ++i)
            if (g[i] < 0 || g[i] >= k) throw py::value_error("labels must be in [0, k)");
    }
    const std::int32_t* gptr = labels_in.is_none() ? nullptr : given.data();
    const std::vector<std::uint32_t> units = chunk_units(weights, weight_shift, n);
    return select_dict(k, bins, !weights.is_none(), [&](auto& vals, auto& labs, std::uint64_t* hp, auto& wts) {
        std::vector<std::int32_t> computed(gptr ? 0 : static_cast<std::size_t>(n));
        if (!gptr) fa::lloyd_step(rows, n, A, computed.data(), fa::StepMode::AssignOnly, nullptr, nullptr);
        const std::int32_t* lab = gptr ? gptr : computed.data();
        fa::select_values(rows, n, lab, k, checked.plan, vals, labs, hp, units.empty() ? nullptr : units.data(), wts);
    });
}

// chunk_select on a chunk state's rows, last labels and (weighted) integer weights: the caller
// checks that those labels are against the pass's anchors.
py::dict chunk_state_select(const ChunkState& st, const IndexArray& first_in, const IndexArray& last_in,
                            const ModeArray& mode, const IndexArray& shift_in, int bins) {
    const CheckedPlan checked(first_in, last_in, mode, shift_in, bins, st.k);
    return select_dict(st.k, bins, st.weighted, [&](auto& vals, auto& labs, std::uint64_t* hp, auto& wts) {
        st.lloyd->select(checked.plan, vals, labs, hp, wts);
    });
}

// The `m` rows of the chunk with the lowest best IoU against `anchors`, in increasing order of
// (best IoU, row): their best IoUs and row indices (as the in-memory fit picks the boxes that
// re-seed empty clusters).
py::tuple chunk_worst(const py::array& wh, const Array& anchors, std::int64_t m) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    checked_anchors(anchors, "anchors");
    if (m < 0) throw py::value_error("m must be >= 0");
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const fa::WhSet A = to_whset(anchors);
    using Key = std::pair<double, fa::index_t>;
    std::vector<Key> keys;
    {
        py::gil_scoped_release release;
        const std::vector<double> q = best_ious(rows, n, A);
        keys.reserve(static_cast<std::size_t>(n));
        for (fa::index_t i = 0; i < n; ++i) keys.emplace_back(q[static_cast<std::size_t>(i)], i);
        const auto take = static_cast<std::size_t>(std::min<std::int64_t>(m, n));
        std::partial_sort(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(take), keys.end());
        keys.resize(take);
    }
    py::array_t<double> iou(static_cast<py::ssize_t>(keys.size()));
    py::array_t<std::int64_t> index(static_cast<py::ssize_t>(keys.size()));
    for (std::size_t t = 0; t < keys.size(); ++t) {
        iou.mutable_data()[t] = keys[t].first;
        index.mutable_data()[t] = keys[t].second;
    }
    return py::make_tuple(iou, index);
}

// The initial anchors of run `run` of the in-memory fit on `wh` (kmeans/driver.hpp, kmeans_iou),
// in the order the run starts from: k-means++ or random, from the core seed (resolved by the
// caller), with the rows' positive `weights` (float64, or None).
py::array_t<double> chunk_init(const py::array& wh, int k, const std::string& init, std::uint64_t seed, int n_threads,
                               int run, const py::object& weights) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    py::array_t<double, py::array::c_style | py::array::forcecast> wt;
    if (!weights.is_none()) {
        wt = weights.cast<py::array_t<double, py::array::c_style | py::array::forcecast>>();
        if (wt.ndim() != 1 || wt.shape(0) != wh.shape(0)) throw py::value_error("weights must have one value per row");
    }
    const double* wptr = weights.is_none() ? nullptr : wt.data();
    const int kind = choice(init, "init", {"k-means++", "random"});
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    if (k < 1 || k > n) throw py::value_error("need 1 <= k <= len(wh)");
    if (run < 0) throw py::value_error("run must be >= 0");
    PyMonitor mon{py::none()};
    fa::WhSet A;
    {
        py::gil_scoped_release release;
        const fa::PollScope poll(mon);
        const fa::Problem p = fa::Problem::make(rows, wptr, n, false, n_threads);
        fa::Rng rng(fa::derive_seed(seed, static_cast<std::uint64_t>(run)));
        A = kind == 0 ? fa::init_kmeanspp(p, k, rng, n_threads, mon, run) : fa::init_random(p, k, rng);
    }
    py::array_t<double> out({static_cast<py::ssize_t>(k), py::ssize_t{2}});
    auto o = out.mutable_unchecked<2>();
    for (int j = 0; j < k; ++j) {
        o(j, 0) = A.w[j];
        o(j, 1) = A.h[j];
    }
    return out;
}

// The union of several chunks' window values (kmeans/windows.hpp, merge_windows): `runs`, a
// sequence of (values, counts, slots) triples as _chunk_lloyd gives them (float64, int64, int32,
// each ordered by (slot, value)), merged into one such triple, each value once with its counts
// added.
py::tuple merge_windows(const py::sequence& runs) {
    using Values = py::array_t<double, py::array::c_style | py::array::forcecast>;
    using Counts = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
    using Slots = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>;
    std::vector<Values> values;
    std::vector<Counts> counts;
    std::vector<Slots> slots;
    std::vector<fa::WindowRun> views;
    for (const py::handle run : runs) {
        const auto triple = run.cast<py::sequence>();
        if (triple.size() != 3) throw py::value_error("a run must be (values, counts, slots)");
        values.push_back(triple[0].cast<Values>());
        counts.push_back(triple[1].cast<Counts>());
        slots.push_back(triple[2].cast<Slots>());
        const py::ssize_t m = values.back().size();
        if (values.back().ndim() != 1 || counts.back().ndim() != 1 || slots.back().ndim() != 1 ||
            counts.back().size() != m || slots.back().size() != m)
            throw py::value_error("a run's values, counts and slots must be 1-D and of one length");
    }
    for (std::size_t r = 0; r < values.size(); ++r)
        views.push_back(
            {values[r].data(), counts[r].data(), slots[r].data(), static_cast<std::size_t>(values[r].size())});
    fa::WindowValues out;
    {
        py::gil_scoped_release release;
        out = fa::merge_windows(views);
    }
    const auto m = static_cast<py::ssize_t>(out.values.size());
    return py::make_tuple(py::array_t<double>(m, out.values.data()), py::array_t<std::int64_t>(m, out.counts.data()),
                          py::array_t<std::int32_t>(m, out.slots.data()));
}

}  // namespace

void register_chunks(py::module_& m) {
    m.def("_chunk_lloyd", &chunk_lloyd, py::arg("wh"), py::arg("anchors"), py::arg("prev_anchors"), py::arg("mode"),
          py::arg("key_lo_w"), py::arg("key_lo_h"), py::arg("shift_w"), py::arg("shift_h"), py::arg("bins"),
          py::arg("want_labels"), py::arg("window_lo") = py::none(), py::arg("window_hi") = py::none(),
          py::arg("window_cap") = 0, py::arg("weights") = py::none(), py::arg("weight_shift") = 0);
    py::class_<ChunkState, std::shared_ptr<ChunkState>>(m, "_ChunkState")
        .def_property_readonly("exact", [](const ChunkState& st) { return st.lloyd->exact(); })
        .def_property_readonly("nbytes", [](const ChunkState& st) { return st.lloyd->nbytes(); })
        .def_property_readonly("n", [](const ChunkState& st) { return st.lloyd->size(); })
        .def("step", &chunk_state_step, py::arg("anchors"), py::arg("window_lo") = py::none(),
             py::arg("window_hi") = py::none(), py::arg("window_cap") = 0)
        .def("select", &chunk_state_select, py::arg("first"), py::arg("last"), py::arg("mode"), py::arg("shift"),
             py::arg("bins"))
        .def("labels", [](const ChunkState& st) {
            py::array_t<std::int32_t> out(static_cast<py::ssize_t>(st.lloyd->size()));
            st.lloyd->labels(out.mutable_data());
            return out;
        });
    m.def("_chunk_state", &chunk_state, py::arg("wh"), py::arg("k"), py::arg("mode"), py::arg("key_lo_w"),
          py::arg("key_lo_h"), py::arg("shift_w"), py::arg("shift_h"), py::arg("bins"), py::arg("weights") = py::none(),
          py::arg("weight_shift") = 0);
    m.def("_chunk_select", &chunk_select, py::arg("wh"), py::arg("labels"), py::arg("anchors"), py::arg("first"),
          py::arg("last"), py::arg("mode"), py::arg("shift"), py::arg("bins"), py::arg("weights") = py::none(),
          py::arg("weight_shift") = 0);
    m.def("_merge_windows", &merge_windows, py::arg("runs"));
    m.def("_chunk_worst", &chunk_worst, py::arg("wh"), py::arg("anchors"), py::arg("m"));
    m.def("_chunk_init", &chunk_init, py::arg("wh"), py::arg("k"), py::arg("init"), py::arg("seed"),
          py::arg("n_threads"), py::arg("run") = 0, py::arg("weights") = py::none());
}

}  // namespace fastanchor_py
