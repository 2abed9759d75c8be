// Bindings of the corner-box kernels: IoU of corner boxes, SSD prior matching and grid recall:
// cpp/include/fastanchor/boxes/.
#include <cstdint>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "fastanchor/boxes.hpp"

namespace fastanchor_py {
namespace {

fa::CornerSet to_corners(const Array& a) {
    return fa::CornerSet::from_rows(a.data(), static_cast<fa::index_t>(a.shape(0)));
}

py::array box_iou(const Array& b1, const Array& b2, bool out_float32, int n_threads) {
    check_rows(b1, "boxes1", 4);
    check_rows(b2, "boxes2", 4);
    const fa::CornerSet s1 = to_corners(b1), s2 = to_corners(b2);
    return new_matrix(static_cast<py::ssize_t>(s1.size()), static_cast<py::ssize_t>(s2.size()), out_float32,
                      [&](auto* out) { fa::box_iou_matrix(s1, s2, out, n_threads); });
}

// gt: all images' GT rows concatenated (G_total, 4); offsets: (B + 1,) int64 row offsets,
// non-decreasing within [0, G_total]. max_stored_cells is for the tests.
py::array_t<std::int32_t> match_priors(const Array& priors, const Array& gt, const IndexArray& offsets,
                                       double threshold, int n_threads, fa::index_t max_stored_cells) {
    check_rows(priors, "priors", 4);
    check_rows(gt, "gt", 4);
    if (offsets.ndim() != 1 || offsets.shape(0) < 1) throw py::value_error("offsets must have shape (B + 1,)");
    const fa::index_t* off = offsets.data();
    const auto n_images = static_cast<fa::index_t>(offsets.shape(0)) - 1;
    if (off[0] < 0 || off[n_images] > static_cast<fa::index_t>(gt.shape(0)))
        throw py::value_error("offsets must lie in [0, len(gt)]");
    for (fa::index_t b = 0; b < n_images; ++b)
        if (off[b + 1] < off[b]) throw py::value_error("offsets must be non-decreasing");
    const fa::CornerSet pri = to_corners(priors);
    py::array_t<std::int32_t> out({static_cast<py::ssize_t>(n_images), static_cast<py::ssize_t>(pri.size())});
    std::int32_t* ptr = out.mutable_data();
    const double* g = gt.data();
    py::gil_scoped_release release;
    fa::match_batch(pri, g, off, n_images, threshold, ptr, n_threads, max_stored_cells);
    return out;
}

// levels: list of (stride, anchors (k, 2)); image_wh (N, 2).
py::array_t<double> grid_best_iou(const Array& boxes, const Array& image_wh, const py::list& levels, int n_threads) {
    check_rows(boxes, "boxes", 4);
    check_rows(image_wh, "image_wh", 2, boxes.shape(0));
    const fa::CornerSet b = to_corners(boxes);
    std::vector<fa::GridLevel> lv;
    for (const py::handle item : levels) {
        const auto t = item.cast<py::tuple>();
        if (t.size() != 2) throw py::value_error("levels must hold (stride, anchors) pairs");
        const Array a = t[1].cast<Array>();
        check_rows(a, "a level's anchors", 2);
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

void register_boxes(py::module_& m) {
    m.def("box_iou", &box_iou, py::arg("boxes1"), py::arg("boxes2"), py::arg("out_float32"), py::arg("n_threads"));
    m.def("match_priors", &match_priors, py::arg("priors"), py::arg("gt"), py::arg("offsets"), py::arg("threshold"),
          py::arg("n_threads"), py::arg("max_stored_cells") = fa::kMaxStoredCells);
    m.def("grid_best_iou", &grid_best_iou, py::arg("boxes"), py::arg("image_wh"), py::arg("levels"),
          py::arg("n_threads"));
}

}  // namespace fastanchor_py
