// The private module _core: wiring only. Each topic registers its functions from its own
// translation unit (register_*.cpp), so they compile in parallel.
#include "bindings.hpp"

#include <string>
#include <vector>

namespace fastanchor_py {
namespace {

// For tests: the process-wide SIMD level of the hand-written kernels ("auto", "avx2" or
// "portable"); returns the previous one. Operations read it when they start.
std::string set_simd_level(const std::string& level) {
    try {
        return fa::set_simd_level(level);
    } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
    }
}

#ifdef FASTANCHOR_SANITIZE_SELFCHECK
// Only in the sanitizer build (scripts/sanitize.sh): reads one element past the end of a heap
// array, in this instrumented module, so that the script can check AddressSanitizer reports it.
int sanitizer_selfcheck(int past) {
    std::vector<int> v(4, 1);
    const int* p = v.data();
    return p[3 + past];
}
#endif

}  // namespace
}  // namespace fastanchor_py

namespace fp = fastanchor_py;
namespace py = pybind11;

// Free-threaded Python (3.13t): every call keeps its state to itself (the inputs are private
// copies made by the Python layer, the outputs new arrays, the monitors per call; the core's one
// mutable global is the SIMD level, an atomic set by tests), so the module declares that it does
// not need the GIL (pybind11 >= 2.13).
#if PYBIND11_VERSION_HEX >= 0x020D0000
PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
#else
PYBIND11_MODULE(_core, m) {
#endif
    m.doc() = "fastanchor's compiled core (private: use the fastanchor package).";
    m.def("max_threads", &fastanchor::max_threads, "Threads OpenMP would use by default (honours OMP_NUM_THREADS).");
    m.def("has_openmp", &fastanchor::has_openmp, "Whether the core was compiled with OpenMP.");
    m.def(
        "_simd_level", [] { return std::string(fastanchor::simd_level_name(fastanchor::simd_level())); },
        "The SIMD level asked for: 'auto', 'avx2' or 'portable' (for tests).");
    m.def("_has_avx2", &fastanchor::cpu_has_avx2, "Whether this build and CPU run the AVX2 kernels.");
    m.def("_set_simd_level", &fp::set_simd_level, py::arg("level"),
          "Sets the SIMD level of the hand-written kernels ('auto', 'avx2' or 'portable') for the whole process; "
          "returns the previous one (for tests).");
#ifdef FASTANCHOR_SANITIZE_SELFCHECK
    m.def("_sanitizer_selfcheck", &fp::sanitizer_selfcheck, py::arg("past"));
#endif
    fp::register_kmeans(m);
    fp::register_fitness(m);
    fp::register_boxes(m);
    fp::register_chunks(m);
    fp::register_chunk_scores(m);
}
