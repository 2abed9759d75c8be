// The bindings of the scores and first passes of one chunk of rows, privately to Python
// (fastanchor._chunked): its share of the average IoU, of YOLOv5's metrics, of the objectives of
// a batch of candidates and of the report, its check and count of small boxes, and its kept rows.
// Each partial is exact, so the partials of any chunks merge in any order to the in-memory value.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "box_rows.hpp"
#include "chunk_common.hpp"
#include "objective.hpp"
#include "fastanchor/fitness.hpp"
#include "fastanchor/fitness/report.hpp"
#include "fastanchor/iou.hpp"
#include "fastanchor/kept_rows.hpp"

namespace fastanchor_py {
namespace {

// The chunk's share of the average IoU as the in-memory sums see it: the in-memory mean adds, in
// order within each global chunk of kChunk rows, the best IoUs (times the weights, and the weights
// themselves, when weighted), then the chunks' sums in order. For the chunk's rows
// [offset, offset + n) of n_total rows: `ids`, the global chunks it touches; `sums` (and
// `weight_sums`, when weighted), the in-order sums of each global chunk it holds whole (NaN for the
// others); `parts` (and `part_weights`), the terms of the rows of each global chunk it holds in
// part (empty arrays for whole ones). weights: the chunk's n weights, scaled as the in-memory
// functions scale them, or None.
py::dict chunk_avg_iou(const py::array& wh, const Array& anchors, std::int64_t offset, std::int64_t n_total,
                       const py::object& weights) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    checked_anchors(anchors, "anchors");
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    if (offset < 0 || n_total < offset + n) throw py::value_error("need 0 <= offset and offset + len(wh) <= n_total");
    Array wt;
    const double* wptr = weights_of(weights, n, wt);
    const fa::WhSet A = to_whset(anchors);
    std::vector<double> q;
    {
        py::gil_scoped_release release;
        q = best_ious(rows, n, A);
        if (wptr)
            for (fa::index_t i = 0; i < n; ++i) q[static_cast<std::size_t>(i)] *= wptr[i];
    }
    const fa::index_t K = fa::kChunk;
    const fa::index_t first = n > 0 ? offset / K : 0, last = n > 0 ? (offset + n - 1) / K : -1;
    const auto segs = static_cast<py::ssize_t>(last - first + 1);
    py::array_t<std::int64_t> ids(segs);
    py::array_t<double> sums(segs), weight_sums(segs);
    py::list parts, part_weights;
    for (fa::index_t c = first; c <= last; ++c) {
        const fa::index_t cb = c * K, ce = std::min<fa::index_t>(cb + K, n_total);
        const fa::index_t b = std::max<fa::index_t>(cb, offset), e = std::min<fa::index_t>(ce, offset + n);
        ids.mutable_data()[c - first] = c;
        if (b == cb && e == ce) {
            // weighted_sums' order (iou.hpp): s += w * v and sw += w, box by box
            double s = 0.0, sw = 0.0;
            for (fa::index_t i = b; i < e; ++i) {
                s += q[static_cast<std::size_t>(i - offset)];
                if (wptr) sw += wptr[i - offset];
            }
            sums.mutable_data()[c - first] = s;
            weight_sums.mutable_data()[c - first] = sw;
            parts.append(py::array_t<double>(0));
            part_weights.append(py::array_t<double>(0));
        } else {
            sums.mutable_data()[c - first] = std::nan("");
            weight_sums.mutable_data()[c - first] = std::nan("");
            parts.append(py::array_t<double>(static_cast<py::ssize_t>(e - b), q.data() + (b - offset)));
            part_weights.append(wptr ? py::array_t<double>(static_cast<py::ssize_t>(e - b), wptr + (b - offset))
                                     : py::array_t<double>(0));
        }
    }
    py::dict d;
    d["ids"] = ids;
    d["sums"] = sums;
    d["parts"] = parts;
    if (wptr) {
        d["weight_sums"] = weight_sums;
        d["part_weights"] = part_weights;
    }
    return d;
}

// The chunk's fixed-point sums of YOLOv5's metrics (fitness/metrics.hpp): rows (5, 2) of (hi, lo)
// 128-bit integers for fitness, bpr, aat, avg_iou and the total weight. weights: the chunk's n
// weights (None: unit weights), divided by `top`, the largest weight of all chunks. Sums of any
// chunks, in any order, are the in-memory sums.
U64Array chunk_fitness(const py::array& wh_in, const Array& anchors_in, double thr, const py::object& weights,
                       double top) {
    const Array wh = aligned(wh_in).cast<Array>(), anchors = aligned(anchors_in).cast<Array>();
    check_rows(wh, "wh", 2);
    checked_anchors(anchors, "anchors");
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    Array wt;
    const double* wptr = weights_of(weights, n, wt);
    if (wptr && !(top > 0.0)) throw py::value_error("top must be positive");
    const int k = static_cast<int>(anchors.shape(0));
    const double *data = wh.data(), *adata = anchors.data();
    fa::fitdetail::ChunkMetrics s;
    {
        py::gil_scoped_release release;
        const fa::RatioAnchors R = fa::RatioAnchors::from_rows(adata, k);
        const fa::Threshold th(thr);
        const fa::fitdetail::RowBoxes<double> src{data, wptr, wptr ? top : 1.0};
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
// (make_bucketed: cheap to build; with weights, divided by `top` as chunk_fitness takes them,
// make's layout), or a layout from _search_layout; n_threads threads score it.
U64Array chunk_objective_batch(const py::object& wh_in, const py::object& layout, const py::array& cands_in,
                               const std::string& objective, double thr, double iou_thr, bool iou_weighted,
                               int n_threads, const py::object& weights, double top) {
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
    Array wt;
    const double* wptr = weights_of(weights, n, wt);
    if (wptr && !(top > 0.0)) throw py::value_error("top must be positive");
    if (n > 0) {
        py::gil_scoped_release release;
        const fa::TiledBoxes T =
            wptr ? fa::TiledBoxes::make(data, wptr, n, n_threads, top) : fa::TiledBoxes::make_bucketed(data, n);
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

// The chunk's fixed-point total weight, sum of round(w / top * 2^50) (metrics.hpp's weight_total),
// as one (hi, lo) pair: the totals of any chunks, in any order, add up to the in-memory total.
U64Array chunk_weight_total(const Array& weights_in, double top) {
    const Array weights = aligned(weights_in).cast<Array>();
    if (weights.ndim() != 1) throw py::value_error("weights must be one-dimensional");
    if (!(top > 0.0)) throw py::value_error("top must be positive");
    const auto n = static_cast<fa::index_t>(weights.shape(0));
    fa::int128_t total = 0;
    if (n > 0) {
        py::gil_scoped_release release;
        total = fa::fitdetail::weight_total(weights.data(), n, top, 1);
    }
    U64Array out({py::ssize_t{1}, py::ssize_t{2}});
    put_u128(out.mutable_data(), total);
    return out;
}

}  // namespace

void register_chunk_scores(py::module_& m) {
    m.def("_chunk_avg_iou", &chunk_avg_iou, py::arg("wh"), py::arg("anchors"), py::arg("offset"), py::arg("n_total"),
          py::arg("weights") = py::none());
    m.def("_chunk_objective_batch", &chunk_objective_batch, py::arg("wh"), py::arg("layout"), py::arg("candidates"),
          py::arg("objective"), py::arg("thr"), py::arg("iou_thr"), py::arg("iou_weighted"), py::arg("n_threads"),
          py::arg("weights") = py::none(), py::arg("top") = 1.0);
    m.def("_chunk_scan_rows", &chunk_scan_rows, py::arg("wh"), py::arg("min_side"), py::arg("max_side"),
          py::arg("warn_below"), py::arg("drop_below"));
    m.def("_chunk_kept_rows", &chunk_kept_rows, py::arg("wh"), py::arg("drop_below"), py::arg("count"));
    m.def("_chunk_fitness", &chunk_fitness, py::arg("wh"), py::arg("anchors"), py::arg("thr"),
          py::arg("weights") = py::none(), py::arg("top") = 1.0);
    m.def("_chunk_report", &chunk_report, py::arg("wh"), py::arg("anchor_sets"), py::arg("thr"), py::arg("iou_thr"),
          py::arg("iou_weighted"), py::arg("objectives"), py::arg("skip_below"));
    m.def("_chunk_weight_total", &chunk_weight_total, py::arg("weights"), py::arg("top"));
}

}  // namespace fastanchor_py
