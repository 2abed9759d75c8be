// fastanchor: the constants that must agree with each other, in one place, tied by
// static_asserts. docs/design.md ("Coupled constants") says why each pair must agree.
#pragma once

namespace fastanchor {

// ---- fixed-K kernels ----
// Kernels with the number of anchors K fixed at compile time (the anchor loop unrolled inside a
// SIMD loop over boxes: about 4x faster with GCC) exist for 1 <= K <= kMaxFixedK; larger k runs
// the generic loops (fixed_k.hpp holds the one dispatch table).
inline constexpr int kMaxFixedK = 16;

// The float labelling kernel (kmeans/label.hpp) adds kTieUnit + j for every anchor j within the
// tie margin of the best: sum / kTieUnit counts them, sum % kTieUnit names the one when it is
// alone. So an anchor index must fit in kTieIndexBits bits.
inline constexpr int kTieIndexBits = 4;
inline constexpr int kTieUnit = 1 << kTieIndexBits;
static_assert(kMaxFixedK <= kTieUnit, "an anchor index must fit in the tie sum's low bits");

// The AVX2 forms of the bounded pass's slack test (vpshufb) and of the median's range flags
// (two vpermd) look a cluster's value up in 16-entry tables held in registers.
inline constexpr int kAvx2TableSize = 16;
static_assert(kMaxFixedK <= kAvx2TableSize, "the AVX2 lookups hold one entry per fixed-K cluster");

// One-byte labels (k < kByteLabelNone): the label kByteLabelNone means "none yet", and tables
// indexed by a one-byte label (the bounded pass's thresholds) have kByteLabelSlots entries, so that
// any byte, even one changed behind the fit's back, indexes inside them.
inline constexpr int kByteLabelSlots = 256;
inline constexpr int kByteLabelNone = kByteLabelSlots - 1;
static_assert(kMaxFixedK < kByteLabelNone, "fixed-K fits use one-byte labels");

// ---- the float ranking (kmeans/label.hpp) ----
// Every float32 IoU is within kFloatIouError of the double IoU (16 u, u = 2^-24: the proof is in
// kmeans/label.hpp); kRankEps leaves a factor four for second-order terms. Boxes whose best two
// float IoUs lie within 2 kRankEps are decided exactly.
inline constexpr double kFloatIouError = 1e-6;
inline constexpr double kRankEps = 4e-6;
static_assert(kRankEps >= 4 * kFloatIouError, "the tie margin must cover twice the float IoU error, with room");
// The AVX2 no-gap kernel's relative tie margin (vrcpps): > 2 eps + u + 2 eps^2 with eps = 2^-11.
inline constexpr float kRcpTie = 1.1e-3f;
static_assert(kRcpTie > 2 * 0x1p-11 + 0x1p-24 + 2 * 0x1p-22, "the vrcpps margin must cover its error");

// ---- the bounded passes (kmeans/bounds.hpp) ----
// Slacks are stored in units of 2^-kSlackBits of 1 - IoU, in 16 bits.
inline constexpr int kSlackBits = 15;
static_assert(kSlackBits < 16, "a slack of 0.5 (the largest drift) and more must fit in 16 bits");
// How far below the float gap of the best two IoUs the true gap may lie: the two float IoUs'
// errors (2 kRankEps covers them) and the rounding of their difference and of the sum with the
// base (kFloatIouError). Derived from kRankEps: a change to one changes the other.
inline constexpr float kSlackEps = static_cast<float>(2.0 * kRankEps + kFloatIouError);

}  // namespace fastanchor
