// The search's objective named from Python and its layout of the boxes, shared by the fitness and
// chunk bindings.
#pragma once

#include <memory>
#include <string>

#include "bindings.hpp"
#include "box_rows.hpp"
#include "fastanchor/fitness/objectives.hpp"

namespace fastanchor_py {

inline fa::Objective objective_of(const std::string& name, double iou_thr, bool iou_weighted) {
    fa::Objective ob;
    const int c = choice(name, "objective", {"fitness", "avg_iou", "recall"});
    ob.kind = c == 0 ? fa::ObjectiveKind::Fitness : c == 1 ? fa::ObjectiveKind::AvgIou : fa::ObjectiveKind::Recall;
    ob.iou_thr = iou_thr;
    ob.iou_weighted = iou_weighted;
    return ob;
}

// Boxes laid out for the search (TiledBoxes: its own copy of the rows, in their precision, and
// of the scaled weights), built once with the GIL released and Ctrl-C checked: the in-memory
// search scores its candidates on one, and the chunked search keeps one per chunk between passes.
struct SearchLayout {
    fa::TiledBoxes T;
};

// top: the weights' scale (0: their largest; a chunk's layout takes the largest of all chunks).
inline std::shared_ptr<SearchLayout> search_layout(const py::array& wh_in, const py::object& weights, int n_threads,
                                                   double top = 0.0) {
    py::object keep;
    const fa::BoxRows rows = box_rows(wh_in, keep);
    const py::array wh = py::reinterpret_borrow<py::array>(keep);
    check_least(wh, "wh", 1);
    Array wt;
    const double* wptr = weights_of(weights, wh.shape(0), wt);
    const auto n = static_cast<fa::index_t>(wh.shape(0));
    auto L = std::make_shared<SearchLayout>();
    PyMonitor mon{py::none()};
    {
        py::gil_scoped_release release;
        const fa::PollScope poll(mon);  // Ctrl-C between blocks of the sort
        L->T = rows.f32 ? fa::TiledBoxes::make(rows.f32, wptr, n, n_threads, top)
                        : fa::TiledBoxes::make(rows.f64, wptr, n, n_threads, top);
    }
    return L;
}

}  // namespace fastanchor_py
