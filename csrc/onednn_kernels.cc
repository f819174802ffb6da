// oneDNN kernels for MindSpore ops.Custom (func_type="aot", CPU): convolutions on the faster of two
// memory layouts, max pooling, and evaluation-mode batch norm.
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

#include "onednn_layout_choices.h"
#include "onednn_threadpool.h"

namespace {

using dnnl::memory;
using dropcov::Layout;
using dropcov::LayoutPolicy;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::threadpool_interop::threadpool_iface *pool = dropcov::MakePool();
  dropcov::LayoutChoices layouts{pool->get_num_threads()};
};
Runtime &GetRuntime() {
  static Runtime *runtime = new Runtime();  // never destroyed: kernels may run during exit
  return *runtime;
}
dnnl::stream &ThreadStream() {
  thread_local dnnl::stream stream = dnnl::threadpool_interop::make_stream(GetRuntime().engine, GetRuntime().pool);
  return stream;
}

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

memory::desc Any(const memory::dims &d) { return memory::desc(d, dt::f32, tag::any); }
memory::desc Plain(const memory::dims &d, tag t) { return memory::desc(d, dt::f32, t); }

// Working memory of kernel calls: the blocked copies of the operands and the scratchpad. One buffer
// per thread, as large as the largest call on it needs; a buffer per cached kernel would hold a blocked
// copy of every activation shape of the network (for ResNet-50 at batch 32, about 4 GB more than
// MindSpore's own kernels).
class Arena {
 public:
  Arena() = default;
  Arena(const Arena &) = delete;
  Arena &operator=(const Arena &) = delete;
  ~Arena() { std::free(data_); }
  // Room for `sizes` (bytes) one after the other, each 64-byte aligned; returns their addresses.
  std::vector<char *> Carve(const std::vector<size_t> &sizes) {
    size_t total = 0;
    for (size_t size : sizes) total += Align(size);
    if (total > capacity_) {
      std::free(data_);
      data_ = static_cast<char *>(std::aligned_alloc(kAlignment, Align(total)));
      if (data_ == nullptr) {
        capacity_ = 0;
        throw std::runtime_error("cannot allocate " + std::to_string(total) + " bytes of working memory");
      }
      capacity_ = Align(total);
    }
    std::vector<char *> addresses;
    size_t offset = 0;
    for (size_t size : sizes) {
      addresses.push_back(size ? data_ + offset : nullptr);
      offset += Align(size);
    }
    return addresses;
  }

 private:
  static constexpr size_t kAlignment = 64;
  static size_t Align(size_t size) { return (size + kAlignment - 1) / kAlignment * kAlignment; }
  char *data_ = nullptr;
  size_t capacity_ = 0;
};

// Each MindSpore thread that runs kernels has its own arena: calls on one thread run one after the
// other, and oneDNN primitives may execute on several threads at once with different memory.
Arena &ThreadArena() {
  thread_local Arena arena;
  return arena;
}

// One tensor argument: MindSpore's plain buffer, and, where oneDNN chose another layout, the reorder
// between it and a blocked copy in the arena.
struct Operand {
  memory::desc plain, chosen;
  dnnl::reorder to_internal, to_plain;
  bool reordered = false;
  void Init(const memory::desc &plain_desc, const memory::desc &chosen_desc, bool is_output) {
    plain = plain_desc;
    chosen = chosen_desc;
    reordered = plain != chosen;
    if (!reordered) return;
    const auto &eng = GetRuntime().engine;
    if (is_output)
      to_plain = dnnl::reorder(dnnl::reorder::primitive_desc(eng, chosen, eng, plain));
    else
      to_internal = dnnl::reorder(dnnl::reorder::primitive_desc(eng, plain, eng, chosen));
  }
  // Bytes of arena this operand needs (0 when oneDNN works on MindSpore's buffer directly).
  size_t WorkingBytes() const { return reordered ? chosen.get_size() : 0; }
  // The memory the primitive reads; an input is reordered into `working` first.
  memory Input(void *data, char *working, dnnl::stream &s) {
    memory user(plain, GetRuntime().engine, data);
    if (!reordered) return user;
    memory internal(chosen, GetRuntime().engine, working);
    to_internal.execute(s, user, internal);
    return internal;
  }
  // The memory the primitive writes; Finish() reorders it into MindSpore's buffer.
  memory Output(void *data, char *working) {
    return reordered ? memory(chosen, GetRuntime().engine, working) : memory(plain, GetRuntime().engine, data);
  }
  void Finish(memory &written, void *data, dnnl::stream &s) {
    if (!reordered) return;
    memory user(plain, GetRuntime().engine, data);
    to_plain.execute(s, written, user);
  }
};

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

// The per-output-channel affine map of an evaluation-mode batch norm, y = x * scale[c] + shift[c].
struct Affine {
  const float *scale = nullptr, *shift = nullptr;
};

// scale = gamma / sqrt(var + eps), shift = beta - mean * scale: the batch norm's map, into `scale`/`shift`.
void FoldBatchNorm(const float *gamma, const float *beta, const float *mean, const float *variance, float eps,
                   int64_t channels, std::vector<float> &scale, std::vector<float> &shift) {
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
void ScaleShiftPlanes(const float *x, float *y, const float *scale, const float *shift, bool relu, int64_t first,
                      int64_t last, int64_t channels, int64_t plane) {
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
void ApplyAffine(const float *x, float *y, const Affine &affine, bool relu, const int64_t *shape) {
  const int64_t channels = shape[1], plane = shape[2] * shape[3], planes = shape[0] * channels;
  auto *pool = GetRuntime().pool;
  const int tasks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(pool->get_num_threads(), planes)));
  pool->parallel_for(tasks, [&](int task, int n) {
    ScaleShiftPlanes(x, y, affine.scale, affine.shift, relu, planes * task / n, planes * (task + 1) / n, channels,
                     plane);
  });
}

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

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
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

bool Float32(const char *dtype) { return std::strcmp(dtype, "float32") == 0; }

struct PoolGeometry {
  memory::dims src, dst, kernel, strides, dilates{0, 0}, pad_l, pad_r;
};

PoolGeometry MakePoolGeometry(const int64_t *x, const int64_t *y, const int64_t *cfg) {
  PoolGeometry g;
  g.src = {x[0], x[1], x[2], x[3]};
  g.dst = {y[0], y[1], y[2], y[3]};
  g.kernel = {cfg[0], cfg[1]};
  g.strides = {cfg[2], cfg[3]};
  for (int d = 0; d < 2; ++d) {
    const int64_t total = std::max<int64_t>((y[2 + d] - 1) * cfg[2 + d] + cfg[d] - x[2 + d], 0);
    const int64_t before = cfg[4] ? total / 2 : cfg[5 + d];
    g.pad_l.push_back(before);
    g.pad_r.push_back(total - before);
  }
  return g;
}

dnnl::pooling_forward::primitive_desc PoolForwardDesc(const PoolGeometry &g, tag layout) {
  return dnnl::pooling_forward::primitive_desc(
      GetRuntime().engine, dnnl::prop_kind::forward_training, dnnl::algorithm::pooling_max,
      Plain(g.src, layout), Plain(g.dst, layout), g.strides, g.kernel, g.dilates, g.pad_l, g.pad_r,
      UserScratchpad());
}

// The layout max pooling runs on: MindSpore's plain NCHW where oneDNN has a JIT kernel for it (AVX-512),
// else a channel-blocked one that has (at AVX2 oneDNN runs plain max pooling on its generic simple_nchw
// kernel, ~20x slower: 36 ms against 1.7 ms for ResNet-18's stem pool at batch 8), with the tensors
// reordered in and out. The workspace then holds the argmax in the blocked layout, which only the backward
// kernel reads; it keeps one byte per output, so a blocking that would pad the channels is not used.
tag PoolLayout(const PoolGeometry &g) {
  const size_t outputs = static_cast<size_t>(g.dst[0] * g.dst[1] * g.dst[2] * g.dst[3]);
  auto jit_with_plain_workspace = [&](tag layout) {
    try {
      const auto pd = PoolForwardDesc(g, layout);
      return std::string(pd.impl_info_str()).rfind("jit", 0) == 0 && pd.workspace_desc().get_size() == outputs;
    } catch (const dnnl::error &) {
      return false;
    }
  };
  for (tag layout : {tag::nchw, tag::nChw16c, tag::nChw8c})
    if (jit_with_plain_workspace(layout)) return layout;
  return tag::nchw;
}

struct PoolKernel {
  std::mutex mutex;
  dnnl::primitive primitive;
  Operand in, out;  // forward: x in, y out; backward: dy in, dx out
  memory::desc workspace;
  memory scratchpad;
};

PoolKernel &GetPoolKernel(bool backward, const PoolGeometry &g) {
  static std::mutex cache_mutex;
  static auto *cache = new std::unordered_map<std::string, std::unique_ptr<PoolKernel>>();
  std::string key(backward ? "pool_bwd" : "pool_fwd");
  for (const auto *dims : {&g.src, &g.dst, &g.kernel, &g.strides, &g.pad_l, &g.pad_r})
    for (auto v : *dims) key += "," + std::to_string(v);
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache->find(key);
  if (it != cache->end()) return *it->second;
  auto k = std::make_unique<PoolKernel>();
  const tag layout = PoolLayout(g);
  auto fwd = PoolForwardDesc(g, layout);
  memory::desc pad_desc;
  const memory::desc src = Plain(g.src, tag::nchw), dst = Plain(g.dst, tag::nchw);
  if (backward) {
    dnnl::pooling_backward::primitive_desc pd(
        GetRuntime().engine, dnnl::algorithm::pooling_max, Plain(g.src, layout), Plain(g.dst, layout),
        g.strides, g.kernel, g.dilates, g.pad_l, g.pad_r, fwd, UserScratchpad());
    k->primitive = dnnl::pooling_backward(pd);
    k->in.Init(dst, pd.diff_dst_desc(), false);
    k->out.Init(src, pd.diff_src_desc(), true);
    pad_desc = pd.scratchpad_desc();
  } else {
    k->primitive = dnnl::pooling_forward(fwd);
    k->in.Init(src, fwd.src_desc(), false);
    k->out.Init(dst, fwd.dst_desc(), true);
    pad_desc = fwd.scratchpad_desc();
  }
  k->workspace = fwd.workspace_desc();
  // The workspace travels between the two ops as a uint8 tensor shaped like y.
  const size_t expected = static_cast<size_t>(g.dst[0] * g.dst[1] * g.dst[2] * g.dst[3]);
  if (k->workspace.get_size() != expected)
    throw std::runtime_error("max-pool workspace is " + std::to_string(k->workspace.get_size()) +
                             " bytes, expected one byte per output (" + std::to_string(expected) + ")");
  k->scratchpad = memory(pad_desc, GetRuntime().engine);
  return *cache->emplace(key, std::move(k)).first->second;
}

int RunPool(bool backward, void *in, void *workspace, void *out, const PoolGeometry &g) {
  try {
    PoolKernel &k = GetPoolKernel(backward, g);
    std::lock_guard<std::mutex> lock(k.mutex);
    dnnl::stream &s = ThreadStream();
    const std::vector<char *> working = ThreadArena().Carve({k.in.WorkingBytes(), k.out.WorkingBytes()});
    memory ws(k.workspace, GetRuntime().engine, workspace);
    memory source = k.in.Input(in, working[0], s), written = k.out.Output(out, working[1]);
    if (backward) {
      k.primitive.execute(s, {{DNNL_ARG_DIFF_DST, source}, {DNNL_ARG_WORKSPACE, ws}, {DNNL_ARG_DIFF_SRC, written},
                              {DNNL_ARG_SCRATCHPAD, k.scratchpad}});
    } else {
      k.primitive.execute(s, {{DNNL_ARG_SRC, source}, {DNNL_ARG_DST, written}, {DNNL_ARG_WORKSPACE, ws},
                              {DNNL_ARG_SCRATCHPAD, k.scratchpad}});
    }
    k.out.Finish(written, out, s);
    s.wait();
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "dropcov oneDNN max pooling failed: %s\n", e.what());
    return 1;
  }
}

// Evaluation-mode batch norm on NCHW in one pass over x (ApplyAffine). MindSpore's CPU kernel runs oneDNN's
// batch norm on the plain layout (its generic "ncsp" implementation), several times slower.
int RunBatchNormInference(const float *x, const float *gamma, const float *beta, const float *mean,
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
void AddReLURange(const float *x, const float *identity, float *y, int64_t first, int64_t last) {
  for (int64_t i = first; i < last; ++i) y[i] = std::max(x[i] + identity[i], 0.f);
}

int RunAddReLU(const float *x, const float *identity, float *y, int64_t count) {
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

int64_t ElementCount(int ndim, const int64_t *shape) {
  int64_t count = 1;
  for (int d = 0; d < ndim; ++d) count *= shape[d];
  return count;
}

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
  if (nparam != 9 || ndims[0] != 4 || shapes[2][0] != 8) return 1;
  for (int i : {0, 1, 3, 4, 5, 6, 7})
    if (!Float32(dtypes[i])) return 1;
  const auto *cfg = static_cast<const int64_t *>(params[2]);
  const auto *f = reinterpret_cast<float *const *>(params);
  thread_local std::vector<float> scale, shift;
  FoldBatchNorm(f[3], f[4], f[5], f[6], f[7][0], shapes[1][0], scale, shift);
  return Run(cfg[7] ? kForwardBatchNormReLU : kForwardBatchNorm, params[0], params[1], params[8],
             MakeGeometry(shapes[0], shapes[1], shapes[8], cfg), Affine{scale.data(), shift.data()});
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
  if (nparam != 3 || !Float32(dtypes[0]) || !Float32(dtypes[1])) return 1;
  const int64_t count = ElementCount(ndims[0], shapes[0]);
  if (count != ElementCount(ndims[1], shapes[1])) return 1;
  return RunAddReLU(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                    static_cast<float *>(params[2]), count);
}

}  // extern "C"
