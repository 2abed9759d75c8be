// The one binding file: converts arrays, releases the GIL around every kernel and maps C++
// exceptions to Python ones. It validates nothing: python/fastanchor owns argument checking.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "fastanchor/boxes.hpp"
#include "fastanchor/common.hpp"
#include "fastanchor/fitness.hpp"
#include "fastanchor/iou.hpp"
#include "fastanchor/kmeans.hpp"

namespace py = pybind11;
namespace fa = fastanchor;

using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

namespace {

fa::WhSet to_whset(const Array& a) { return fa::WhSet::from_rows(a.data(), static_cast<fa::index_t>(a.shape(0))); }

using Array32 = py::array_t<float, py::array::c_style>;

// The boxes of a fit, read in place: a C-contiguous float32 array as it is, anything else as
// float64 (converted only if it is not C-contiguous float64 already). `keep` holds the array.
fa::BoxRows box_rows(const py::array& wh, py::object& keep) {
    fa::BoxRows rows;
    if (py::isinstance<Array32>(wh) && (wh.flags() & py::array::c_style)) {
        Array32 a = py::reinterpret_borrow<Array32>(wh);
        rows.f32 = a.data();
        keep = a;
    } else {
        Array a = wh.cast<Array>();
        rows.f64 = a.data();
        keep = a;
    }
    return rows;
}

// Lets a long kernel notice Ctrl-C and report progress: between steps it takes the GIL,
// runs Python's signal handlers (a KeyboardInterrupt propagates as error_already_set) and calls
// the optional callback(stage, run, step).
class PyMonitor final : public fa::Monitor {
public:
    explicit PyMonitor(py::object callback) : callback_(std::move(callback)) {}
    void tick(const char* stage, int run, fa::index_t step) override {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        if (!callback_.is_none()) callback_(stage, run, step);
    }

private:
    py::object callback_;
};

py::array wh_iou(const Array& wh1, const Array& wh2, bool out_float32, int n_threads) {
    const fa::WhSet s1 = to_whset(wh1), s2 = to_whset(wh2);
    const auto n = static_cast<py::ssize_t>(s1.size()), m = static_cast<py::ssize_t>(s2.size());
    if (out_float32) {
        py::array_t<float> out({n, m});
        float* ptr = out.mutable_data();
        py::gil_scoped_release release;
        fa::iou_matrix(s1, s2, ptr, n_threads);
        return std::move(out);
    }
    py::array_t<double> out({n, m});
    double* ptr = out.mutable_data();
    py::gil_scoped_release release;
    fa::iou_matrix(s1, s2, ptr, n_threads);
    return std::move(out);
}

py::array_t<std::int32_t> assign(const Array& anchors, const Array& wh, int n_threads) {
    const fa::WhSet a = to_whset(anchors), b = to_whset(wh);
    py::array_t<std::int32_t> labels(static_cast<py::ssize_t>(b.size()));
    std::int32_t* ptr = labels.mutable_data();
    py::gil_scoped_release release;
    fa::assign_all(b, a, ptr, n_threads);
    return labels;
}

double avg_iou(const Array& anchors, const Array& wh, const py::object& weights, int n_threads) {
    const fa::WhSet a = to_whset(anchors), b = to_whset(wh);
    Array wt;
    if (!weights.is_none()) wt = weights.cast<Array>();
    const double* wptr = weights.is_none() ? nullptr : wt.data();
    py::gil_scoped_release release;
    return fa::avg_best_iou(b, wptr, a, n_threads);
}

// For tests (tests/test_kmeans.py): the Lloyd assignment and update driven through given
// anchor sets (S, k, 2); see fastanchor::lloyd_trace.
py::dict lloyd_trace(const py::array& wh, const py::object& weights, const Array& sets, const std::string& update,
                     int n_threads, bool portable) {
    Array wt;
    if (!weights.is_none()) wt = weights.cast<Array>();
    const double* wptr = weights.is_none() ? nullptr : wt.data();
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const auto n_sets = static_cast<int>(sets.shape(0)), k = static_cast<int>(sets.shape(1));
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    const double* sp = sets.data();
    fa::LloydTrace t;
    {
        py::gil_scoped_release release;
        t = fa::lloyd_trace(rows, wptr, n, sp, n_sets, k, update == "mean" ? fa::Update::Mean : fa::Update::Median,
                            n_threads, portable);
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

py::dict kmeans_iou(const py::array& wh, const py::object& weights, int k, const std::string& init,
                    const py::object& init_anchors, const std::string& update, int n_init, int max_iter, double tol,
                    std::uint64_t seed, int n_threads, py::object callback, bool portable) {
    fa::KMeansOptions o;
    o.portable = portable;
    o.k = k;
    o.init = init == "given" ? fa::Init::Given : init == "random" ? fa::Init::Random : fa::Init::KMeansPP;
    o.update = update == "mean" ? fa::Update::Mean : fa::Update::Median;
    o.n_init = n_init;
    o.max_iter = max_iter;
    o.tol = tol;
    o.seed = seed;
    o.n_threads = n_threads;
    Array wt, ia;
    if (!weights.is_none()) wt = weights.cast<Array>();
    if (!init_anchors.is_none()) ia = init_anchors.cast<Array>();
    const double* wptr = weights.is_none() ? nullptr : wt.data();
    const double* iptr = init_anchors.is_none() ? nullptr : ia.data();
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    py::object keep;
    const fa::BoxRows rows = box_rows(wh, keep);
    // Written by the fit at its end (untouched pages take no memory until then).
    py::array_t<std::int32_t> labels(static_cast<py::ssize_t>(n));
    std::int32_t* lptr = labels.mutable_data();
    PyMonitor mon(std::move(callback));
    fa::KMeansOutput r;
    {
        py::gil_scoped_release release;
        r = fa::kmeans_iou(rows, wptr, n, o, iptr, mon, lptr);
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
    d["avg_iou"] = r.avg_iou;
    d["n_iter"] = r.n_iter;
    d["converged"] = r.converged;
    d["best_run"] = r.best_run;
    return d;
}

}  // namespace

// ---- fitness / evolution ----
// Anchor fitness (YOLOv5's ratio metric) and the mutation search: cpp/include/fastanchor/fitness.hpp.

namespace {

const double* optional_data(const py::object& obj, Array& holder) {
    if (obj.is_none()) return nullptr;
    holder = obj.cast<Array>();
    return holder.data();
}

py::tuple anchor_fitness(const Array& anchors, const Array& wh, const py::object& weights, double thr, int n_threads) {
    Array wt;
    const double* wptr = optional_data(weights, wt);
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const int k = static_cast<int>(anchors.shape(0));
    const double *data = wh.data(), *adata = anchors.data();
    fa::FitnessMetrics r;
    {
        py::gil_scoped_release release;
        r = fa::fitness_metrics(data, wptr, n, fa::RatioAnchors::from_rows(adata, k), thr, n_threads);
    }
    return py::make_tuple(r.fitness, r.bpr, r.aat, r.avg_iou);
}

// Ctrl-C between passes; progress(done, fitness) after each pass; callback(generation, fitness,
// anchors) after every generation when given (a result that is not None and false stops).
class PyEvolveMonitor final : public fa::EvolveMonitor {
public:
    PyEvolveMonitor(py::object progress, py::object callback)
        : progress_(std::move(progress)), callback_(std::move(callback)) {}
    void tick(const char*, int, fa::index_t) override {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
    void progress(int done, double fitness) override {
        if (progress_.is_none()) return;
        py::gil_scoped_acquire gil;
        progress_(done, fitness);
    }
    bool per_generation() const override { return !callback_.is_none(); }
    bool generation(int g, double fitness, const fa::RatioAnchors& best) override {
        py::gil_scoped_acquire gil;
        py::array_t<double> rows({static_cast<py::ssize_t>(best.k), py::ssize_t{2}});
        best.to_rows(rows.mutable_data());
        const py::object r = callback_(g, fitness, rows);
        return r.is_none() || py::bool_(r);
    }

private:
    py::object progress_, callback_;
};

py::dict evolve_anchors(const Array& wh, const py::object& weights, const Array& init, double thr, int generations,
                        double mutation_prob, double sigma, double min_size, const std::string& strategy, int batch,
                        std::uint64_t seed, int n_threads, py::object progress, py::object callback) {
    fa::EvolveOptions o;
    o.thr = thr;
    o.generations = generations;
    o.mutation_prob = mutation_prob;
    o.sigma = sigma;
    o.min_size = min_size;
    o.strategy = strategy == "yolov5" ? fa::Strategy::YOLOv5 : fa::Strategy::Anchorwise;
    o.batch = batch;
    o.seed = seed;
    o.n_threads = n_threads;
    Array wt;
    const double* wptr = optional_data(weights, wt);
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const int k = static_cast<int>(init.shape(0));
    const double *data = wh.data(), *iptr = init.data();
    PyEvolveMonitor mon(std::move(progress), std::move(callback));
    fa::EvolveOutput r;
    {
        py::gil_scoped_release release;
        r = fa::evolve_anchors(data, wptr, n, iptr, k, o, mon);
    }
    py::array_t<double> anchors({static_cast<py::ssize_t>(k), py::ssize_t{2}});
    std::copy(r.anchors.begin(), r.anchors.end(), anchors.mutable_data());
    py::array_t<double> history(static_cast<py::ssize_t>(r.history.size()));
    std::copy(r.history.begin(), r.history.end(), history.mutable_data());
    py::dict d;
    d["anchors"] = anchors;
    d["fitness"] = r.metrics.fitness;
    d["bpr"] = r.metrics.bpr;
    d["aat"] = r.metrics.aat;
    d["avg_iou"] = r.metrics.avg_iou;
    d["history"] = history;
    d["n_improved"] = r.n_improved;
    d["initial_fitness"] = r.initial_fitness;
    return d;
}

}  // namespace
// ---- end fitness / evolution ----

// ---- SSD / corner boxes ----
// IoU of corner boxes, SSD prior matching and grid recall: cpp/include/fastanchor/boxes.hpp.

namespace {

fa::CornerSet to_corners(const Array& a) {
    return fa::CornerSet::from_rows(a.data(), static_cast<fa::index_t>(a.shape(0)));
}

py::array box_iou(const Array& b1, const Array& b2, bool out_float32, int n_threads) {
    const fa::CornerSet s1 = to_corners(b1), s2 = to_corners(b2);
    const auto n = static_cast<py::ssize_t>(s1.size()), m = static_cast<py::ssize_t>(s2.size());
    if (out_float32) {
        py::array_t<float> out({n, m});
        float* ptr = out.mutable_data();
        py::gil_scoped_release release;
        fa::box_iou_matrix(s1, s2, ptr, n_threads);
        return std::move(out);
    }
    py::array_t<double> out({n, m});
    double* ptr = out.mutable_data();
    py::gil_scoped_release release;
    fa::box_iou_matrix(s1, s2, ptr, n_threads);
    return std::move(out);
}

// gt: all images' GT rows concatenated (G_total, 4); offsets: (B + 1,) int64 row offsets.
// max_stored_cells and portable (the portable row kernel even where the AVX2 one runs) are for
// the tests.
py::array_t<std::int32_t> match_priors(const Array& priors, const Array& gt,
                                       const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& offsets,
                                       double threshold, int n_threads, fa::index_t max_stored_cells, bool portable) {
    const fa::CornerSet pri = to_corners(priors);
    const auto n_images = static_cast<fa::index_t>(offsets.shape(0)) - 1;
    py::array_t<std::int32_t> out({static_cast<py::ssize_t>(n_images), static_cast<py::ssize_t>(pri.size())});
    std::int32_t* ptr = out.mutable_data();
    const double* g = gt.data();
    const fa::index_t* off = offsets.data();
    py::gil_scoped_release release;
    fa::match_batch(pri, g, off, n_images, threshold, ptr, n_threads, max_stored_cells, portable);
    return out;
}

// levels: list of (stride, anchors (k, 2)); image_wh (N, 2).
py::array_t<double> grid_best_iou(const Array& boxes, const Array& image_wh, const py::list& levels, int n_threads) {
    const fa::CornerSet b = to_corners(boxes);
    std::vector<fa::GridLevel> lv;
    for (const py::handle item : levels) {
        const auto t = item.cast<py::tuple>();
        const Array a = t[1].cast<Array>();
        fa::GridLevel L;
        L.stride = t[0].cast<double>();
        for (py::ssize_t j = 0; j < a.shape(0); ++j) {
            L.w.push_back(a.at(j, 0));
            L.h.push_back(a.at(j, 1));
        }
        lv.push_back(std::move(L));
    }
    py::array_t<double> out(static_cast<py::ssize_t>(b.size()));
    double* ptr = out.mutable_data();
    const double* img = image_wh.data();
    py::gil_scoped_release release;
    fa::grid_best_iou(b, img, lv, ptr, n_threads);
    return out;
}

}  // namespace
// ---- end SSD / corner boxes ----

// Free-threaded Python (3.13t): every call keeps its state to itself (the inputs are private
// copies made by the Python layer, the outputs new arrays, the monitors per call, the core has no
// mutable globals), so the module declares that it does not need the GIL (pybind11 >= 2.13).
#if PYBIND11_VERSION_HEX >= 0x020D0000
PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
#else
PYBIND11_MODULE(_core, m) {
#endif
    m.doc() = "fastanchor's compiled core (private: use the fastanchor package).";
    m.def("max_threads", &fa::max_threads, "Threads OpenMP would use by default (honours OMP_NUM_THREADS).");
    m.def("has_openmp", &fa::has_openmp, "Whether the core was compiled with OpenMP.");
    m.def("wh_iou", &wh_iou, py::arg("wh1"), py::arg("wh2"), py::arg("out_float32"), py::arg("n_threads"));
    m.def("assign", &assign, py::arg("anchors"), py::arg("wh"), py::arg("n_threads"));
    m.def("avg_iou", &avg_iou, py::arg("anchors"), py::arg("wh"), py::arg("weights"), py::arg("n_threads"));
    m.def("kmeans_iou", &kmeans_iou, py::arg("wh"), py::arg("weights"), py::arg("k"), py::arg("init"),
          py::arg("init_anchors"), py::arg("update"), py::arg("n_init"), py::arg("max_iter"), py::arg("tol"),
          py::arg("seed"), py::arg("n_threads"), py::arg("callback"), py::arg("portable") = false);
    m.def("lloyd_trace", &lloyd_trace, py::arg("wh"), py::arg("weights"), py::arg("sets"), py::arg("update"),
          py::arg("n_threads"), py::arg("portable") = false);
    // ---- fitness / evolution ----
    m.def("anchor_fitness", &anchor_fitness, py::arg("anchors"), py::arg("wh"), py::arg("weights"), py::arg("thr"),
          py::arg("n_threads"));
    m.def("evolve_anchors", &evolve_anchors, py::arg("wh"), py::arg("weights"), py::arg("init"), py::arg("thr"),
          py::arg("generations"), py::arg("mutation_prob"), py::arg("sigma"), py::arg("min_size"),
          py::arg("strategy"), py::arg("batch"), py::arg("seed"), py::arg("n_threads"), py::arg("progress"),
          py::arg("callback"));
    // ---- end fitness / evolution ----
    // ---- SSD / corner boxes ----
    m.def("box_iou", &box_iou, py::arg("boxes1"), py::arg("boxes2"), py::arg("out_float32"), py::arg("n_threads"));
    m.def("match_priors", &match_priors, py::arg("priors"), py::arg("gt"), py::arg("offsets"), py::arg("threshold"),
          py::arg("n_threads"), py::arg("max_stored_cells") = fa::kMaxStoredCells,
          py::arg("portable") = false);
    m.def("grid_best_iou", &grid_best_iou, py::arg("boxes"), py::arg("image_wh"), py::arg("levels"),
          py::arg("n_threads"));
    // ---- end SSD / corner boxes ----
}
