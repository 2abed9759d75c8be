// The search's objective named from Python, read by the fitness and chunk bindings.
#pragma once

#include <string>

#include "bindings.hpp"
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

}  // namespace fastanchor_py
