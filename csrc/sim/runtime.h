#pragma once
// The simulator runtime: runs CUDA kernel source compiled by g++ on the CPU. Each CUDA thread is a
// real OS thread from a persistent pool; blocks run one at a time. Built-ins are thread-local;
// __syncthreads is a barrier that lets exited threads drop out and reports (as an exception that the
// launch rethrows) threads waiting at different barriers or a block that can make no progress;
// warp intrinsics are a per-warp rendezvous with CUDA's lane and width rules. No torch headers.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <source_location>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace cuconv_sim {

// A kernel failed or misbehaved in the simulator (becomes a RuntimeError in Python).
class SimError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class WarpOp : int { shfl, shfl_up, shfl_down, shfl_xor, ballot, sync };

void syncthreads(const std::source_location& site);
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const std::source_location& site);
void note_static_shared(const void* ptr, size_t bytes);
// Warp-collective (all 32 lanes, converged): every lane contributes `bytes` (<= 64) from `mine` and
// receives all 32 lanes' contributions in lane order in `all`. The simulator's fast path for the
// emulated warp-wide instructions (mma.sync, ldmatrix): two warp rendezvous instead of a shuffle
// per register, with the same checks that every lane takes part at the same call site.
void warp_exchange(const void* mine, size_t bytes, void* all,
                   const std::source_location& site = std::source_location::current());
void* dynamic_shared_memory();
void check_aligned(const void* ptr, size_t bytes, const char* what);
// Throws unless [ptr, ptr + bytes) lies in the running block's shared memory (dynamic, or a static
// array registered by CUCONV_SHARED).
void check_shared(const void* ptr, size_t bytes, const char* what);

// cp.async (sm_80): a copy of cp_size bytes, the first src_size of them from global `src` and the rest
// zeros, into shared `dst`. Emulated per thread: `dst` holds poison (0xff bytes) from the issue until
// a wait_group covering the copy's group lands it, so a kernel that reads the tile before waiting
// reads NaN. commit_group closes the thread's open group; wait_group(n) lands every committed group
// but the n newest. A thread's copies still pending when it exits land then.
void cp_async(void* dst, const void* src, size_t cp_size, size_t src_size);
void cp_async_commit();
void cp_async_wait(int n);

// ---- counters: what the launched kernels did, for `python -m cuconv audit --sim-counts` and the GPU
// model (counts a GPU cannot be asked for without a profiler). Summed over every launch since the
// last reset_counters(); a launch adds each block's counts when the block ends.
//
// Shared-memory bank conflicts are counted per warp-wide access: 32 banks of 4 bytes; an access of
// 8 or 16 bytes per lane is served a half or a quarter warp at a time (ldmatrix one 8-row matrix at
// a time), and each such phase costs the most distinct 4-byte words that any one bank holds among
// its addresses. conflicts = sum over phases of (that degree - 1): 0 for a conflict-free access.
// ldmatrix is a warp instruction here already; per-thread shared writes (cp.async destinations,
// register-staged stores) are grouped into warp-wide accesses by order: the i-th write of a kind by
// each lane of a warp since the last barrier is one access, as converged lanes issue it.
struct Counters {
  uint64_t launches = 0, blocks = 0;
  uint64_t barriers = 0;          // __syncthreads completed (per block)
  uint64_t mma_instructions = 0;  // warp-wide mma.sync
  uint64_t mma_flops = 0;         // 2 * M * N * K of each
  uint64_t cp_async_copies = 0;   // per thread
  uint64_t cp_async_bytes = 0;    // global bytes the copies read (src-size)
  uint64_t cp_async_zero_fill_bytes = 0;  // destination bytes zero-filled without a read
  uint64_t staged_load_bytes = 0;         // register-staged global loads (count_global_load)
  uint64_t ldmatrix_accesses = 0, ldmatrix_conflicts = 0;
  uint64_t cp_async_smem_accesses = 0, cp_async_smem_conflicts = 0;
  uint64_t smem_store_accesses = 0, smem_store_conflicts = 0;  // count_shared_store
};
// Every counter with its name, in one table for the bindings and the sums.
template <class C, class F>
void for_each_counter(C& c, F&& f) {
  f("launches", c.launches);
  f("blocks", c.blocks);
  f("barriers", c.barriers);
  f("mma_instructions", c.mma_instructions);
  f("mma_flops", c.mma_flops);
  f("cp_async_copies", c.cp_async_copies);
  f("cp_async_bytes", c.cp_async_bytes);
  f("cp_async_zero_fill_bytes", c.cp_async_zero_fill_bytes);
  f("staged_load_bytes", c.staged_load_bytes);
  f("ldmatrix_accesses", c.ldmatrix_accesses);
  f("ldmatrix_conflicts", c.ldmatrix_conflicts);
  f("cp_async_smem_accesses", c.cp_async_smem_accesses);
  f("cp_async_smem_conflicts", c.cp_async_smem_conflicts);
  f("smem_store_accesses", c.smem_store_accesses);
  f("smem_store_conflicts", c.smem_store_conflicts);
}
// One launch's counters, with its configuration and signature (the kernel's parameter types: the
// simulator does not know kernels' names).
struct LaunchCounters {
  std::string signature;
  dim3 grid, block;
  size_t dynamic_smem_bytes = 0;
  Counters counts;
};
constexpr size_t kMaxLaunchRecords = 256;  // launch_counters() keeps the most recent ones
Counters counters();
std::vector<LaunchCounters> launch_counters();
void reset_counters();  // both the sums and the launch records
// Kernel-side hooks (the kernels reach them through portable.cuh, where they are no-ops under nvcc).
// count_mma and count_ldmatrix are warp-collective: every lane calls them, lane 0 counts.
void count_mma(int m, int n, int k);
void count_ldmatrix(const uint64_t* row_addresses, int matrices);
void count_global_load(const void* src, size_t bytes);  // a register-staged load; nullptr: padding, no read
void count_shared_store(const void* dst, size_t bytes);

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes): a launch of
// `kernel` may use that much dynamic shared memory (without it, at most 48 KiB in all).
void set_max_dynamic_shared(const void* kernel, size_t bytes);

// Runs `body` once per CUDA thread of every block of the grid; throws SimError on a bad launch
// configuration or anything the kernel did wrong.
// The runtime's two knobs (cuconv.config's sim_block_order and sim_timeout_s, which set them from
// the environment once): the order blocks run in, "linear" (default), "reverse" or "random[:seed]"
// (a kernel whose result depends on it is wrong on a GPU), and how long a block may run before it
// is reported as hung (300 s by default).
void set_block_order(const std::string& order);  // throws SimError for an unknown order
std::string block_order();
void set_timeout_s(int64_t seconds);
int64_t timeout_s();

void launch_body(const char* kernel_name, const void* kernel, dim3 grid, dim3 block, size_t dynamic_smem_bytes,
                 const std::function<void()>& body);

template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_smem_bytes, A&&... args) {
  // Arguments are converted once and copied into each thread's call, as CUDA copies them.
  const std::tuple<std::decay_t<P>...> params(static_cast<P>(std::forward<A>(args))...);
  launch_body(__PRETTY_FUNCTION__, reinterpret_cast<const void*>(kernel), grid, block, dynamic_smem_bytes, [&] { std::apply(kernel, params); });
}

}  // namespace cuconv_sim

inline void __syncthreads(const std::source_location site = std::source_location::current()) {
  cuconv_sim::syncthreads(site);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const std::source_location site = std::source_location::current()) {
  cuconv_sim::warp_op(cuconv_sim::WarpOp::sync, mask, 0, 0, 32, site);
}

namespace cuconv_sim {
template <typename T>
T shuffle(WarpOp op, unsigned mask, T var, int arg, int width, const std::source_location& site) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = warp_op(op, mask, bits, arg, width, site);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
}  // namespace cuconv_sim

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
              const std::source_location site = std::source_location::current()) {
  return cuconv_sim::shuffle(cuconv_sim::WarpOp::shfl, mask, var, src_lane, width, site);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 const std::source_location site = std::source_location::current()) {
  return cuconv_sim::shuffle(cuconv_sim::WarpOp::shfl_up, mask, var, int(delta), width, site);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   const std::source_location site = std::source_location::current()) {
  return cuconv_sim::shuffle(cuconv_sim::WarpOp::shfl_down, mask, var, int(delta), width, site);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  const std::source_location site = std::source_location::current()) {
  return cuconv_sim::shuffle(cuconv_sim::WarpOp::shfl_xor, mask, var, lane_mask, width, site);
}
inline unsigned __ballot_sync(unsigned mask, int predicate,
                              const std::source_location site = std::source_location::current()) {
  return unsigned(cuconv_sim::warp_op(cuconv_sim::WarpOp::ballot, mask, predicate != 0, 0, 32, site));
}
// any/all over the lanes of `mask` that have not exited, from one ballot.
inline int __any_sync(unsigned mask, int predicate, const std::source_location site = std::source_location::current()) {
  return (cuconv_sim::warp_op(cuconv_sim::WarpOp::ballot, mask, predicate != 0, 0, 32, site) >> 32) & 1;
}
inline int __all_sync(unsigned mask, int predicate, const std::source_location site = std::source_location::current()) {
  return (cuconv_sim::warp_op(cuconv_sim::WarpOp::ballot, mask, predicate != 0, 0, 32, site) >> 33) & 1;
}

// Atomics: relaxed read-modify-writes, as CUDA's device-scope atomics (no lock: TSan must see races).
template <typename T> T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v, std::memory_order_relaxed); }
template <typename T> T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v, std::memory_order_relaxed); }
template <typename T> T atomicCAS(T* p, T expected, T desired) {
  std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired, std::memory_order_relaxed);
  return expected;
}
template <typename T> T atomicMax(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load(std::memory_order_relaxed);
  while (old < v && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {}
  return old;
}
template <typename T> T atomicMin(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load(std::memory_order_relaxed);
  while (v < old && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {}
  return old;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
template <typename T> T __ldg(const T* p) { return *p; }
