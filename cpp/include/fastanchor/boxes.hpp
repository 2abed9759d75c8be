// fastanchor: corner boxes: IoU matrix (boxes/box_iou.hpp), SSD prior matching (boxes/match.hpp),
// the recall of anchors on a detector's grids (boxes/grid.hpp).
#pragma once

#include "boxes/box_iou.hpp"
#include "boxes/grid.hpp"
#include "boxes/match.hpp"
