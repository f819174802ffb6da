// oneDNN kernels for MindSpore ops.Custom (func_type="aot", CPU): convolutions on the faster of two
// memory layouts (this file), max pooling (onednn_pooling.h), and the evaluation passes that need no
// oneDNN primitive, batch norm and a residual addition with its ReLU (elementwise_kernels.h); what they
// share (engine, thread pool, working memory, reorders) is in onednn_memory.h.
//
// MindSpore's stock CPU convolutions hand oneDNN plain NCHW/OIHW memory descriptors, which rules out
// oneDNN's fastest (blocked-layout) kernels, and on AVX-512 sends some 3x3 convolutions to its reference
// kernel. These kernels can also let oneDNN choose its own layouts (format_tag::any), reorder the plain
// tensors MindSpore owns into them, and reorder the result back. The first call of each (direction,
// shape) times both layouts and keeps the faster (onednn_layout_choices.h). Primitives and reorders are
// created once per shape and cached. They link against the oneDNN library inside the MindSpore wheel
// (built with DNNL_CPU_RUNTIME=THREADPOOL) and run its parallel loops on MindSpore's own thread pool
// (onednn_threadpool.h). Built by src/kernels/build.py; used by src/kernels/onednn_conv.py.
//
// Entry points (inputs first, then the output, as MindSpore passes them):
//   dropcov_conv2d_forward        (x NCHW, w OIHW, cfg int64[7]) -> y NCHW
//   dropcov_conv2d_backward_data  (dy, w, x, cfg)                -> dx (shape of x)
//   dropcov_conv2d_backward_filter(dy, x, w, cfg)                -> dw (shape of w)
//   dropcov_conv2d_batch_norm_inference(x, w, cfg int64[8], gamma, beta, mean, var, eps float32[1]) -> y
//                                 the convolution with the evaluation-mode batch norm after it (and, when
//                                 cfg[7] is 1, a ReLU) applied to each output as oneDNN writes it (post-ops)
//   dropcov_max_pool2d_forward    (x, cfg)                       -> y, workspace (uint8, shape of y)
//   dropcov_max_pool2d_backward   (dy, workspace, x, cfg)        -> dx (shape of x)
//   dropcov_batch_norm_inference  (x, gamma, beta, mean, var, eps float32[1]) -> y (evaluation mode)
//   dropcov_add_relu              (x, identity)                  -> max(x + identity, 0) (same shapes)
// Convolution cfg = [stride_h, stride_w, dilation_h, dilation_w, same, pad_top, pad_left]; with same=1
// the padding is MindSpore's 'same' (extra row/column at the bottom/right), else the given top/left
// padding and whatever bottom/right padding the output size implies. Pooling cfg = [kernel_h,
// kernel_w, stride_h, stride_w, same, pad_top, pad_left], the same rules. Max pooling runs on MindSpore's
// plain NCHW layout where oneDNN has a JIT kernel for it, else on a blocked one (PoolLayout); its
// workspace holds each output's argmax within its window, which the backward pass needs.

#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_threadpool.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "elementwise_kernels.h"
#include "onednn_layout_choices.h"
#include "onednn_memory.h"
#include "onednn_pooling.h"
#include "onednn_threadpool.h"

namespace {

using namespace dropcov;  // NOLINT: the kernels' own namespace, one translation unit

struct ConvGeometry {
  memory::dims src, wei, dst, strides, dilates, pad_l, pad_r;
};

ConvGeometry MakeGeometry(const int64_t *x, const int64_t *w, const int64_t *y, const int64_t *cfg) {
  ConvGeometry g;
  g.src = {x[0], x[1], x[2], x[3]};
  g.wei = {w[0], w[1], w[2], w[3]};
  g.dst = {y[0], y[1], y[2], y[3]};
  g.strides = {cfg[0], cfg[1]};
  g.dilates = {cfg[2] - 1, cfg[3] - 1};
  for (int d = 0; d < 2; ++d) {
    const int64_t in = x[2 + d], out = y[2 + d], k = w[2 + d], s = cfg[d], dil = cfg[2 + d];
    const int64_t total = std::max<int64_t>((out - 1) * s + (k - 1) * dil + 1 - in, 0);
    const int64_t before = cfg[4] ? total / 2 : cfg[5 + d];
    g.pad_l.push_back(before);
    g.pad_r.push_back(total - before);
  }
  return g;
}

std::string Key(const char *direction, const ConvGeometry &g) {
  std::string key(direction);
  for (const auto *dims : {&g.src, &g.wei, &g.dst, &g.strides, &g.dilates, &g.pad_l, &g.pad_r})
    for (auto v : *dims) key += "," + std::to_string(v);
  return key;
}

struct Kernel {
  dnnl::primitive primitive;
  Operand a, b, out;  // two inputs and the output, in the entry point's order
  int arg_a = 0, arg_b = 0, arg_out = 0;
  memory::desc scratchpad;
  memory::desc per_channel;  // of the folded batch norm's scale and shift as post-ops; zero-sized without
  bool affine_pass = false;  // the folded batch norm as a pass over the output instead (plain layout)
  bool relu = false;         // of the folded batch norm
};

// Directions of GetKernel: the three passes of a convolution, and the forward with an evaluation-mode
// batch norm (and a ReLU) folded in.
enum Direction { kForward, kBackwardData, kBackwardFilter, kForwardBatchNorm, kForwardBatchNormReLU };

// Post-ops of a forward convolution that apply `Affine` per output channel (binary multiply, binary add
// of 1 x C x 1 x 1 tensors) and, with `relu`, a ReLU.
dnnl::primitive_attr BatchNormPostOps(const memory::desc &per_channel, bool relu) {
  dnnl::post_ops post_ops;
  post_ops.append_binary(dnnl::algorithm::binary_mul, per_channel);
  post_ops.append_binary(dnnl::algorithm::binary_add, per_channel);
  if (relu) post_ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_post_ops(post_ops);
  return attr;
}

// The convolution of `direction` on `layout`; nullptr when `reject_reference` and oneDNN has nothing
// better than its reference implementation for it.
std::unique_ptr<Kernel> BuildKernel(int direction, const ConvGeometry &g, Layout layout, bool reject_reference) {
  auto k = std::make_unique<Kernel>();
  const auto &eng = GetRuntime().engine;
  const memory::desc src = Plain(g.src, tag::nchw), wei = Plain(g.wei, tag::oihw), dst = Plain(g.dst, tag::nchw);
  const bool blocked = layout == Layout::kBlocked;
  const memory::desc src_any = blocked ? Any(g.src) : src, wei_any = blocked ? Any(g.wei) : wei,
                     dst_any = blocked ? Any(g.dst) : dst;
  const dnnl::convolution_forward::primitive_desc fwd(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src_any, wei_any, dst_any,
      g.strides, g.dilates, g.pad_l, g.pad_r, UserScratchpad());
  std::string implementation;
  if (direction == kForward || direction == kForwardBatchNorm || direction == kForwardBatchNormReLU) {
    dnnl::convolution_forward::primitive_desc pd = fwd;
    if (direction != kForward) {
      // Blocked: the batch norm and ReLU as post-ops, on the layouts oneDNN picks for the convolution alone
      // (left free, the post-ops send it to channels-last kernels whose reorders from and to NCHW cost more:
      // ResNet-18 at AVX2, 26 ms of reorders per forward against 14). Plain: oneDNN's plain kernels apply
      // post-ops element by element after a GEMM (at AVX2 ~20x the time of the JIT ones), so the kernel of
      // the convolution alone, then one pass over its output.
      k->relu = direction == kForwardBatchNormReLU;
      k->affine_pass = !blocked;
      if (blocked) {
        k->per_channel = Plain({1, g.dst[1], 1, 1}, tag::nchw);
        auto inference = [&](const memory::desc &s, const memory::desc &w, const memory::desc &d) {
          return dnnl::convolution_forward::primitive_desc(
              eng, dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, s, w, d, g.strides,
              g.dilates, g.pad_l, g.pad_r, BatchNormPostOps(k->per_channel, k->relu));
        };
        try {
          pd = inference(fwd.src_desc(), fwd.weights_desc(), fwd.dst_desc());
        } catch (const dnnl::error &) {  // no kernel with post-ops on those layouts: let oneDNN choose
          pd = inference(src_any, wei_any, dst_any);
        }
      }
    }
    implementation = pd.impl_info_str();
    k->primitive = dnnl::convolution_forward(pd);
    k->a.Init(src, pd.src_desc(), false);
    k->b.Init(wei, pd.weights_desc(), false);
    k->out.Init(dst, pd.dst_desc(), true);
    k->arg_a = DNNL_ARG_SRC; k->arg_b = DNNL_ARG_WEIGHTS; k->arg_out = DNNL_ARG_DST;
    k->scratchpad = pd.scratchpad_desc();
  } else if (direction == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        eng, dnnl::algorithm::convolution_direct, src_any, wei_any, dst_any, g.strides, g.dilates, g.pad_l,
        g.pad_r, fwd, UserScratchpad());
    implementation = pd.impl_info_str();
    k->primitive = dnnl::convolution_backward_data(pd);
    k->a.Init(dst, pd.diff_dst_desc(), false);
    k->b.Init(wei, pd.weights_desc(), false);
    k->out.Init(src, pd.diff_src_desc(), true);
    k->arg_a = DNNL_ARG_DIFF_DST; k->arg_b = DNNL_ARG_WEIGHTS; k->arg_out = DNNL_ARG_DIFF_SRC;
    k->scratchpad = pd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        eng, dnnl::algorithm::convolution_direct, src_any, wei_any, dst_any, g.strides, g.dilates, g.pad_l,
        g.pad_r, fwd, UserScratchpad());
    implementation = pd.impl_info_str();
    k->primitive = dnnl::convolution_backward_weights(pd);
    k->a.Init(dst, pd.diff_dst_desc(), false);
    k->b.Init(src, pd.src_desc(), false);
    k->out.Init(wei, pd.diff_weights_desc(), true);
    k->arg_a = DNNL_ARG_DIFF_DST; k->arg_b = DNNL_ARG_SRC; k->arg_out = DNNL_ARG_DIFF_WEIGHTS;
    k->scratchpad = pd.scratchpad_desc();
  }
  if (reject_reference && implementation.find("ref") != std::string::npos) return nullptr;
  return k;
}

// Runs `k` on MindSpore's buffers: inputs reordered in, the primitive, the output reordered back;
// `affine` feeds the post-ops of a folded batch norm.
void Execute(Kernel &k, void *a, void *b, void *out, const Affine &affine) {
  const auto &eng = GetRuntime().engine;
  const std::vector<char *> working = ThreadArena().Carve(
      {k.a.WorkingBytes(), k.b.WorkingBytes(), k.out.WorkingBytes(), k.scratchpad.get_size()});
  dnnl::stream &s = ThreadStream();
  memory written = k.out.Output(out, working[2]);
  std::unordered_map<int, memory> args{{k.arg_a, k.a.Input(a, working[0], s)},
                                       {k.arg_b, k.b.Input(b, working[1], s)},
                                       {k.arg_out, written},
                                       {DNNL_ARG_SCRATCHPAD, memory(k.scratchpad, eng, working[3])}};
  if (k.per_channel.get_size() != 0) {
    args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                 memory(k.per_channel, eng, const_cast<float *>(affine.scale)));
    args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1,
                 memory(k.per_channel, eng, const_cast<float *>(affine.shift)));
  }
  k.primitive.execute(s, args);
  k.out.Finish(written, out, s);
  s.wait();
  if (k.affine_pass) {
    const memory::dims shape = k.out.plain.get_dims();
    ApplyAffine(static_cast<float *>(out), static_cast<float *>(out), affine, k.relu, shape.data());
  }
}

// The faster of the blocked and plain kernels on this call's buffers (the output is overwritten, and
// computed again by the caller), by the CPU time of the call on all threads that work on it, which load
// from other processes does not inflate: one untimed run of each, then the lower of two in the order
// blocked, plain, plain, blocked.
std::unique_ptr<Kernel> MeasureFaster(const std::string &key, std::unique_ptr<Kernel> blocked,
                                      std::unique_ptr<Kernel> plain, void *a, void *b, void *out,
                                      const Affine &affine) {
  auto cpu_ms = [&](Kernel &k) { return dropcov::CpuMillisecondsOf([&] { Execute(k, a, b, out, affine); }); };
  Execute(*blocked, a, b, out, affine);
  Execute(*plain, a, b, out, affine);
  double blocked_ms = cpu_ms(*blocked);
  double plain_ms = cpu_ms(*plain);
  plain_ms = std::min(plain_ms, cpu_ms(*plain));
  blocked_ms = std::min(blocked_ms, cpu_ms(*blocked));
  const Layout faster = plain_ms < blocked_ms ? Layout::kPlain : Layout::kBlocked;
  GetRuntime().layouts.Record(key, faster, blocked_ms, plain_ms);
  return faster == Layout::kPlain ? std::move(plain) : std::move(blocked);
}

// The kernel of (direction, shape), built (and, the first time on this machine, measured) on first use.
// The layout policy is read at each first use and is part of the cache key, so that a forced layout
// (DROPCOV_ONEDNN_LAYOUT) takes effect for shapes already seen in the process.
Kernel &GetKernel(int direction, const ConvGeometry &g, void *a, void *b, void *out, const Affine &affine) {
  static std::mutex cache_mutex;
  static auto *cache = new std::unordered_map<std::string, std::unique_ptr<Kernel>>();
  static const char *names[] = {"fwd", "bwd_data", "bwd_filter", "fwd_bn", "fwd_bn_relu"};
  const LayoutPolicy policy = dropcov::PolicyFromEnvironment();
  const std::string key = Key(names[direction], g);
  const std::string cache_key = key + "," + std::to_string(static_cast<int>(policy));
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache->find(cache_key);
  if (it != cache->end()) return *it->second;
  std::unique_ptr<Kernel> kernel;
  Layout known = Layout::kBlocked;
  switch (policy) {
    case LayoutPolicy::kBlocked: kernel = BuildKernel(direction, g, Layout::kBlocked, false); break;
    case LayoutPolicy::kPlain: kernel = BuildKernel(direction, g, Layout::kPlain, false); break;
    case LayoutPolicy::kMeasure:
      if (GetRuntime().layouts.Find(key, &known)) {
        if (known == Layout::kPlain) kernel = BuildKernel(direction, g, Layout::kPlain, true);
        if (!kernel) kernel = BuildKernel(direction, g, Layout::kBlocked, false);
      } else {
        auto blocked = BuildKernel(direction, g, Layout::kBlocked, false);
        auto plain = BuildKernel(direction, g, Layout::kPlain, true);
        kernel = plain ? MeasureFaster(key, std::move(blocked), std::move(plain), a, b, out, affine)
                       : std::move(blocked);
      }
      break;
  }
  return *cache->emplace(cache_key, std::move(kernel)).first->second;
}

int Run(int direction, void *a, void *b, void *out, const ConvGeometry &g, const Affine &affine = {}) {
  try {
    Execute(GetKernel(direction, g, a, b, out, affine), a, b, out, affine);
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "dropcov oneDNN convolution failed: %s\n", e.what());
    return 1;
  }
}

// The forward convolution with an evaluation-mode batch norm folded in: `batch_norm` points at gamma, beta,
// mean and variance, one value per output channel.
int RunWithBatchNorm(int direction, void *x, void *w, void *y, const ConvGeometry &g, const float *const *batch_norm,
                     float eps) {
  try {
    std::vector<float> scale, shift;
    FoldBatchNorm(batch_norm[0], batch_norm[1], batch_norm[2], batch_norm[3], eps, g.dst[1], scale, shift);
    return Run(direction, x, w, y, g, Affine{scale.data(), shift.data()});
  } catch (const std::exception &e) {
    std::fprintf(stderr, "dropcov oneDNN convolution + batch norm failed: %s\n", e.what());
    return 1;
  }
}

bool Float32(const char *dtype) { return std::strcmp(dtype, "float32") == 0; }

}  // namespace

#define DROPCOV_EXPORT __attribute__((visibility("default")))

extern "C" {

DROPCOV_EXPORT int dropcov_conv2d_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  if (nparam != 4 || !Float32(dtypes[0]) || !Float32(dtypes[1])) return 1;
  const auto *cfg = static_cast<const int64_t *>(params[2]);
  return Run(kForward, params[0], params[1], params[3], MakeGeometry(shapes[0], shapes[1], shapes[3], cfg));
}

DROPCOV_EXPORT int dropcov_conv2d_backward_data(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *stream, void *extra) {
  if (nparam != 5 || !Float32(dtypes[0]) || !Float32(dtypes[1])) return 1;
  const auto *cfg = static_cast<const int64_t *>(params[3]);
  return Run(kBackwardData, params[0], params[1], params[4], MakeGeometry(shapes[2], shapes[1], shapes[0], cfg));
}

DROPCOV_EXPORT int dropcov_conv2d_backward_filter(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                   void *stream, void *extra) {
  if (nparam != 5 || !Float32(dtypes[0]) || !Float32(dtypes[1])) return 1;
  const auto *cfg = static_cast<const int64_t *>(params[3]);
  return Run(kBackwardFilter, params[0], params[1], params[4], MakeGeometry(shapes[1], shapes[2], shapes[0], cfg));
}

DROPCOV_EXPORT int dropcov_conv2d_batch_norm_inference(int nparam, void **params, int *ndims, int64_t **shapes,
                                                       const char **dtypes, void *stream, void *extra) {
  if (nparam != 9 || ndims[0] != 4 || ndims[1] != 4 || ElementCount(ndims[2], shapes[2]) != 8) return 1;
  for (int i : {0, 1, 3, 4, 5, 6, 7})
    if (!Float32(dtypes[i])) return 1;
  for (int i : {3, 4, 5, 6})  // gamma, beta, mean, variance: one value per output channel
    if (ElementCount(ndims[i], shapes[i]) != shapes[1][0]) return 1;
  if (ElementCount(ndims[7], shapes[7]) != 1) return 1;
  const auto *cfg = static_cast<const int64_t *>(params[2]);
  const auto *f = reinterpret_cast<float *const *>(params);
  return RunWithBatchNorm(cfg[7] ? kForwardBatchNormReLU : kForwardBatchNorm, params[0], params[1], params[8],
                          MakeGeometry(shapes[0], shapes[1], shapes[8], cfg), f + 3, f[7][0]);
}

DROPCOV_EXPORT int dropcov_max_pool2d_forward(int nparam, void **params, int *ndims, int64_t **shapes,
                                              const char **dtypes, void *stream, void *extra) {
  if (nparam != 4 || !Float32(dtypes[0])) return 1;
  const auto *cfg = static_cast<const int64_t *>(params[1]);
  return RunPool(false, params[0], params[3], params[2], MakePoolGeometry(shapes[0], shapes[2], cfg));
}

DROPCOV_EXPORT int dropcov_max_pool2d_backward(int nparam, void **params, int *ndims, int64_t **shapes,
                                               const char **dtypes, void *stream, void *extra) {
  if (nparam != 5 || !Float32(dtypes[0])) return 1;
  const auto *cfg = static_cast<const int64_t *>(params[3]);
  return RunPool(true, params[0], params[1], params[4], MakePoolGeometry(shapes[2], shapes[0], cfg));
}

DROPCOV_EXPORT int dropcov_batch_norm_inference(int nparam, void **params, int *ndims, int64_t **shapes,
                                                const char **dtypes, void *stream, void *extra) {
  if (nparam != 7 || ndims[0] != 4) return 1;
  for (int i = 0; i < 7; ++i)
    if (!Float32(dtypes[i])) return 1;
  const auto *eps = static_cast<const float *>(params[5]);
  return RunBatchNormInference(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                               static_cast<const float *>(params[2]), static_cast<const float *>(params[3]),
                               static_cast<const float *>(params[4]), eps[0], static_cast<float *>(params[6]),
                               shapes[0]);
}

DROPCOV_EXPORT int dropcov_add_relu(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                    void *stream, void *extra) {
  if (nparam != 3 || !Float32(dtypes[0]) || !Float32(dtypes[1]) || ndims[0] != ndims[1]) return 1;
  if (!std::equal(shapes[0], shapes[0] + ndims[0], shapes[1])) return 1;  // no broadcasting
  const int64_t count = ElementCount(ndims[0], shapes[0]);
  return RunAddReLU(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                    static_cast<float *>(params[2]), count);
}

}  // extern "C"
