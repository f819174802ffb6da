// Thread pools for oneDNN's threadpool runtime (MindSpore's libdnnl is built with
// DNNL_CPU_RUNTIME=THREADPOOL): whoever executes a oneDNN primitive supplies the threads.
// Included by onednn_kernels.cc only (one translation unit), hence the definitions in a header.
//
// MakePool() returns MindSpore's own pool (MindSporePool; kernels called from threads outside it run on a
// pool of our own) when it can be found, else a pool of our own (WorkerPool); DROPCOV_ONEDNN_THREADPOOL=own
// forces the latter, DROPCOV_ONEDNN_THREADS sets the thread count oneDNN plans for (default: the usable
// cores).

#pragma once

#include <oneapi/dnnl/dnnl_threadpool.hpp>

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace dropcov {

// Whether the calling thread is inside one of our parallel_for jobs (oneDNN asks, to run nested loops
// inline).
inline thread_local bool in_parallel_job = false;

inline int64_t ThreadCpuNanoseconds() {
  timespec now;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
}

// The CPU time that the threads helping one thread (the measurer) spend on its parallel tasks. Summed
// with the measurer's own thread CPU time it is the work a kernel call did, whatever else runs on the
// machine: a busy machine stretches the wall time of a call, not its CPU time.
struct HelperCpuTime {
  std::atomic<bool> active{false};
  std::atomic<std::thread::id> measurer{};
  std::atomic<int64_t> nanoseconds{0};
};
inline HelperCpuTime &GetHelperCpuTime() {
  static HelperCpuTime meter;
  return meter;
}

// Runs task i of n with the in-parallel flag set (and restored: jobs may nest when run inline), adding
// its CPU time to the HelperCpuTime while a measurement runs on another thread.
inline void RunTask(const std::function<void(int, int)> &fn, int i, int n) {
  const bool outer = in_parallel_job;
  in_parallel_job = true;
  HelperCpuTime &meter = GetHelperCpuTime();
  if (meter.active.load(std::memory_order_acquire) && meter.measurer.load() != std::this_thread::get_id()) {
    const int64_t start = ThreadCpuNanoseconds();
    fn(i, n);
    meter.nanoseconds.fetch_add(ThreadCpuNanoseconds() - start);
  } else {
    fn(i, n);
  }
  in_parallel_job = outer;
}

// CPU milliseconds of `work` (a callable) on this thread and on the threads running its parallel tasks.
template <typename Work>
double CpuMillisecondsOf(Work &&work) {
  HelperCpuTime &meter = GetHelperCpuTime();
  meter.measurer.store(std::this_thread::get_id());
  meter.nanoseconds.store(0);
  meter.active.store(true, std::memory_order_release);
  const int64_t start = ThreadCpuNanoseconds();
  try {
    work();
  } catch (...) {
    meter.active.store(false);
    throw;
  }
  const int64_t own = ThreadCpuNanoseconds() - start;
  meter.active.store(false);
  return static_cast<double>(own + meter.nanoseconds.load()) / 1e6;
}

// A pool of worker threads of our own: for calls from threads outside MindSpore's pool (see MindSporePool),
// for a MindSpore without the entry points MindSporePool needs, or with DROPCOV_ONEDNN_THREADPOOL=own. Its
// workers sleep on a condition variable between jobs; the calling thread takes part in every job. A job ends only when its
// closures have all run *and* every worker that joined it has left it, so no worker can ever pick up
// an index of the next job while still holding the previous job's closure.
class WorkerPool : public dnnl::threadpool_interop::threadpool_iface {
 public:
  explicit WorkerPool(int threads) : threads_(std::max(1, threads)) {
    for (int i = 1; i < threads_; ++i) {
      workers_.emplace_back([this] {
        pthread_setname_np(pthread_self(), "dropcov-onednn");  // what `ps -L` and the tests see
        WorkerLoop();
      });
    }
  }
  ~WorkerPool() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto &w : workers_) w.join();
  }
  int get_num_threads() const override { return threads_; }
  bool get_in_parallel() const override { return in_parallel_job; }
  uint64_t get_flags() const override { return 0; }

  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    if (n <= 0) return;
    // A nested call, or a call from a second MindSpore thread while a job runs, runs inline.
    std::unique_lock<std::mutex> busy(job_mutex_, std::try_to_lock);
    if (n == 1 || threads_ == 1 || in_parallel_job || !busy.owns_lock()) {
      for (int i = 0; i < n; ++i) RunTask(fn, i, n);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      n_ = n;
      next_.store(0);
      done_.store(0);
      ++generation_;
    }
    wake_.notify_all();
    RunTasks(fn, n);
    while (done_.load(std::memory_order_acquire) < n) std::this_thread::yield();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = nullptr;  // no worker joins from now on
    }
    while (joined_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
  }

 private:
  void RunTasks(const std::function<void(int, int)> &fn, int n) {
    for (int i = next_.fetch_add(1); i < n; i = next_.fetch_add(1)) {
      RunTask(fn, i, n);
      done_.fetch_add(1, std::memory_order_release);
    }
  }
  void WorkerLoop() {
    uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (stop_) return;
      if (fn_ == nullptr) continue;
      const std::function<void(int, int)> *fn = fn_;
      const int n = n_;
      joined_.fetch_add(1, std::memory_order_acq_rel);
      lock.unlock();
      RunTasks(*fn, n);
      joined_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_, job_mutex_;
  std::condition_variable wake_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  const std::function<void(int, int)> *fn_ = nullptr;
  int n_ = 0;
  std::atomic<int> next_{0}, done_{0}, joined_{0};
};

// Whether the calling thread is one of MindSpore's pool threads (named ActorThread_<i> and
// KernelThread_<i> by MindSpore's ThreadPool).
inline bool OnMindSporePoolThread() {
  thread_local const bool on_pool = [] {
    char name[16] = {0};
    if (pthread_getname_np(pthread_self(), name, sizeof(name)) != 0) return false;
    return std::strncmp(name, "KernelThread_", 13) == 0 || std::strncmp(name, "ActorThread_", 12) == 0;
  }();
  return on_pool;
}

// oneDNN's parallel loops on MindSpore's own thread pool: the one its stock oneDNN kernels use
// (mindspore::kernel::GetActorMgrInnerThreadPool(), see MindSpore's mkl_cpu_kernel.h), when the kernel is
// called from one of that pool's threads, as a training step's kernels are: the calling worker takes a
// share of the tasks, the other workers the rest, and no thread is added. MindSpore's plug-in is loaded
// with RTLD_LOCAL, so its two entry points are looked up by name in the already loaded libraries.
//
// A kernel called from any other thread (an evaluation forward's kernels run on the Python thread) runs
// on a WorkerPool instead. ParallelLaunch from a thread outside the pool hands every task to the pool's
// workers and spins (sched_yield) until they finish: on 2 cores, 2 workers and the spinning caller share
// the cores, and a convolution took 2x its time in about one call in five (measured with per-thread CPU
// time: the Python thread burned 179 ms of CPU per ResNet-18 forward of 387 ms, doing no work). The
// WorkerPool's caller does a share of the work itself.
class MindSporePool : public dnnl::threadpool_interop::threadpool_iface {
 public:
  using Func = std::function<int(void *, int, float, float)>;  // mindspore::Func (thread/threadpool.h)
  using GetPool = void *(*)();
  // ThreadPool::ParallelLaunch(const Func &, Content, int): a non-virtual call with `this` first (Itanium
  // C++ ABI); MindSpore's ActorThreadPool does not override it.
  using Launch = int (*)(void *pool, const Func &func, void *content, int task_num);

  // The pool, or nullptr when this MindSpore does not have the two entry points.
  static MindSporePool *Find(int threads) {
    void *ops = dlopen("libmindspore_ops_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    void *core = dlopen("libmindspore_core.so", RTLD_LAZY | RTLD_NOLOAD);
    if (ops == nullptr || core == nullptr) return nullptr;
    auto get_pool = reinterpret_cast<GetPool>(dlsym(ops, "_ZN9mindspore6kernel26GetActorMgrInnerThreadPoolEv"));
    auto launch = reinterpret_cast<Launch>(
        dlsym(core, "_ZN9mindspore10ThreadPool14ParallelLaunchERKSt8functionIFiPviffEES2_i"));
    if (get_pool == nullptr || launch == nullptr || get_pool() == nullptr) return nullptr;
    QuietenSpinning(core, get_pool());
    return new MindSporePool(get_pool, launch, threads);
  }

  // MindSpore's workers spin (sched_yield, up to 300,000 times) after each job while a graph runs, before
  // they sleep. In an evaluation forward the Python thread and our worker run the convolutions while
  // MindSpore's workers, after each of MindSpore's own kernels (ReLU, add), spin on the same 2 cores: one
  // process in two ran ResNet-18 + DropCov evaluation at AVX2 in 0.275-0.290 s instead of 0.255-0.265 s,
  // its KernelThread_0 burning 24 ms of CPU per forward instead of 11. With the spin count at its minimum
  // (ThreadPool::SetMaxSpinCount, which MindSpore applies at each graph's start, and the kernel threads'
  // own) every process ran fast, and a training step, which keeps both workers busy, took the same time.
  static void QuietenSpinning(void *core, void *pool) {
    using SetSpin = void (*)(void *pool, int spin_count);  // non-virtual members: `this` first
    for (const char *symbol : {"_ZN9mindspore10ThreadPool15SetMaxSpinCountEi",
                               "_ZN9mindspore10ThreadPool27SetKernelThreadMaxSpinCountEi"})
      if (auto set_spin = reinterpret_cast<SetSpin>(dlsym(core, symbol))) set_spin(pool, 1);
  }

  int get_num_threads() const override { return threads_; }
  bool get_in_parallel() const override { return in_parallel_job; }
  uint64_t get_flags() const override { return 0; }
  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    if (n > 1 && !in_parallel_job && !OnMindSporePoolThread()) {
      Outside().parallel_for(n, fn);
      return;
    }
    void *pool = n > 1 && !in_parallel_job ? get_pool_() : nullptr;
    if (pool == nullptr) {
      for (int i = 0; i < n; ++i) RunTask(fn, i, n);
      return;
    }
    const Func task = [&fn, n](void *, int i, float, float) {
      RunTask(fn, i, n);
      return 0;
    };
    if (launch_(pool, task, nullptr, n) != 0) throw std::runtime_error("MindSpore's thread pool failed a job");
  }

 private:
  MindSporePool(GetPool get_pool, Launch launch, int threads) : get_pool_(get_pool), launch_(launch), threads_(threads) {}
  // The pool for calls from threads outside MindSpore's pool, started at the first such call.
  WorkerPool &Outside() {
    std::call_once(outside_started_, [this] { outside_ = std::make_unique<WorkerPool>(threads_); });
    return *outside_;
  }
  const GetPool get_pool_;
  const Launch launch_;
  const int threads_;
  std::once_flag outside_started_;
  std::unique_ptr<WorkerPool> outside_;
};

// DROPCOV_ONEDNN_THREADS, if set to a positive number.
inline int ThreadsFromEnvironment() {
  const char *env = std::getenv("DROPCOV_ONEDNN_THREADS");
  return env != nullptr && std::atoi(env) > 0 ? std::atoi(env) : 0;
}

inline int UsableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Threads of MindSpore's pool: its actor and kernel threads, found by the names MindSpore gives them
// (its ThreadPool keeps the count in members that no exported function returns). 0 if none is found.
inline int MindSporePoolThreads() {
  int count = 0;
  if (DIR *tasks = opendir("/proc/self/task")) {
    while (const dirent *entry = readdir(tasks)) {
      if (entry->d_name[0] == '.') continue;
      char name[32] = {0};
      const std::string path = std::string("/proc/self/task/") + entry->d_name + "/comm";
      if (FILE *comm = std::fopen(path.c_str(), "r")) {
        if (std::fgets(name, sizeof(name), comm) != nullptr &&
            (std::strncmp(name, "KernelThread_", 13) == 0 || std::strncmp(name, "ActorThread_", 12) == 0))
          ++count;
        std::fclose(comm);
      }
    }
    closedir(tasks);
  }
  return count;
}

// MindSpore's pool unless DROPCOV_ONEDNN_THREADPOOL=own or this MindSpore lacks its entry points. oneDNN
// plans its loops for DROPCOV_ONEDNN_THREADS, else the usable cores (at most MindSpore's pool size:
// MindSpore runs tasks beyond its idle workers on the calling thread, one after the other).
inline dnnl::threadpool_interop::threadpool_iface *MakePool() {
  const char *choice = std::getenv("DROPCOV_ONEDNN_THREADPOOL");
  const bool own = choice != nullptr && std::strcmp(choice, "own") == 0;
  const int requested = ThreadsFromEnvironment();
  if (!own) {
    const int mindspore_threads = MindSporePoolThreads();
    int threads = requested ? requested : UsableCores();
    if (!requested && mindspore_threads > 0) threads = std::min(threads, mindspore_threads);
    if (auto *pool = MindSporePool::Find(threads)) return pool;
    std::fprintf(stderr, "dropcov oneDNN kernels: MindSpore's thread pool was not found in this MindSpore; "
                         "using a pool of our own\n");
  }
  return new WorkerPool(requested ? requested : UsableCores());
}
}  // namespace dropcov
