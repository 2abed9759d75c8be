// Bindings of the chunk kernels behind fastanchor.dask and the out-of-core fits: each call reads one
// chunk of rows and returns its share of a whole-data result as numpy arrays (picklable), which
// python/fastanchor/dask merges exactly in any order (integers) or in the global chunk order of
// the in-memory sums (the average IoU's double sums per kChunk boxes). kmeans/step.hpp,
// fitness/metrics.hpp; docs/design.md, "The Lloyd step kernel".
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
#include "objective.hpp"
#include "fastanchor/fitness.hpp"
#include "fastanchor/fitness/report.hpp"
#include "fastanchor/iou.hpp"
#include "fastanchor/kept_rows.hpp"
#include "fastanchor/kmeans.hpp"

namespace fastanchor_py {
namespace {

using U64Array = py::array_t<std::uint64_t>;

const Array& checked_anchors(const Array& anchors, const char* name) {
    check_rows(anchors, name, 2);
    check_least(anchors, name, 1);
    return anchors;
}

// Non-negative 128-bit integers as (hi, lo) pairs of uint64 (Python rebuilds them exactly).
void put_u128(std::uint64_t* out, fa::int128_t v) {
    const auto u = static_cast<unsigned __int128>(v);
    out[0] = static_cast<std::uint64_t>(u >> 64);
    out[1] = static_cast<std::uint64_t>(u);
}

// Rows [0, n) as doubles w, h and areas a = w * h, the values every exact kernel reads.
void load_rows(const fa::BoxRows& rows, fa::index_t b, fa::index_t e, double* w, double* h, double* a) {
    for (fa::index_t i = b; i < e; ++i) {
        const double x = rows.f32 ? static_cast<double>(rows.f32[2 * i]) : rows.f64[2 * i];
        const double y = rows.f32 ? static_cast<double>(rows.f32[2 * i + 1]) : rows.f64[2 * i + 1];
        w[i - b] = x;
        h[i - b] = y;
        a[i - b] = x * y;
    }
}

// The best IoU of every row (exactly avg_best_iou's values), kChunk rows at a time.
std::vector<double> best_ious(const fa::BoxRows& rows, fa::index_t n, const fa::WhSet& A) {
    std::vector<double> q(static_cast<std::size_t>(n));
    std::vector<double> buf(3 * static_cast<std::size_t>(fa::kChunk));
    double *w = buf.data(), *h = w + fa::kChunk, *a = h + fa::kChunk;
    const int k = static_cast<int>(A.size());
    for (fa::index_t b = 0; b < n; b += fa::kChunk) {
        const fa::index_t e = std::min(n, b + fa::kChunk);
        load_rows(rows, b, e, w, h, a);
        fa::detail::best_iou_range(w, h, a, e - b, A.w.data(), A.h.data(), A.a.data(), k, q.data() + b);
    }
    return q;
}

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

// The median's windows of a Lloyd pass (kmeans/step.hpp, gather_windows): the arguments, checked,
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

// A chunk's partials (counts, and the mean's exact sums or the median's histograms) into d.
void partials_into(py::dict& d, const fa::StepPartials& part, fa::StepMode m, int k, int bins) {
    py::array_t<std::int64_t> count(k);
    std::copy(part.count.begin(), part.count.end(), count.mutable_data());
    d["count"] = count;
    if (m == fa::StepMode::Mean) {
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
// held too many (window_below, window_overflow: int64 (2, k)).
py::dict chunk_lloyd(const py::array& wh, const Array& anchors, const py::object& prev_anchors, const std::string& mode,
                     std::uint32_t key_lo_w, std::uint32_t key_lo_h, int shift_w, int shift_h, int bins,
                     bool want_labels, const py::object& window_lo, const py::object& window_hi,
                     std::int64_t window_cap) {
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
    const fa::WhSet A = to_whset(anchors);
    const fa::WhSet P = has_prev ? to_whset(prev) : fa::WhSet();
    py::array_t<std::int32_t> labels(static_cast<py::ssize_t>(n));
    std::int32_t* lptr = labels.mutable_data();
    fa::StepPartials part(k, m, &layout);
    std::int64_t changed = -1;
    {
        py::gil_scoped_release release;
        fa::lloyd_step(rows, n, A, lptr, m, &layout, &part);
        windows.run([&](auto&&... args) { fa::gather_windows(rows, n, lptr, k, args...); });
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
    partials_into(d, part, m, k, bins);
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
};

std::shared_ptr<ChunkState> chunk_state(const py::array& wh, int k, const std::string& mode, std::uint32_t key_lo_w,
                                        std::uint32_t key_lo_h, int shift_w, int shift_h, int bins) {
    auto st = std::make_shared<ChunkState>();
    const fa::BoxRows rows = box_rows(wh, st->rows);
    const int kind = choice(mode, "mode", {"mean", "median"});
    st->mode = kind == 0 ? fa::StepMode::Mean : fa::StepMode::Median;
    if (k < 1) throw py::value_error("k must be >= 1");
    if (wh.shape(0) < 1) throw py::value_error("a chunk state needs at least one row");
    st->layout = hist_layout(st->mode, key_lo_w, key_lo_h, shift_w, shift_h, bins);
    st->k = k;
    const fa::Update update = kind == 0 ? fa::Update::Mean : fa::Update::Median;
    py::gil_scoped_release release;
    st->lloyd = std::make_unique<fa::ChunkLloyd>(rows, static_cast<fa::index_t>(wh.shape(0)), k, update, st->layout);
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
    partials_into(d, part, st.mode, st.k, st.layout.bins);
    windows.into(d);
    return d;
}

// The median's selection pass over a chunk (python/fastanchor/_chunked.py, task_select): labels
// against `anchors`, then for each target t (a median rank, 0 or 1), coordinate X and cluster c
// with mode[t, X, c] = 1 the values of cluster c along X whose float32 keys lie in
// [first, last][t, X, c] (returned per (t, X) as values and labels, in row order), and with mode 2
// their histogram over bins of 2^shift[t, X, c] keys from first (hist (2, 2, k, bins)).
py::dict chunk_select(const py::array& wh, const py::object& labels_in, const Array& anchors,
                      const IndexArray& first_in, const IndexArray& last_in,
                      const py::array_t<std::int8_t, py::array::c_style | py::array::forcecast>& mode,
                      const IndexArray& shift_in, int bins) {
    const IndexArray first = aligned(first_in).cast<IndexArray>(), last = aligned(last_in).cast<IndexArray>(),
                     shift = aligned(shift_in).cast<IndexArray>();
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    checked_anchors(anchors, "anchors");
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const int k = static_cast<int>(anchors.shape(0));
    const auto plan = static_cast<py::ssize_t>(4 * k);
    if (first.size() != plan || last.size() != plan || mode.size() != plan || shift.size() != plan)
        throw py::value_error("first, last, mode and shift must have shape (2, 2, k)");
    if (bins < 1) throw py::value_error("bins must be >= 1");
    const fa::WhSet A = to_whset(anchors);
    const std::int64_t *fp = first.data(), *lp = last.data(), *sp = shift.data();
    const std::int8_t* mp = mode.data();
    for (py::ssize_t j = 0; j < plan; ++j)
        if (mp[j] == 2 && (sp[j] < 0 || sp[j] > 32)) throw py::value_error("shift must be in [0, 32]");
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
    std::vector<double> vals[4];
    std::vector<std::int32_t> labs[4];
    U64Array hist({py::ssize_t{2}, py::ssize_t{2}, static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(bins)});
    std::uint64_t* hp = hist.mutable_data();
    std::fill(hp, hp + hist.size(), std::uint64_t{0});
    {
        py::gil_scoped_release release;
        std::vector<std::int32_t> computed(gptr ? 0 : static_cast<std::size_t>(n));
        if (!gptr) fa::lloyd_step(rows, n, A, computed.data(), fa::StepMode::AssignOnly, nullptr, nullptr);
        const std::int32_t* lab = gptr ? gptr : computed.data();
        fa::SelectPlan sp_plan;
        sp_plan.first = fp;
        sp_plan.last = lp;
        sp_plan.shift = sp;
        sp_plan.mode = mp;
        sp_plan.bins = bins;
        fa::select_values(rows, n, lab, k, sp_plan, vals, labs, hp);
    }
    py::list values, labels;
    for (int q = 0; q < 4; ++q) {
        values.append(py::array_t<double>(static_cast<py::ssize_t>(vals[q].size()), vals[q].data()));
        labels.append(py::array_t<std::int32_t>(static_cast<py::ssize_t>(labs[q].size()), labs[q].data()));
    }
    py::dict d;
    d["values"] = values;
    d["labels"] = labels;
    d["hist"] = hist;
    return d;
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

// The chunk's share of the average IoU as the in-memory sums see it: the in-memory mean adds the
// best IoUs in order within each global chunk of kChunk rows, then the chunks' sums in order. For
// the chunk's rows [offset, offset + n) of n_total rows: `ids`, the global chunks it touches;
// `sums`, the in-order sum of each global chunk it holds whole (NaN for the others); `parts`, the
// best IoUs of the rows of each global chunk it holds in part (empty arrays for whole ones).
py::dict chunk_avg_iou(const py::array& wh, const Array& anchors, std::int64_t offset, std::int64_t n_total) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    checked_anchors(anchors, "anchors");
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    if (offset < 0 || n_total < offset + n) throw py::value_error("need 0 <= offset and offset + len(wh) <= n_total");
    const fa::WhSet A = to_whset(anchors);
    std::vector<double> q;
    {
        py::gil_scoped_release release;
        q = best_ious(rows, n, A);
    }
    const fa::index_t K = fa::kChunk;
    const fa::index_t first = n > 0 ? offset / K : 0, last = n > 0 ? (offset + n - 1) / K : -1;
    const auto segs = static_cast<py::ssize_t>(last - first + 1);
    py::array_t<std::int64_t> ids(segs);
    py::array_t<double> sums(segs);
    py::list parts;
    for (fa::index_t c = first; c <= last; ++c) {
        const fa::index_t cb = c * K, ce = std::min<fa::index_t>(cb + K, n_total);
        const fa::index_t b = std::max<fa::index_t>(cb, offset), e = std::min<fa::index_t>(ce, offset + n);
        ids.mutable_data()[c - first] = c;
        if (b == cb && e == ce) {
            double s = 0.0;
            for (fa::index_t i = b; i < e; ++i) s += q[static_cast<std::size_t>(i - offset)];
            sums.mutable_data()[c - first] = s;
            parts.append(py::array_t<double>(0));
        } else {
            sums.mutable_data()[c - first] = std::nan("");
            parts.append(py::array_t<double>(static_cast<py::ssize_t>(e - b), q.data() + (b - offset)));
        }
    }
    py::dict d;
    d["ids"] = ids;
    d["sums"] = sums;
    d["parts"] = parts;
    return d;
}

// The chunk's fixed-point sums of YOLOv5's metrics (fitness/metrics.hpp), unit weights: rows (5, 2)
// of (hi, lo) 128-bit integers for fitness, bpr, aat, avg_iou and the total weight. Sums of any
// chunks, in any order, are the in-memory sums.
U64Array chunk_fitness(const py::array& wh_in, const Array& anchors_in, double thr) {
    const Array wh = aligned(wh_in).cast<Array>(), anchors = aligned(anchors_in).cast<Array>();
    check_rows(wh, "wh", 2);
    checked_anchors(anchors, "anchors");
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const int k = static_cast<int>(anchors.shape(0));
    const double *data = wh.data(), *adata = anchors.data();
    fa::fitdetail::ChunkMetrics s;
    {
        py::gil_scoped_release release;
        const fa::RatioAnchors R = fa::RatioAnchors::from_rows(adata, k);
        const fa::Threshold th(thr);
        const fa::fitdetail::RowBoxes<double> src{data, nullptr, 1.0};
        for (fa::index_t b = 0; b < n; b += fa::kChunk) {
            fa::fitdetail::ChunkMetrics p;
            fa::fitdetail::metrics_chunk(src, b, std::min(n, b + fa::kChunk), R, th, p);
            s.fit += p.fit;
            s.bpr += p.bpr;
            s.aat += p.aat;
            s.iou += p.iou;
            s.den += p.den;
        }
    }
    U64Array out({py::ssize_t{5}, py::ssize_t{2}});
    std::uint64_t* o = out.mutable_data();
    put_u128(o, s.fit);
    put_u128(o + 2, s.bpr);
    put_u128(o + 4, s.aat);
    put_u128(o + 6, s.iou);
    put_u128(o + 8, s.den);
    return out;
}

// The initial anchors of the in-memory fit's first run on `wh` (kmeans/driver.hpp, kmeans_iou), in
// the order the run starts from: k-means++ or random, from the core seed (resolved by the caller).
// The in-memory fit's initial anchors of run `run` (k-means++ or random) from the seed.
py::array_t<double> chunk_init(const py::array& wh, int k, const std::string& init, std::uint64_t seed, int n_threads,
                               int run) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    const int kind = choice(init, "init", {"k-means++", "random"});
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    if (k < 1 || k > n) throw py::value_error("need 1 <= k <= len(wh)");
    if (run < 0) throw py::value_error("run must be >= 0");
    PyMonitor mon{py::none()};
    fa::WhSet A;
    {
        py::gil_scoped_release release;
        const fa::PollScope poll(mon);
        const fa::Problem p = fa::Problem::make(rows, nullptr, n, false, n_threads);
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

// Candidate anchor sets (count, k, 2) as RatioAnchors.
std::vector<fa::RatioAnchors> candidates_of(const Array& cands) {
    if (cands.ndim() != 3 || cands.shape(0) < 1 || cands.shape(1) < 1 || cands.shape(2) != 2)
        throw py::value_error("candidates must have shape (count, k, 2)");
    const int count = static_cast<int>(cands.shape(0)), k = static_cast<int>(cands.shape(1));
    std::vector<fa::RatioAnchors> R;
    R.reserve(static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i) R.push_back(fa::RatioAnchors::from_rows(cands.data() + 2 * std::size_t(k) * i, k));
    return R;
}

// The totals of every candidate as (count, 2) rows of (hi, lo) 128-bit integers.
U64Array totals_array(const std::vector<fa::int128_t>& totals) {
    U64Array out({static_cast<py::ssize_t>(totals.size()), py::ssize_t{2}});
    std::uint64_t* o = out.mutable_data();
    for (std::size_t i = 0; i < totals.size(); ++i) put_u128(o + 2 * i, totals[i]);
    return out;
}

// The fixed-point totals of an objective (objective_totals) for `count` candidate anchor sets
// (count, k, 2) on a chunk: (count, 2) rows of (hi, lo) 128-bit integers, each total / (n * 2^50)
// the candidate's value on the chunk's rows; totals of any chunks, in any order, add up to the
// in-memory search's totals. The chunk is either its rows, laid out in tiles for this call
// (make_bucketed: cheap to build), or a layout from _search_layout; n_threads threads score it.
U64Array chunk_objective_batch(const py::object& wh_in, const py::object& layout, const py::array& cands_in,
                               const std::string& objective, double thr, double iou_thr, bool iou_weighted,
                               int n_threads) {
    const Array cands = aligned(cands_in).cast<Array>();
    const std::vector<fa::RatioAnchors> R = candidates_of(cands);
    const fa::Objective ob = objective_of(objective, iou_thr, iou_weighted);
    std::vector<fa::int128_t> totals(R.size(), 0);
    const int count = static_cast<int>(R.size());
    if (!layout.is_none()) {
        const auto L = layout.cast<std::shared_ptr<SearchLayout>>();
        {
            py::gil_scoped_release release;
            if (L->T.size() > 0) fa::objective_totals(L->T, R.data(), count, ob, thr, totals.data(), n_threads);
        }
        return totals_array(totals);
    }
    const Array wh = aligned(wh_in.cast<py::array>()).cast<Array>();
    check_rows(wh, "wh", 2);
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const double* data = wh.data();
    if (n > 0) {
        py::gil_scoped_release release;
        const fa::TiledBoxes T = fa::TiledBoxes::make_bucketed(data, n);
        fa::objective_totals(T, R.data(), count, ob, thr, totals.data(), n_threads);
    }
    return totals_array(totals);
}

// The report of anchor sets (count, k, 2) on a chunk's rows whose larger side is at least
// skip_below (fitness/report.hpp): "metrics", (count, 5, 2) rows of (hi, lo) 128-bit integers as
// chunk_fitness gives them, and per objective name its totals, (count, 2) as
// chunk_objective_batch gives them. Sums of any chunks, in any order, are the in-memory sums.
py::dict chunk_report(const py::array& wh_in, const py::array& sets_in, double thr, double iou_thr, bool iou_weighted,
                      const py::sequence& objectives, double skip_below) {
    const Array sets = aligned(sets_in).cast<Array>();
    std::vector<std::string> names;
    std::vector<fa::Objective> obs;
    for (const py::handle name : objectives) {
        names.push_back(name.cast<std::string>());
        obs.push_back(objective_of(names.back(), iou_thr, iou_weighted));
    }
    py::object keep;
    const fa::BoxRows rows = box_rows(wh_in, keep);
    const auto n = static_cast<fa::index_t>(py::reinterpret_borrow<py::array>(keep).shape(0));
    fa::ChunkReport report(candidates_of(sets), thr, obs);
    {
        py::gil_scoped_release release;
        if (rows.f32) report.add(rows.f32, n, skip_below);
        else report.add(rows.f64, n, skip_below);
    }
    const auto count = static_cast<std::size_t>(sets.shape(0));
    U64Array metrics({static_cast<py::ssize_t>(count), py::ssize_t{5}, py::ssize_t{2}});
    std::uint64_t* o = metrics.mutable_data();
    for (std::size_t s = 0; s < count; ++s, o += 10) {
        const auto& p = report.metrics(s);
        put_u128(o, p.fit);
        put_u128(o + 2, p.bpr);
        put_u128(o + 4, p.aat);
        put_u128(o + 6, p.iou);
        put_u128(o + 8, p.den);
    }
    py::dict d;
    d["metrics"] = metrics;
    for (std::size_t j = 0; j < obs.size(); ++j) {
        std::vector<fa::int128_t> totals(count);
        for (std::size_t s = 0; s < count; ++s) totals[s] = report.total(j, s);
        d[py::str(names[j])] = totals_array(totals);
    }
    return d;
}

// autoanchor's first pass over a chunk (kept_rows.hpp's scan_rows): a dict of "ok" (every side in
// [min_side, max_side]), and when ok "lo" and "hi" (the float32 keys' range per column), "small"
// and "kept".
py::dict chunk_scan_rows(const py::array& wh_in, double min_side, double max_side, double warn_below,
                         double drop_below) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh_in, keep);
    const auto n = static_cast<fa::index_t>(py::reinterpret_borrow<py::array>(keep).shape(0));
    fa::RowScan s;
    {
        py::gil_scoped_release release;
        s = rows.f32 ? fa::scan_rows(rows.f32, n, min_side, max_side, warn_below, drop_below)
                     : fa::scan_rows(rows.f64, n, min_side, max_side, warn_below, drop_below);
    }
    py::dict d;
    d["ok"] = s.ok;
    if (s.ok) {
        d["lo"] = py::make_tuple(s.lo[0], s.lo[1]);
        d["hi"] = py::make_tuple(s.hi[0], s.hi[1]);
        d["small"] = s.small;
        d["kept"] = s.kept;
    }
    return d;
}

// The `count` rows of a chunk (float32 as they are, anything else as float64) with a side of at
// least drop_below, in order (kept_rows.hpp); a ValueError if the chunk does not hold `count`.
py::array chunk_kept_rows(const py::array& wh_in, double drop_below, py::ssize_t count) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh_in, keep);
    const auto n = static_cast<fa::index_t>(py::reinterpret_borrow<py::array>(keep).shape(0));
    if (count < 0 || count > n) throw py::value_error("count must be within [0, the chunk's rows]");
    fa::index_t got = 0;
    if (rows.f32) {
        py::array_t<float> out({count, py::ssize_t{2}});
        float* o = out.mutable_data();
        {
            py::gil_scoped_release release;
            got = fa::copy_kept_rows(rows.f32, n, drop_below, o, count);
        }
        if (got == count) return std::move(out);
    } else {
        py::array_t<double> out({count, py::ssize_t{2}});
        double* o = out.mutable_data();
        {
            py::gil_scoped_release release;
            got = fa::copy_kept_rows(rows.f64, n, drop_below, o, count);
        }
        if (got == count) return std::move(out);
    }
    throw py::value_error("the chunk holds " + std::to_string(got) + " kept rows, not " + std::to_string(count) +
                          " (did its rows change?)");
}

}  // namespace

void register_chunks(py::module_& m) {
    m.def("_chunk_lloyd", &chunk_lloyd, py::arg("wh"), py::arg("anchors"), py::arg("prev_anchors"), py::arg("mode"),
          py::arg("key_lo_w"), py::arg("key_lo_h"), py::arg("shift_w"), py::arg("shift_h"), py::arg("bins"),
          py::arg("want_labels"), py::arg("window_lo") = py::none(), py::arg("window_hi") = py::none(),
          py::arg("window_cap") = 0);
    py::class_<ChunkState, std::shared_ptr<ChunkState>>(m, "_ChunkState")
        .def_property_readonly("exact", [](const ChunkState& st) { return st.lloyd->exact(); })
        .def_property_readonly("nbytes", [](const ChunkState& st) { return st.lloyd->nbytes(); })
        .def_property_readonly("n", [](const ChunkState& st) { return st.lloyd->size(); })
        .def("step", &chunk_state_step, py::arg("anchors"), py::arg("window_lo") = py::none(),
             py::arg("window_hi") = py::none(), py::arg("window_cap") = 0)
        .def("labels", [](const ChunkState& st) {
            py::array_t<std::int32_t> out(static_cast<py::ssize_t>(st.lloyd->size()));
            st.lloyd->labels(out.mutable_data());
            return out;
        });
    m.def("_chunk_state", &chunk_state, py::arg("wh"), py::arg("k"), py::arg("mode"), py::arg("key_lo_w"),
          py::arg("key_lo_h"), py::arg("shift_w"), py::arg("shift_h"), py::arg("bins"));
    m.def("_chunk_select", &chunk_select, py::arg("wh"), py::arg("labels"), py::arg("anchors"), py::arg("first"),
          py::arg("last"), py::arg("mode"), py::arg("shift"), py::arg("bins"));
    m.def("_chunk_worst", &chunk_worst, py::arg("wh"), py::arg("anchors"), py::arg("m"));
    m.def("_chunk_avg_iou", &chunk_avg_iou, py::arg("wh"), py::arg("anchors"), py::arg("offset"), py::arg("n_total"));
    m.def("_chunk_objective_batch", &chunk_objective_batch, py::arg("wh"), py::arg("layout"), py::arg("candidates"),
          py::arg("objective"), py::arg("thr"), py::arg("iou_thr"), py::arg("iou_weighted"), py::arg("n_threads"));
    m.def("_chunk_scan_rows", &chunk_scan_rows, py::arg("wh"), py::arg("min_side"), py::arg("max_side"),
          py::arg("warn_below"), py::arg("drop_below"));
    m.def("_chunk_kept_rows", &chunk_kept_rows, py::arg("wh"), py::arg("drop_below"), py::arg("count"));
    m.def("_chunk_fitness", &chunk_fitness, py::arg("wh"), py::arg("anchors"), py::arg("thr"));
    m.def("_chunk_report", &chunk_report, py::arg("wh"), py::arg("anchor_sets"), py::arg("thr"), py::arg("iou_thr"),
          py::arg("iou_weighted"), py::arg("objectives"), py::arg("skip_below"));
    m.def("_chunk_init", &chunk_init, py::arg("wh"), py::arg("k"), py::arg("init"), py::arg("seed"),
          py::arg("n_threads"), py::arg("run") = 0);
}

}  // namespace fastanchor_py
