// Which memory layout each convolution runs on, measured once per machine and kept next to the library.
// Included by onednn_kernels.cc only (one translation unit), hence the definitions in a header.
//
// A convolution can run on oneDNN's blocked layouts (its direct JIT kernels, with MindSpore's plain
// tensors reordered in and out on every call) or on the plain NCHW/OIHW tensors themselves (what
// MindSpore's stock kernels run: no reorders, oneDNN's GEMM-based kernels). Blocked wins for most
// spatial convolutions; plain can win for 1x1 convolutions, whose arithmetic is too light to pay for
// the reorders, depending on the CPU's instruction set. So the first call of each (direction, shape)
// times both (CPU time of all the threads working on the call: load from other processes stretches wall
// time, not that) and keeps the faster; a plain kernel that oneDNN would run on its reference implementation
// (AVX-512 3x3 backward-data, ~50x slower) is never a candidate.
//
// The choices are appended to "<library>.layouts-<machine>.tsv" in the library's folder, where
// <machine> hashes the CPU model, oneDNN's effective instruction set (after ONEDNN_MAX_CPU_ISA) and the
// thread count: later processes on the same machine reuse them instead of measuring again. Delete the
// file to measure again. DROPCOV_ONEDNN_LAYOUT=blocked or =plain puts every convolution on that layout
// (nothing measured or written).

#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>

namespace dropcov {

enum class Layout { kBlocked, kPlain };
enum class LayoutPolicy { kMeasure, kBlocked, kPlain };

inline const char *LayoutName(Layout layout) { return layout == Layout::kBlocked ? "blocked" : "plain"; }

// DROPCOV_ONEDNN_LAYOUT: "blocked" or "plain" force a layout; anything else (unset) measures.
inline LayoutPolicy PolicyFromEnvironment() {
  const char *value = std::getenv("DROPCOV_ONEDNN_LAYOUT");
  if (value != nullptr && std::strcmp(value, "blocked") == 0) return LayoutPolicy::kBlocked;
  if (value != nullptr && std::strcmp(value, "plain") == 0) return LayoutPolicy::kPlain;
  return LayoutPolicy::kMeasure;
}

// oneDNN's instruction set for this process, as its ONEDNN_MAX_CPU_ISA names it.
inline std::string EffectiveIsaName() {
  using isa = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::sse41: return "SSE41";
    case isa::avx: return "AVX";
    case isa::avx2: return "AVX2";
    case isa::avx2_vnni: return "AVX2_VNNI";
    case isa::avx2_vnni_2: return "AVX2_VNNI_2";
    case isa::avx512_core: return "AVX512_CORE";
    case isa::avx512_core_vnni: return "AVX512_CORE_VNNI";
    case isa::avx512_core_bf16: return "AVX512_CORE_BF16";
    case isa::avx512_core_fp16: return "AVX512_CORE_FP16";
    case isa::avx512_core_amx: return "AVX512_CORE_AMX";
    default: return "isa-" + std::to_string(static_cast<unsigned>(dnnl::get_effective_cpu_isa()));
  }
}

inline std::string CpuModel() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown CPU";
}

// 64-bit FNV-1a: a hash that stays the same across builds and compilers (std::hash does not promise to).
inline uint64_t StableHash(const std::string &text) {
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

// The folder and file name (without ".so") of the shared library holding this code.
inline bool LibraryLocation(std::string *folder, std::string *stem) {
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&StableHash), &info) == 0 || info.dli_fname == nullptr) return false;
  const std::string path(info.dli_fname);
  const size_t slash = path.rfind('/');
  *folder = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.size() > 3 && name.compare(name.size() - 3, 3, ".so") == 0) name.resize(name.size() - 3);
  *stem = name;
  return true;
}

// The measured layout of each convolution key, read from and appended to the choices file.
class LayoutChoices {
 public:
  explicit LayoutChoices(int threads) {
    machine_ = CpuModel() + "; oneDNN ISA " + EffectiveIsaName() + "; " + std::to_string(threads) + " threads";
    std::string folder, stem;
    if (!LibraryLocation(&folder, &stem)) return;
    char digest[17];
    std::snprintf(digest, sizeof(digest), "%016llx", static_cast<unsigned long long>(StableHash(machine_)));
    path_ = folder + "/" + stem + ".layouts-" + digest + ".tsv";
    std::ifstream file(path_);
    std::string line;
    while (std::getline(file, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream fields(line);
      std::string key, layout;
      if (std::getline(fields, key, '\t') && std::getline(fields, layout, '\t') && !choices_.count(key)) {
        if (layout == "blocked") choices_[key] = Layout::kBlocked;
        if (layout == "plain") choices_[key] = Layout::kPlain;
      }
    }
  }

  bool Find(const std::string &key, Layout *layout) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = choices_.find(key);
    if (it == choices_.end()) return false;
    *layout = it->second;
    return true;
  }

  // Keep `layout` for `key` and append it, with both timings, to the file (one write() call per line,
  // so processes appending at once do not interleave lines). A file that cannot be written is skipped.
  void Record(const std::string &key, Layout layout, double blocked_ms, double plain_ms) {
    std::lock_guard<std::mutex> lock(mutex_);
    choices_[key] = layout;
    if (path_.empty()) return;
    const int fd = open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    struct stat info;
    std::string text;
    if (fstat(fd, &info) == 0 && info.st_size == 0)
      text = "# dropcov oneDNN convolution layouts measured on: " + machine_ +
             "\n# key\tlayout\tblocked_cpu_ms\tplain_cpu_ms\n";
    char timings[64];
    std::snprintf(timings, sizeof(timings), "\t%.3f\t%.3f\n", blocked_ms, plain_ms);
    text += key + "\t" + LayoutName(layout) + timings;
    ssize_t written = write(fd, text.data(), text.size());
    (void)written;
    close(fd);
  }

 private:
  std::string machine_, path_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Layout> choices_;
};

}  // namespace dropcov
