// fastanchor: the one SIMD layer. CPU detection, the process-wide SIMD level and the one
// dispatch point of the hand-written kernels.
//
// Every hand-written AVX2 kernel lives in a `*_avx2.hpp` beside its portable twin and computes the
// same result bit for bit (or, where it ranks differently, flags what it cannot prove, so that the
// exact rule decides: docs/design.md). Callers hold an `Isa` read once per operation
// (simd_isa()) and call the family's dispatching function; only this header and the `*_avx2.hpp`
// files test FASTANCHOR_HAVE_AVX2. The auto-vectorized loops use FASTANCHOR_CLONES (common.hpp)
// instead. Adding a kernel: docs/design.md, "Adding SIMD".
#pragma once

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(FASTANCHOR_NO_AVX2)
#define FASTANCHOR_HAVE_AVX2 1
#include <immintrin.h>
#else
#define FASTANCHOR_HAVE_AVX2 0
#endif

namespace fastanchor {

// The instruction set a hand-written kernel family runs with.
enum class Isa : unsigned char { Portable, Avx2 };

// AVX2, and POPCNT beside it (the matching kernel counts bits), in this build and on this CPU.
inline bool cpu_has_avx2() {
#if FASTANCHOR_HAVE_AVX2
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    return has;
#else
    return false;
#endif
}

// The process-wide SIMD level asked for: "auto" (the best the CPU has), "avx2" or "portable".
// Tests set it (the private _core._set_simd_level) to run both forms of every kernel; operations
// read it once when they start (simd_isa()).
enum class SimdLevel : int { Auto = 0, Avx2 = 1, Portable = 2 };

namespace detail {
inline std::atomic<int>& simd_level_store() {
    static std::atomic<int> level{static_cast<int>(SimdLevel::Auto)};
    return level;
}
}  // namespace detail

inline const char* simd_level_name(SimdLevel level) {
    switch (level) {
        case SimdLevel::Avx2:
            return "avx2";
        case SimdLevel::Portable:
            return "portable";
        default:
            return "auto";
    }
}

inline SimdLevel simd_level() { return static_cast<SimdLevel>(detail::simd_level_store().load()); }

// Sets the level by name; returns the previous one's name. "avx2" where this build or CPU has no
// AVX2, or an unknown name, throws std::invalid_argument.
inline std::string set_simd_level(const std::string& name) {
    SimdLevel level;
    if (name == "auto") level = SimdLevel::Auto;
    else if (name == "portable") level = SimdLevel::Portable;
    else if (name == "avx2") level = SimdLevel::Avx2;
    else throw std::invalid_argument("simd level must be 'auto', 'avx2' or 'portable', got '" + name + "'");
    if (level == SimdLevel::Avx2 && !cpu_has_avx2())
        throw std::invalid_argument("simd level 'avx2': this build or CPU has no AVX2");
    const int prev = detail::simd_level_store().exchange(static_cast<int>(level));
    return simd_level_name(static_cast<SimdLevel>(prev));
}

// The instruction set the hand-written kernels run with now.
inline Isa simd_isa() { return simd_level() != SimdLevel::Portable && cpu_has_avx2() ? Isa::Avx2 : Isa::Portable; }

}  // namespace fastanchor

// The one dispatch point: FASTANCHOR_SIMD(isa, avx2_call, portable_call) evaluates avx2_call when
// isa is Isa::Avx2 (only compiled where the build has the AVX2 kernels), else portable_call. Wrap a
// call holding template arguments in parentheses.
#if FASTANCHOR_HAVE_AVX2
#define FASTANCHOR_SIMD(isa, avx2_call, portable_call) \
    ((isa) == ::fastanchor::Isa::Avx2 ? (avx2_call) : (portable_call))
#else
#define FASTANCHOR_SIMD(isa, avx2_call, portable_call) ((void)(isa), (portable_call))
#endif
