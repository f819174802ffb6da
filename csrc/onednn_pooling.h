// Max pooling on oneDNN (dropcov_max_pool2d_forward/backward): the forward also returns oneDNN's
// workspace (each output's argmax within its window, one byte per output), which the backward reads.
// Included by onednn_kernels.cc only.

#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "onednn_memory.h"

namespace dropcov {

struct PoolGeometry {
  memory::dims src, dst, kernel, strides, dilates{0, 0}, pad_l, pad_r;
};

inline PoolGeometry MakePoolGeometry(const int64_t *x, const int64_t *y, const int64_t *cfg) {
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

inline dnnl::pooling_forward::primitive_desc PoolForwardDesc(const PoolGeometry &g, tag layout) {
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
inline tag PoolLayout(const PoolGeometry &g) {
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

inline PoolKernel &GetPoolKernel(bool backward, const PoolGeometry &g) {
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

inline int RunPool(bool backward, void *in, void *workspace, void *out, const PoolGeometry &g) {
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

}  // namespace dropcov
