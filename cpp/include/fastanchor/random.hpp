// fastanchor: a fully specified pseudo-random generator (xoshiro256** seeded by SplitMix64) with
// hand-written uniform and normal draws, so a seed gives the same stream with every standard
// library (std::*_distribution differ between implementations).
#pragma once

#include <cmath>
#include <cstdint>

namespace fastanchor {

inline std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// A seed for stream `stream` derived from `seed`: independent restarts get independent streams.
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
    std::uint64_t s = seed ^ (0xD1B54A32D192ED03ULL * (stream + 1));
    return splitmix64(s);
}

class Rng {
public:
    explicit Rng(std::uint64_t seed) {
        std::uint64_t st = seed;
        for (auto& w : s_) w = splitmix64(st);
    }

    std::uint64_t next() {
        const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const std::uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }

    // Uniform in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

    // Uniform integer in [0, n), n > 0, without modulo bias (rejection on the top bits).
    std::uint64_t below(std::uint64_t n) {
        const std::uint64_t limit = (~std::uint64_t{0}) - ((~std::uint64_t{0}) % n);
        std::uint64_t x;
        do {
            x = next();
        } while (x >= limit);
        return x % n;
    }

    // Standard normal by Marsaglia's polar method; the second value of each pair is kept.
    double normal() {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        double u, v, s;
        do {
            u = 2.0 * uniform() - 1.0;
            v = 2.0 * uniform() - 1.0;
            s = u * u + v * v;
        } while (s >= 1.0 || s == 0.0);
        const double f = std::sqrt(-2.0 * std::log(s) / s);
        spare_ = v * f;
        has_spare_ = true;
        return u * f;
    }

private:
    static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    std::uint64_t s_[4];
    double spare_ = 0.0;
    bool has_spare_ = false;
};

}  // namespace fastanchor
