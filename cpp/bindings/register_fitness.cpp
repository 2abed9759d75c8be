// Bindings of the anchor fitness (YOLOv5's ratio metric) and the mutation search:
// cpp/include/fastanchor/fitness/ and evolve.hpp.
#include <algorithm>
#include <cstdint>
#include <string>

#include "bindings.hpp"
#include "objective.hpp"
#include "fastanchor/evolve.hpp"
#include "fastanchor/fitness.hpp"

namespace fastanchor_py {
namespace {

py::tuple anchor_fitness(const Array& anchors, const Array& wh, const py::object& weights, double thr, int n_threads) {
    check_rows(anchors, "anchors", 2);
    check_least(anchors, "anchors", 1);
    check_rows(wh, "wh", 2);
    Array wt;
    const double* wptr = weights_of(weights, wh.shape(0), wt);
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

// The grid of a grid-scored objective (None: corner-aligned): boxes (n, 4), image sizes (n, 2) and
// strides, checked against the n boxes of wh. The GridBoxes is built with the GIL released.
struct GridArgs {
    Array boxes, image_wh, strides;
    bool given = false;

    GridArgs(const py::object& b, const py::object& img, const py::object& st, py::ssize_t n) {
        if (b.is_none()) return;
        given = true;
        boxes = b.cast<Array>();
        image_wh = img.cast<Array>();
        strides = st.cast<Array>();
        check_rows(boxes, "grid_boxes", 4, n);
        check_rows(image_wh, "grid_image_wh", 2, n);
        if (strides.ndim() != 1 || strides.shape(0) < 1) throw py::value_error("grid_strides must be a 1-D array");
    }

    fa::GridBoxes make(const double* weights, int n_threads) const {
        return fa::GridBoxes::make(boxes.data(), image_wh.data(), static_cast<fa::index_t>(boxes.shape(0)),
                                   strides.data(), static_cast<int>(strides.shape(0)), weights, n_threads);
    }
};

double anchor_objective(const Array& anchors, const Array& wh, const py::object& weights, const std::string& objective,
                        double thr, double iou_thr, bool iou_weighted, int n_threads, const py::object& grid_boxes,
                        const py::object& grid_image_wh, const py::object& grid_strides) {
    check_rows(anchors, "anchors", 2);
    check_least(anchors, "anchors", 1);
    check_rows(wh, "wh", 2);
    check_least(wh, "wh", 1);
    Array wt;
    const double* wptr = weights_of(weights, wh.shape(0), wt);
    const fa::Objective ob = objective_of(objective, iou_thr, iou_weighted);
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    const int k = static_cast<int>(anchors.shape(0));
    const double *data = wh.data(), *adata = anchors.data();
    const GridArgs grid(grid_boxes, grid_image_wh, grid_strides, wh.shape(0));
    if (grid.given && ob.kind == fa::ObjectiveKind::Fitness) throw py::value_error("a grid needs an IoU objective");
    py::gil_scoped_release release;
    const fa::RatioAnchors A = fa::RatioAnchors::from_rows(adata, k);
    if (!grid.given) return fa::objective_value(data, wptr, n, A, ob, thr, n_threads);
    const fa::GridBoxes G = grid.make(wptr, n_threads);
    double v = 0.0;
    fa::grid_objective_batch(G, &A, 1, ob, &v, n_threads);
    return v;
}

// The report of anchors on the boxes of a search layout: (fitness, bpr, aat, avg_iou), the same
// values as anchor_fitness on the rows.
py::tuple layout_metrics(const std::shared_ptr<SearchLayout>& layout, const Array& anchors, double thr, int n_threads) {
    if (!layout) throw py::value_error("layout must be a _SearchLayout");
    check_rows(anchors, "anchors", 2);
    check_least(anchors, "anchors", 1);
    const int k = static_cast<int>(anchors.shape(0));
    const double* adata = anchors.data();
    fa::FitnessMetrics r;
    {
        py::gil_scoped_release release;
        r = fa::fitness_metrics(layout->T, fa::RatioAnchors::from_rows(adata, k), thr, n_threads);
    }
    return py::make_tuple(r.fitness, r.bpr, r.aat, r.avg_iou);
}

// One objective's value of anchors on the boxes of a search layout (corner-aligned), the same
// value as anchor_objective on the rows.
double layout_objective(const std::shared_ptr<SearchLayout>& layout, const Array& anchors, const std::string& objective,
                        double thr, double iou_thr, bool iou_weighted, int n_threads) {
    if (!layout) throw py::value_error("layout must be a _SearchLayout");
    check_rows(anchors, "anchors", 2);
    check_least(anchors, "anchors", 1);
    const fa::Objective ob = objective_of(objective, iou_thr, iou_weighted);
    const int k = static_cast<int>(anchors.shape(0));
    const double* adata = anchors.data();
    py::gil_scoped_release release;
    const fa::RatioAnchors A = fa::RatioAnchors::from_rows(adata, k);
    if (ob.kind == fa::ObjectiveKind::Fitness) return fa::fitness_metrics(layout->T, A, thr, n_threads).fitness;
    double v = 0.0;
    fa::iou_objective_batch(layout->T, &A, 1, ob, &v, n_threads);
    return v;
}

// Ctrl-C between passes; progress(done, fitness) after each pass; callback(generation, fitness,
// anchors) after every generation when given (a result that is not None and false stops).
class PyEvolveMonitor final : public fa::EvolveMonitor {
public:
    PyEvolveMonitor(py::object progress, py::object callback)
        : progress_(std::move(progress)), callback_(std::move(callback)) {}
    void tick(const char*, int, fa::index_t) override { check_signals(); }
    void poll() override { check_signals(); }
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

fa::EvolveOptions options_of(double thr, int generations, double mutation_prob, double sigma, double min_size,
                             const std::string& strategy, int batch, std::uint64_t seed, int n_threads,
                             const std::string& objective, double iou_thr, bool iou_weighted, int extra_generations,
                             int restart_length, double restart_sigma) {
    fa::EvolveOptions o;
    o.thr = thr;
    o.generations = generations;
    o.mutation_prob = mutation_prob;
    o.sigma = sigma;
    o.min_size = min_size;
    o.strategy =
        choice(strategy, "strategy", {"anchorwise", "yolov5"}) == 1 ? fa::Strategy::YOLOv5 : fa::Strategy::Anchorwise;
    o.batch = batch;
    o.seed = seed;
    o.n_threads = n_threads;
    o.objective = objective_of(objective, iou_thr, iou_weighted);
    o.extra_generations = extra_generations;
    o.restart_length = restart_length;
    o.restart_sigma = restart_sigma;
    return o;
}

py::array_t<double> rows_of(const std::vector<double>& v) {
    py::array_t<double> a({static_cast<py::ssize_t>(v.size() / 2), py::ssize_t{2}});
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
}

py::array_t<double> vector_of(const std::vector<double>& v) {
    py::array_t<double> a(static_cast<py::ssize_t>(v.size()));
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
}

py::dict evolve_anchors(const std::shared_ptr<SearchLayout>& layout, const py::object& weights, const Array& init,
                        double thr, int generations, double mutation_prob, double sigma, double min_size,
                        const std::string& strategy, int batch, std::uint64_t seed, int n_threads, py::object progress,
                        py::object callback, const std::string& objective, double iou_thr, bool iou_weighted,
                        int extra_generations, int restart_length, double restart_sigma, const py::object& grid_boxes,
                        const py::object& grid_image_wh, const py::object& grid_strides) {
    if (!layout) throw py::value_error("layout must be a _SearchLayout");
    check_rows(init, "init", 2);
    check_least(init, "init", 1);
    fa::EvolveOptions o =
        options_of(thr, generations, mutation_prob, sigma, min_size, strategy, batch, seed, n_threads, objective,
                   iou_thr, iou_weighted, extra_generations, restart_length, restart_sigma);
    const fa::TiledBoxes& T = layout->T;
    const auto n = static_cast<py::ssize_t>(T.size());
    // The weights of the boxes, in their input order, for the grid only (the layout has its own).
    Array wt;
    const double* wptr = weights_of(weights, n, wt);
    const int k = static_cast<int>(init.shape(0));
    const double* iptr = init.data();
    const GridArgs grid(grid_boxes, grid_image_wh, grid_strides, n);
    if (grid.given && o.objective.kind == fa::ObjectiveKind::Fitness)
        throw py::value_error("a grid needs an IoU objective");
    PyEvolveMonitor mon(std::move(progress), std::move(callback));
    fa::EvolveOutput r;
    {
        py::gil_scoped_release release;
        fa::GridBoxes G;
        if (grid.given) {
            G = grid.make(wptr, n_threads);
            o.grid = &G;
        }
        r = fa::evolve_anchors(T, iptr, k, o, mon);
    }
    py::dict d;
    d["anchors"] = rows_of(r.anchors);
    d["fitness"] = r.metrics.fitness;
    d["bpr"] = r.metrics.bpr;
    d["aat"] = r.metrics.aat;
    d["avg_iou"] = r.metrics.avg_iou;
    d["history"] = vector_of(r.history);
    d["n_improved"] = r.n_improved;
    d["initial_fitness"] = r.initial_fitness;
    d["objective"] = r.objective;
    d["stopped"] = r.stopped;
    return d;
}

// The search scored by a Python function: score(candidates) with candidates a float64 array
// (count, k, 2) returns their objective values (count,). It runs with the GIL held; the search
// between its calls without. The chunked fits score candidates by passes over chunks of boxes.
py::dict evolve_scored(const Array& init, py::object score, double thr, int generations, double mutation_prob,
                       double sigma, double min_size, const std::string& strategy, int batch, std::uint64_t seed,
                       py::object progress, py::object callback, const std::string& objective, double iou_thr,
                       bool iou_weighted, int extra_generations, int restart_length, double restart_sigma) {
    check_rows(init, "init", 2);
    check_least(init, "init", 1);
    const fa::EvolveOptions o =
        options_of(thr, generations, mutation_prob, sigma, min_size, strategy, batch, seed, 1, objective, iou_thr,
                   iou_weighted, extra_generations, restart_length, restart_sigma);
    const int k = static_cast<int>(init.shape(0));
    const double* iptr = init.data();
    PyEvolveMonitor mon(std::move(progress), std::move(callback));
    const auto scorer = [&score, k](const fa::RatioAnchors* cands, int count, double* out) {
        py::gil_scoped_acquire gil;
        py::array_t<double> rows({static_cast<py::ssize_t>(count), static_cast<py::ssize_t>(k), py::ssize_t{2}});
        for (int c = 0; c < count; ++c) cands[c].to_rows(rows.mutable_data() + 2 * static_cast<std::size_t>(k) * c);
        const auto values = score(rows).cast<py::array_t<double, py::array::c_style | py::array::forcecast>>();
        if (values.ndim() != 1 || values.shape(0) != count)
            throw py::value_error("score must return one value per candidate");
        std::copy(values.data(), values.data() + count, out);
    };
    fa::SearchOutput r;
    {
        py::gil_scoped_release release;
        r = fa::evolve_search(scorer, iptr, k, o, mon);
    }
    py::dict d;
    d["anchors"] = rows_of(r.anchors);
    d["history"] = vector_of(r.history);
    d["n_improved"] = r.n_improved;
    d["initial_fitness"] = r.initial_fitness;
    d["objective"] = r.objective;
    d["stopped"] = r.stopped;
    return d;
}

}  // namespace

void register_fitness(py::module_& m) {
    m.def("anchor_fitness", &anchor_fitness, py::arg("anchors"), py::arg("wh"), py::arg("weights"), py::arg("thr"),
          py::arg("n_threads"));
    py::class_<SearchLayout, std::shared_ptr<SearchLayout>>(m, "_SearchLayout")
        .def_property_readonly("nbytes", [](const SearchLayout& L) { return L.T.nbytes(); })
        .def_property_readonly("n", [](const SearchLayout& L) { return L.T.size(); });
    m.def("_search_layout", &search_layout, py::arg("wh"), py::arg("weights") = py::none(), py::arg("n_threads") = 1,
          py::arg("top") = 0.0);
    m.def("_layout_metrics", &layout_metrics, py::arg("layout"), py::arg("anchors"), py::arg("thr"),
          py::arg("n_threads"));
    m.def("_layout_objective", &layout_objective, py::arg("layout"), py::arg("anchors"), py::arg("objective"),
          py::arg("thr"), py::arg("iou_thr"), py::arg("iou_weighted"), py::arg("n_threads"));
    m.def("evolve_anchors", &evolve_anchors, py::arg("layout"), py::arg("weights"), py::arg("init"), py::arg("thr"),
          py::arg("generations"), py::arg("mutation_prob"), py::arg("sigma"), py::arg("min_size"), py::arg("strategy"),
          py::arg("batch"), py::arg("seed"), py::arg("n_threads"), py::arg("progress"), py::arg("callback"),
          py::arg("objective") = "fitness", py::arg("iou_thr") = 0.5, py::arg("iou_weighted") = false,
          py::arg("extra_generations") = 0, py::arg("restart_length") = 200, py::arg("restart_sigma") = 0.3,
          py::arg("grid_boxes") = py::none(), py::arg("grid_image_wh") = py::none(),
          py::arg("grid_strides") = py::none());
    m.def("_evolve_scored", &evolve_scored, py::arg("init"), py::arg("score"), py::arg("thr"), py::arg("generations"),
          py::arg("mutation_prob"), py::arg("sigma"), py::arg("min_size"), py::arg("strategy"), py::arg("batch"),
          py::arg("seed"), py::arg("progress"), py::arg("callback"), py::arg("objective"), py::arg("iou_thr"),
          py::arg("iou_weighted"), py::arg("extra_generations"), py::arg("restart_length"), py::arg("restart_sigma"));
    m.def("anchor_objective", &anchor_objective, py::arg("anchors"), py::arg("wh"), py::arg("weights"),
          py::arg("objective"), py::arg("thr"), py::arg("iou_thr"), py::arg("iou_weighted"), py::arg("n_threads"),
          py::arg("grid_boxes") = py::none(), py::arg("grid_image_wh") = py::none(),
          py::arg("grid_strides") = py::none());
}

}  // namespace fastanchor_py
