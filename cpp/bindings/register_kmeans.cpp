// Bindings of the (w, h) box kernels: the IoU matrix, assignment, the average IoU, the k-means fit
// and lloyd_trace (for the tests). cpp/include/fastanchor/iou.hpp and kmeans/.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "box_rows.hpp"
#include "fastanchor/distinct.hpp"
#include "fastanchor/iou.hpp"
#include "fastanchor/kmeans.hpp"

namespace fastanchor_py {
namespace {

fa::Update update_of(const std::string& update) {
    return choice(update, "update", {"median", "mean"}) == 1 ? fa::Update::Mean : fa::Update::Median;
}

py::array wh_iou(const Array& wh1, const Array& wh2, bool out_float32, int n_threads) {
    check_rows(wh1, "wh1", 2);
    check_rows(wh2, "wh2", 2);
    const fa::WhSet s1 = to_whset(wh1), s2 = to_whset(wh2);
    return new_matrix(static_cast<py::ssize_t>(s1.size()), static_cast<py::ssize_t>(s2.size()), out_float32,
                      [&](auto* out) { fa::iou_matrix(s1, s2, out, n_threads); });
}

py::array_t<std::int32_t> assign(const Array& anchors, const Array& wh, int n_threads) {
    check_rows(anchors, "anchors", 2);
    check_least(anchors, "anchors", 1);
    check_rows(wh, "wh", 2);
    const fa::WhSet a = to_whset(anchors), b = to_whset(wh);
    py::array_t<std::int32_t> labels(static_cast<py::ssize_t>(b.size()));
    std::int32_t* ptr = labels.mutable_data();
    py::gil_scoped_release release;
    fa::assign_all(b, a, ptr, n_threads);
    return labels;
}

double avg_iou(const Array& anchors, const Array& wh, const py::object& weights, int n_threads) {
    check_rows(anchors, "anchors", 2);
    check_least(anchors, "anchors", 1);
    check_rows(wh, "wh", 2);
    const fa::WhSet a = to_whset(anchors), b = to_whset(wh);
    Array wt;
    const double* wptr = weights_of(weights, wh.shape(0), wt);
    py::gil_scoped_release release;
    return fa::avg_best_iou(b, wptr, a, n_threads);
}

// For tests (tests/test_kmeans.py): the Lloyd assignment and update driven through given
// anchor sets (S, k, 2); see fastanchor::lloyd_trace.
py::dict lloyd_trace(const py::array& wh, const py::object& weights, const Array& sets, const std::string& update,
                     int n_threads) {
    const fa::Update u = update_of(update);
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    Array wt;
    const double* wptr = weights_of(weights, wh.shape(0), wt);
    if (sets.ndim() != 3 || sets.shape(2) != 2 || sets.shape(1) < 1)
        throw py::value_error("sets must have shape (S, k, 2) with k >= 1");
    if (n < 1) throw py::value_error("wh must have at least 1 row");
    const auto n_sets = static_cast<int>(sets.shape(0)), k = static_cast<int>(sets.shape(1));
    const double* sp = sets.data();
    fa::LloydTrace t;
    {
        py::gil_scoped_release release;
        t = fa::lloyd_trace(rows, wptr, n, sp, n_sets, k, u, n_threads);
    }
    py::array_t<std::int32_t> labels({static_cast<py::ssize_t>(n_sets), static_cast<py::ssize_t>(n)});
    std::copy(t.labels.begin(), t.labels.end(), labels.mutable_data());
    py::array_t<double> updated({static_cast<py::ssize_t>(n_sets), static_cast<py::ssize_t>(k), py::ssize_t{2}});
    std::copy(t.updated.begin(), t.updated.end(), updated.mutable_data());
    py::array_t<int> pass(static_cast<py::ssize_t>(n_sets));
    std::copy(t.pass.begin(), t.pass.end(), pass.mutable_data());
    py::dict d;
    d["labels"] = labels;
    d["updated"] = updated;
    d["passes"] = pass;
    return d;
}

// The rows, weights and initial anchors of a fit, checked (k in [1, len(wh)], init_anchors (k, 2)
// when given); the arrays that own the data are kept here.
struct FitInputs {
    py::object keep;
    fa::BoxRows rows;
    fa::index_t n = 0;
    Array wt, ia;
    const double* wptr = nullptr;
    const double* iptr = nullptr;
};

void fit_inputs(const py::array& wh, const py::object& weights, int k, bool given, const py::object& init_anchors,
                FitInputs& f) {
    f.rows = box_rows(wh, f.keep);
    f.n = static_cast<fa::index_t>(wh.shape(0));
    if (k < 1 || k > f.n) throw py::value_error("k must be in [1, len(wh)]");
    f.wptr = weights_of(weights, wh.shape(0), f.wt);
    if (given) {
        if (init_anchors.is_none()) throw py::value_error("init 'given' needs init_anchors");
        f.ia = init_anchors.cast<Array>();
        check_rows(f.ia, "init_anchors", 2, k);
        f.iptr = f.ia.data();
    }
}

py::dict kmeans_iou(const py::array& wh, const py::object& weights, int k, const std::string& init,
                    const py::object& init_anchors, const std::string& update, int n_init, int max_iter, double tol,
                    std::uint64_t seed, int n_threads, py::object callback, double skip_below) {
    fa::KMeansOptions o;
    o.k = k;
    o.skip_below = skip_below;
    const int init_kind = choice(init, "init", {"k-means++", "random", "given"});
    o.init = init_kind == 2 ? fa::Init::Given : init_kind == 1 ? fa::Init::Random : fa::Init::KMeansPP;
    o.update = update_of(update);
    o.n_init = n_init;
    o.max_iter = max_iter;
    o.tol = tol;
    o.seed = seed;
    o.n_threads = n_threads;
    FitInputs f;
    fit_inputs(wh, weights, k, o.init == fa::Init::Given, init_anchors, f);
    const fa::index_t n = f.n;
    // Written by the fit at its end (untouched pages take no memory until then); none when
    // boxes are left out.
    py::object labels = py::none();
    std::int32_t* lptr = nullptr;
    if (!(skip_below > 0.0)) {
        py::array_t<std::int32_t> all(static_cast<py::ssize_t>(n));
        lptr = all.mutable_data();
        labels = all;
    }
    PyMonitor mon(std::move(callback));
    fa::KMeansOutput r;
    {
        py::gil_scoped_release release;
        r = fa::kmeans_iou(f.rows, f.wptr, n, o, f.iptr, mon, lptr);
    }
    py::array_t<double> anchors({static_cast<py::ssize_t>(k), py::ssize_t{2}});
    auto A = anchors.mutable_unchecked<2>();
    for (int j = 0; j < k; ++j) {
        A(j, 0) = r.anchors.w[j];
        A(j, 1) = r.anchors.h[j];
    }
    py::dict d;
    d["anchors"] = anchors;
    d["labels"] = labels;
    d["avg_iou"] = skip_below > 0.0 ? py::object(py::none()) : py::object(py::float_(r.avg_iou));
    d["n_iter"] = r.n_iter;
    d["converged"] = r.converged;
    d["best_run"] = r.best_run;
    return d;
}

// The log-space fit (fastanchor::kmeans_log): anchors (sorted), their logs, labels, inertia.
py::dict kmeans_log(const py::array& wh, const py::object& weights, int k, const std::string& init,
                    const py::object& init_anchors, int n_init, int max_iter, double tol, std::uint64_t seed,
                    int n_threads, py::object callback) {
    const int init_kind = choice(init, "init", {"k-means++", "random", "given"});
    FitInputs f;
    fit_inputs(wh, weights, k, init_kind == 2, init_anchors, f);
    const fa::index_t n = f.n;
    PyMonitor mon(std::move(callback));
    fa::LogKMeansOutput r;
    {
        py::gil_scoped_release release;
        r = fa::kmeans_log(f.rows, f.wptr, n, k, init_kind, f.iptr, n_init, max_iter, tol, seed, n_threads, mon);
    }
    py::array_t<double> anchors({static_cast<py::ssize_t>(k), py::ssize_t{2}});
    py::array_t<double> logs({static_cast<py::ssize_t>(k), py::ssize_t{2}});
    auto A = anchors.mutable_unchecked<2>();
    auto L = logs.mutable_unchecked<2>();
    for (int j = 0; j < k; ++j) {
        A(j, 0) = r.anchors.w[j];
        A(j, 1) = r.anchors.h[j];
        L(j, 0) = r.log_w[j];
        L(j, 1) = r.log_h[j];
    }
    py::array_t<std::int32_t> labels(static_cast<py::ssize_t>(n));
    std::copy(r.labels.begin(), r.labels.end(), labels.mutable_data());
    py::dict d;
    d["anchors"] = anchors;
    d["log_anchors"] = logs;
    d["labels"] = labels;
    d["inertia"] = r.inertia;
    d["n_iter"] = r.n_iter;
    d["converged"] = r.converged;
    d["best_run"] = r.best_run;
    return d;
}

// Labels of wh by the nearest log anchor (fastanchor::log_assign).
py::array_t<std::int32_t> log_assign(const Array& log_anchors, const py::array& wh, int n_threads) {
    check_rows(log_anchors, "log_anchors", 2);
    check_least(log_anchors, "log_anchors", 1);
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const auto k = static_cast<std::size_t>(log_anchors.shape(0));
    std::vector<double> aw(k), ah(k);
    for (std::size_t j = 0; j < k; ++j) {
        aw[j] = log_anchors.data()[2 * j];
        ah[j] = log_anchors.data()[2 * j + 1];
    }
    py::array_t<std::int32_t> labels(static_cast<py::ssize_t>(n));
    std::int32_t* ptr = labels.mutable_data();
    py::gil_scoped_release release;
    fa::log_assign(rows, n, aw, ah, ptr, n_threads);
    return labels;
}

// For tests: lloyd_step over the chunks [bounds[c], bounds[c + 1]) of wh (unit weights), the
// chunks' partials merged in the order `order` (a permutation of the chunks). Returns the labels
// and, for "mean", the counts and means; for "median", the counts and the histograms of the
// layout (key_lo, shift, bins) given for both coordinates.
py::dict lloyd_step_chunks(const py::array& wh, const Array& anchors, const std::string& mode, const IndexArray& bounds,
                           const IndexArray& order, std::uint32_t key_lo, int shift, int bins) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    check_rows(anchors, "anchors", 2);
    check_least(anchors, "anchors", 1);
    const int kind = choice(mode, "mode", {"assign", "mean", "median"});
    const fa::StepMode m = kind == 0 ? fa::StepMode::AssignOnly : kind == 1 ? fa::StepMode::Mean : fa::StepMode::Median;
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    if (bounds.ndim() != 1 || bounds.shape(0) < 1 || order.ndim() != 1 || order.shape(0) != bounds.shape(0) - 1)
        throw py::value_error("bounds must have shape (C + 1,) and order shape (C,)");
    const fa::index_t* bd = bounds.data();
    const fa::index_t* od = order.data();
    const fa::index_t chunks = bounds.shape(0) - 1;
    if (bd[0] != 0 || bd[chunks] != n) throw py::value_error("bounds must run from 0 to len(wh)");
    for (fa::index_t c = 0; c < chunks; ++c) {
        if (bd[c + 1] < bd[c]) throw py::value_error("bounds must be non-decreasing");
        if (od[c] < 0 || od[c] >= chunks) throw py::value_error("order must be a permutation of the chunks");
    }
    if (bins < 1 || shift < 0 || shift > 31) throw py::value_error("bins must be >= 1 and shift in [0, 31]");
    fa::HistLayout layout;
    layout.key_lo[0] = layout.key_lo[1] = key_lo;
    layout.shift[0] = layout.shift[1] = shift;
    layout.bins = bins;
    const fa::WhSet A = to_whset(anchors);
    const int k = static_cast<int>(A.size());
    py::array_t<std::int32_t> labels(static_cast<py::ssize_t>(n));
    std::int32_t* lptr = labels.mutable_data();
    fa::StepPartials total(k, m, &layout);
    {
        py::gil_scoped_release release;
        std::vector<fa::StepPartials> part(static_cast<std::size_t>(chunks), fa::StepPartials(k, m, &layout));
        for (fa::index_t c = 0; c < chunks; ++c) {
            fa::BoxRows r;
            if (rows.f32) r.f32 = rows.f32 + 2 * bd[c];
            else r.f64 = rows.f64 + 2 * bd[c];
            fa::lloyd_step(r, bd[c + 1] - bd[c], A, lptr + bd[c], m, &layout, &part[static_cast<std::size_t>(c)]);
        }
        for (fa::index_t c = 0; c < chunks; ++c) total.merge(part[static_cast<std::size_t>(od[c])]);
    }
    py::dict d;
    d["labels"] = labels;
    py::array_t<std::int64_t> count(k);
    std::copy(total.count.begin(), total.count.end(), count.mutable_data());
    d["count"] = count;
    if (m == fa::StepMode::Mean) {
        py::array_t<double> means({static_cast<py::ssize_t>(k), py::ssize_t{2}});
        auto M = means.mutable_unchecked<2>();
        for (int c = 0; c < k; ++c) {
            M(c, 0) = total.count[c] > 0 ? total.mean(0, c) : 0.0;
            M(c, 1) = total.count[c] > 0 ? total.mean(1, c) : 0.0;
        }
        d["means"] = means;
    } else if (m == fa::StepMode::Median) {
        py::array_t<std::uint64_t> hist({py::ssize_t{2}, static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(bins)});
        std::copy(total.hist.begin(), total.hist.end(), hist.mutable_data());
        d["hist"] = hist;
    }
    return d;
}

// The first m distinct values of a 1-D int64 sequence of values >= 0, in the order of their first
// occurrence (distinct.hpp): the samples' draws of rows without replacement.
py::array_t<std::int64_t> first_distinct(
    const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& seq, py::ssize_t m) {
    if (seq.ndim() != 1) throw py::value_error("seq must be 1-D");
    if (m < 0) throw py::value_error("m must be >= 0");
    const py::ssize_t n = seq.shape(0);
    std::vector<std::int64_t> out(static_cast<std::size_t>(std::min(n, m)));
    fa::index_t count = 0;
    {
        py::gil_scoped_release release;
        count = fa::first_distinct(seq.data(), n, m, out.data());
    }
    return py::array_t<std::int64_t>(static_cast<py::ssize_t>(count), out.data());
}

// A sorted copy of a 1-D int64 array of values >= 0 (distinct.hpp's radix sort).
py::array_t<std::int64_t> sorted_indices(
    const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& a) {
    if (a.ndim() != 1) throw py::value_error("a must be 1-D");
    py::array_t<std::int64_t> out(a.shape(0));
    std::copy(a.data(), a.data() + a.shape(0), out.mutable_data());
    {
        py::gil_scoped_release release;
        fa::sort_nonnegative(out.mutable_data(), static_cast<fa::index_t>(out.shape(0)));
    }
    return out;
}

}  // namespace

void register_kmeans(py::module_& m) {
    m.def("_first_distinct", &first_distinct, py::arg("seq"), py::arg("m"));
    m.def("_sorted_indices", &sorted_indices, py::arg("a"));
    m.def("wh_iou", &wh_iou, py::arg("wh1"), py::arg("wh2"), py::arg("out_float32"), py::arg("n_threads"));
    m.def("assign", &assign, py::arg("anchors"), py::arg("wh"), py::arg("n_threads"));
    m.def("avg_iou", &avg_iou, py::arg("anchors"), py::arg("wh"), py::arg("weights"), py::arg("n_threads"));
    m.def("kmeans_iou", &kmeans_iou, py::arg("wh"), py::arg("weights"), py::arg("k"), py::arg("init"),
          py::arg("init_anchors"), py::arg("update"), py::arg("n_init"), py::arg("max_iter"), py::arg("tol"),
          py::arg("seed"), py::arg("n_threads"), py::arg("callback"), py::arg("skip_below") = 0.0);
    m.def("kmeans_log", &kmeans_log, py::arg("wh"), py::arg("weights"), py::arg("k"), py::arg("init"),
          py::arg("init_anchors"), py::arg("n_init"), py::arg("max_iter"), py::arg("tol"), py::arg("seed"),
          py::arg("n_threads"), py::arg("callback"));
    m.def("log_assign", &log_assign, py::arg("log_anchors"), py::arg("wh"), py::arg("n_threads"));
    m.def("_lloyd_step_chunks", &lloyd_step_chunks, py::arg("wh"), py::arg("anchors"), py::arg("mode"),
          py::arg("bounds"), py::arg("order"), py::arg("key_lo"), py::arg("shift"), py::arg("bins"));
    m.def("lloyd_trace", &lloyd_trace, py::arg("wh"), py::arg("weights"), py::arg("sets"), py::arg("update"),
          py::arg("n_threads"));
}

}  // namespace fastanchor_py
