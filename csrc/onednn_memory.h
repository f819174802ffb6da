// What every kernel of onednn_kernels.cc shares: the oneDNN engine and thread pool, a stream per thread,
// the per-thread working memory, and the operands that reorder MindSpore's plain tensors into the layouts
// oneDNN chose and back. Included by onednn_kernels.cc only (one translation unit).

#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_threadpool.hpp>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "onednn_layout_choices.h"
#include "onednn_threadpool.h"

namespace dropcov {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::threadpool_interop::threadpool_iface *pool = dropcov::MakePool();
  dropcov::LayoutChoices layouts{pool->get_num_threads()};
};
inline Runtime &GetRuntime() {
  static Runtime *runtime = new Runtime();  // never destroyed: kernels may run during exit
  return *runtime;
}
inline dnnl::stream &ThreadStream() {
  thread_local dnnl::stream stream = dnnl::threadpool_interop::make_stream(GetRuntime().engine, GetRuntime().pool);
  return stream;
}

inline memory::desc Any(const memory::dims &d) { return memory::desc(d, dt::f32, tag::any); }
inline memory::desc Plain(const memory::dims &d, tag t) { return memory::desc(d, dt::f32, t); }

inline dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

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
inline Arena &ThreadArena() {
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

}  // namespace dropcov
