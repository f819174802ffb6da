// The passes over activations that need no oneDNN primitive: an evaluation-mode batch norm (alone, or after
// a convolution on the plain layout) and a residual block's addition with its ReLU. Each is one
// multithreaded pass, compiled for AVX-512, AVX2 and a baseline and picked at load time for the CPU
// (memory-bound: the ONEDNN_MAX_CPU_ISA cap does not matter here). Included by onednn_kernels.cc only.

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <vector>

#include "onednn_memory.h"

namespace dropcov {

// The per-output-channel affine map of an evaluation-mode batch norm, y = x * scale[c] + shift[c].
struct Affine {
  const float *scale = nullptr, *shift = nullptr;
};

// scale = gamma / sqrt(var + eps), shift = beta - mean * scale: the batch norm's map, into `scale`/`shift`.
inline void FoldBatchNorm(const float *gamma, const float *beta, const float *mean, const float *variance,
                          float eps, int64_t channels, std::vector<float> &scale, std::vector<float> &shift) {
  scale.resize(channels);
  shift.resize(channels);
  for (int64_t c = 0; c < channels; ++c) {
    scale[c] = gamma[c] / std::sqrt(variance[c] + eps);
    shift[c] = beta[c] - mean[c] * scale[c];
  }
}

// y = x * scale[c] + shift[c] (then max(y, 0) with `relu`) on NCHW planes [first, last); x and y may be
// one buffer. Compiled for AVX-512, AVX2 and a baseline, picked at load time for the CPU (memory-bound:
// the ONEDNN_MAX_CPU_ISA cap does not matter here).
__attribute__((target_clones("avx512f", "avx2", "default")))
static void ScaleShiftPlanes(const float *x, float *y, const float *scale, const float *shift, bool relu,
                             int64_t first, int64_t last, int64_t channels, int64_t plane) {
  for (int64_t p = first; p < last; ++p) {
    const float a = scale[p % channels], b = shift[p % channels];
    const float *in = x + p * plane;
    float *out = y + p * plane;
    if (relu) {
      for (int64_t i = 0; i < plane; ++i) out[i] = std::max(in[i] * a + b, 0.f);
    } else {
      for (int64_t i = 0; i < plane; ++i) out[i] = in[i] * a + b;
    }
  }
}

// `affine` (and a ReLU) over the NCHW tensor x of `shape` into y, in one pass on the kernels' thread pool.
inline void ApplyAffine(const float *x, float *y, const Affine &affine, bool relu, const int64_t *shape) {
  const int64_t channels = shape[1], plane = shape[2] * shape[3], planes = shape[0] * channels;
  auto *pool = GetRuntime().pool;
  const int tasks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(pool->get_num_threads(), planes)));
  pool->parallel_for(tasks, [&](int task, int n) {
    ScaleShiftPlanes(x, y, affine.scale, affine.shift, relu, planes * task / n, planes * (task + 1) / n, channels,
                     plane);
  });
}

// Evaluation-mode batch norm on NCHW in one pass over x (ApplyAffine). MindSpore's CPU kernel runs oneDNN's
// batch norm on the plain layout (its generic "ncsp" implementation), several times slower.
inline int RunBatchNormInference(const float *x, const float *gamma, const float *beta, const float *mean,
                                 const float *variance, float eps, float *y, const int64_t *shape) {
  try {
    std::vector<float> scale, shift;
    FoldBatchNorm(gamma, beta, mean, variance, eps, shape[1], scale, shift);
    ApplyAffine(x, y, Affine{scale.data(), shift.data()}, false, shape);
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "dropcov batch norm failed: %s\n", e.what());
    return 1;
  }
}

// y = max(x + identity, 0) over elements [first, last): a residual block's addition and ReLU in one pass
// (MindSpore runs them as two kernels, reading and writing the activation twice).
__attribute__((target_clones("avx512f", "avx2", "default")))
static void AddReLURange(const float *x, const float *identity, float *y, int64_t first, int64_t last) {
  for (int64_t i = first; i < last; ++i) y[i] = std::max(x[i] + identity[i], 0.f);
}

inline int RunAddReLU(const float *x, const float *identity, float *y, int64_t count) {
  try {
    constexpr int64_t kLine = 16;  // floats per 64-byte line: tasks start on line boundaries
    auto *pool = GetRuntime().pool;
    const int64_t lines = (count + kLine - 1) / kLine;
    const int tasks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(pool->get_num_threads(), lines)));
    pool->parallel_for(tasks, [&](int task, int n) {
      AddReLURange(x, identity, y, std::min(count, lines * task / n * kLine),
                   std::min(count, lines * (task + 1) / n * kLine));
    });
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "dropcov add + ReLU failed: %s\n", e.what());
    return 1;
  }
}

inline int64_t ElementCount(int ndim, const int64_t *shape) {
  int64_t count = 1;
  for (int d = 0; d < ndim; ++d) count *= shape[d];
  return count;
}

}  // namespace dropcov
