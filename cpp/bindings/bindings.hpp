// Shared by the binding units: array types, shape checks, the Python monitor. The bindings
// convert arrays, check shapes (cheap checks with the GIL held, so that a misuse of the private
// module raises ValueError instead of reading out of bounds), release the GIL around every kernel
// and map C++ exceptions to Python ones. Value checks (finite, positive, ...) are
// python/fastanchor's.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "fastanchor/common.hpp"

namespace fastanchor_py __attribute__((visibility("hidden"))) {

    namespace py = pybind11;
    namespace fa = fastanchor;

    using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;
    using Array32 = py::array_t<float, py::array::c_style>;
    using IndexArray = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

    // Raises ValueError unless `a` has shape (rows, cols) (rows < 0: any number of rows).
    inline void check_rows(const py::array& a, const char* name, py::ssize_t cols, py::ssize_t rows = -1) {
        if (a.ndim() != 2 || a.shape(1) != cols || (rows >= 0 && a.shape(0) != rows)) {
            const std::string n = rows >= 0 ? std::to_string(rows) : std::string("n");
            throw py::value_error(std::string(name) + " must have shape (" + n + ", " + std::to_string(cols) + ")");
        }
    }

    // `a` itself when its buffer is aligned for its dtype, else an aligned C-contiguous copy. numpy
    // allows misaligned buffers (a view at an odd byte offset, an array unpickled in place from a
    // network frame); the kernels load their values as floats and doubles.
    inline py::array aligned(const py::array& a) {
        constexpr int kAlignedFlag = 0x0100;  // NPY_ARRAY_ALIGNED
        if (a.flags() & kAlignedFlag) return a;
        return py::module_::import("numpy").attr("require")(a, py::none(), "CA");
    }

    // Raises ValueError unless `a` has at least `least` rows.
    inline void check_least(const py::array& a, const char* name, py::ssize_t least) {
        if (a.shape(0) < least)
            throw py::value_error(std::string(name) + " must have at least " + std::to_string(least) + " row(s)");
    }

    // Optional per-box weights: null for None, else n values (shape (n,)); `holder` keeps the array.
    inline const double* weights_of(const py::object& w, py::ssize_t n, Array& holder) {
        if (w.is_none()) return nullptr;
        holder = w.cast<Array>();
        if (holder.ndim() != 1 || holder.shape(0) != n)
            throw py::value_error("weights must have shape (" + std::to_string(n) + ",)");
        return holder.data();
    }

    // The index of `s` among `names`, or ValueError naming the argument and the choices.
    inline int choice(const std::string& s, const char* name, std::initializer_list<const char*> names) {
        int i = 0;
        std::string all;
        for (const char* n : names) {
            if (s == n) return i;
            all += (i ? ", '" : "'") + std::string(n) + "'";
            ++i;
        }
        throw py::value_error(std::string(name) + " must be one of " + all + ", got '" + s + "'");
    }

    // A new n x m matrix of float32 (out_float32) or float64, filled by fill(pointer) with the GIL
    // released.
    template <class Fill>
    py::array new_matrix(py::ssize_t n, py::ssize_t m, bool out_float32, Fill&& fill) {
        auto run = [&](auto out) {
            auto* ptr = out.mutable_data();
            {
                py::gil_scoped_release release;
                fill(ptr);
            }
            return py::array(std::move(out));
        };
        return out_float32 ? run(py::array_t<float>({n, m})) : run(py::array_t<double>({n, m}));
    }

    // Runs Python's signal handlers (Ctrl-C raises KeyboardInterrupt: thrown as error_already_set).
    // Called with the GIL released, from the thread that called into the module.
    inline void check_signals() {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
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
        void poll() override { check_signals(); }

    private:
        py::object callback_;
    };

    void register_kmeans(py::module_ & m);
    void register_fitness(py::module_ & m);
    void register_boxes(py::module_ & m);
    void register_chunks(py::module_ & m);
    void register_chunk_scores(py::module_ & m);

}  // namespace fastanchor_py
