// The boxes and anchors the k-means and chunk bindings read: one reader for both.
#pragma once

#include "bindings.hpp"
#include "fastanchor/iou.hpp"
#include "fastanchor/kmeans/problem.hpp"

namespace fastanchor_py {

// A C-contiguous float32 array as it is, anything else as float64 (converted only if it is not
// C-contiguous float64 already; a misaligned buffer is copied). `keep` holds the array read.
inline fa::BoxRows box_rows(const py::array& wh_in, py::object& keep) {
    const py::array wh = aligned(wh_in);
    fa::BoxRows rows;
    if (py::isinstance<Array32>(wh) && (wh.flags() & py::array::c_style)) {
        Array32 a = py::reinterpret_borrow<Array32>(wh);
        check_rows(a, "wh", 2);
        rows.f32 = a.data();
        keep = a;
    } else {
        Array a = wh.cast<Array>();
        check_rows(a, "wh", 2);
        rows.f64 = a.data();
        keep = a;
    }
    return rows;
}

// (w, h) rows as a WhSet, read from an aligned buffer (anchors unpickled on a Dask worker may not
// be aligned).
inline fa::WhSet to_whset(const Array& a) {
    const Array b = aligned(a).cast<Array>();
    return fa::WhSet::from_rows(b.data(), static_cast<fa::index_t>(b.shape(0)));
}

}  // namespace fastanchor_py
