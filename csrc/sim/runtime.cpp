// The simulator runtime (see runtime.h). One block at a time: a persistent pool of OS threads,
// worker i running CUDA thread i of the current block. All synchronisation state of a block lives
// under one mutex, which makes the progress check exact: when every live thread is waiting and no
// barrier or warp rendezvous can complete, the block is deadlocked and the launch reports it.
#include "runtime.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

thread_local uint3 threadIdx{0, 0, 0};
thread_local uint3 blockIdx{0, 0, 0};
thread_local dim3 blockDim{1, 1, 1};
thread_local dim3 gridDim{1, 1, 1};

namespace cuconv_sim {
namespace {

constexpr size_t kMaxSharedBytes = 48 * 1024;  // static + dynamic without an opt-in attribute

// Per kernel: the dynamic shared memory it opted in to (set_max_dynamic_shared).
std::mutex optin_mu;
std::vector<std::pair<const void*, size_t>>& optins() {
  static std::vector<std::pair<const void*, size_t>> v;
  return v;
}
size_t optin_of(const void* kernel) {
  std::lock_guard<std::mutex> lock(optin_mu);
  for (const auto& o : optins())
    if (o.first == kernel) return o.second;
  return 0;
}

// Thrown inside a CUDA thread to unwind it once its block has failed; never leaves the worker.
struct Abort {};

std::string where(const std::source_location& s) {
  return std::string(s.file_name()) + ":" + std::to_string(s.line());
}
bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() && std::strcmp(a.file_name(), b.file_name()) == 0;
}

enum class State { running, at_barrier, at_warp, exited };

struct ThreadState {
  State state = State::running;
  bool blocked = false;  // counted in Block::blocked
  std::source_location site;
};

// Extra wavefronts of one warp-wide shared-memory access (see Counters in runtime.h): `lanes` holds
// (lane, address, bytes) of the lanes that take part.
struct LaneAccess {
  int lane;
  uintptr_t addr;
  uint32_t bytes;
};
uint64_t bank_conflicts(const std::vector<LaneAccess>& lanes) {
  uint64_t extra = 0;
  thread_local std::vector<uintptr_t> words;
  for (int phase_lanes : {8, 16, 32}) {
    for (int first = 0; first < 32; first += phase_lanes) {
      words.clear();
      for (const LaneAccess& a : lanes) {
        const int lanes_per_phase = a.bytes > 8 ? 8 : a.bytes > 4 ? 16 : 32;
        if (lanes_per_phase != phase_lanes || a.lane < first || a.lane >= first + phase_lanes) continue;
        for (uintptr_t w = a.addr / 4; w <= (a.addr + a.bytes - 1) / 4; ++w) words.push_back(w);
      }
      if (words.empty()) continue;
      std::sort(words.begin(), words.end());
      words.erase(std::unique(words.begin(), words.end()), words.end());
      int per_bank[32] = {}, degree = 0;
      for (uintptr_t w : words) degree = std::max(degree, ++per_bank[w % 32]);
      extra += uint64_t(degree - 1);
    }
  }
  return extra;
}

// One thread's shared-memory write since the last barrier, for the warp-wide grouping.
enum class SmemKind : uint8_t { cp_async, store };
struct SmemWrite {
  uintptr_t addr;
  uint32_t bytes;
  SmemKind kind;
};

// Counts a thread gathers without a lock, added to its block's when it exits.
thread_local Counters tl_counts;

void add_counters(Counters& into, const Counters& from) {
  uint64_t values[sizeof(Counters) / sizeof(uint64_t)];
  size_t n = 0;
  for_each_counter(from, [&](const char*, const uint64_t& v) { values[n++] = v; });
  n = 0;
  for_each_counter(into, [&](const char*, uint64_t& v) { v += values[n++]; });
}

struct Warp {
  uint32_t arrived = 0, exited = 0, valid = 0, mask = 0;
  WarpOp op = WarpOp::sync;
  std::source_location site;
  uint64_t value[32] = {};
  int arg[32] = {};
  int width[32] = {};
  uint64_t result[32] = {};
  unsigned char exchange[32 * 64] = {};  // warp_exchange's per-lane slots
  std::atomic<uint32_t> generation{0};
};

struct Block {
  std::mutex mu;
  dim3 block_dim, block_idx;
  int nthreads = 0, live = 0, blocked = 0;
  std::vector<ThreadState> threads;
  std::unique_ptr<Warp[]> warps;
  int nwarps = 0;
  // barrier phase
  int bar_arrived = 0;
  std::source_location bar_site;
  int bar_first_tid = -1;
  std::atomic<uint32_t> bar_generation{0};
  // failure
  std::atomic<bool> abort{false};
  std::string error;
  // counters: the block's own (barriers, bank conflicts of grouped writes) and its exited threads'
  Counters counts;
  std::vector<std::vector<SmemWrite>> smem_writes;  // per thread, since the last barrier
  // shared memory
  std::vector<unsigned char> dynamic_smem;
  std::vector<std::pair<void*, size_t>> statics;  // registered by thread 0

  std::string thread_name(int tid) const {
    std::ostringstream os;
    os << "thread (" << tid % block_dim.x << "," << (tid / block_dim.x) % block_dim.y << ","
       << tid / (block_dim.x * block_dim.y) << ") of block (" << block_idx.x << "," << block_idx.y << ","
       << block_idx.z << ")";
    return os.str();
  }

  // Records the first failure and wakes every waiting thread so that it unwinds. Under mu.
  void fail_locked(const std::string& message) {
    if (error.empty()) error = message;
    abort.store(true);
    bar_generation.fetch_add(1, std::memory_order_release);
    bar_generation.notify_all();
    for (int w = 0; w < nwarps; ++w) {
      warps[w].generation.fetch_add(1, std::memory_order_release);
      warps[w].generation.notify_all();
    }
  }

  std::string dump_locked() const {
    std::ostringstream os;
    int shown = 0, more = 0;
    for (int t = 0; t < nthreads; ++t) {
      const ThreadState& s = threads[t];
      if (s.state == State::exited) continue;
      if (shown++ >= 8) {
        ++more;
        continue;
      }
      os << "\n  " << thread_name(t) << ": "
         << (s.state == State::running ? std::string("running")
             : s.state == State::at_barrier ? "waiting at __syncthreads " + where(s.site)
                                            : "waiting in a warp operation at " + where(s.site));
    }
    if (more) os << "\n  ... and " << more << " more live threads";
    return os.str();
  }

  void check_progress_locked() {
    if (live > 0 && blocked == live)
      fail_locked("cuconv simulator: deadlock: every live thread of the block waits and no barrier or warp "
                  "operation can complete (threads that never arrive, or a warp operation whose lanes wait "
                  "elsewhere):" + dump_locked());
  }

  void release_locked(int tid) {
    threads[tid].state = State::running;
    if (threads[tid].blocked) {
      threads[tid].blocked = false;
      --blocked;
    }
  }

  // Groups every thread's shared writes since the last barrier into warp-wide accesses and counts
  // their conflicts. Under mu with every live thread waiting (or none running).
  void count_smem_writes_locked() {
    std::vector<LaneAccess> access;
    for (int w = 0; w < nwarps; ++w) {
      for (SmemKind kind : {SmemKind::cp_async, SmemKind::store}) {
        size_t next[32] = {};  // per lane: index into its writes
        for (;;) {
          access.clear();
          for (int l = 0; l < 32 && 32 * w + l < nthreads; ++l) {
            const auto& writes = smem_writes[32 * w + l];
            while (next[l] < writes.size() && writes[next[l]].kind != kind) ++next[l];
            if (next[l] < writes.size()) {
              access.push_back({l, writes[next[l]].addr, writes[next[l]].bytes});
              ++next[l];
            }
          }
          if (access.empty()) break;
          const uint64_t extra = bank_conflicts(access);
          if (kind == SmemKind::cp_async) {
            ++counts.cp_async_smem_accesses;
            counts.cp_async_smem_conflicts += extra;
          } else {
            ++counts.smem_store_accesses;
            counts.smem_store_conflicts += extra;
          }
        }
      }
    }
    for (auto& writes : smem_writes) writes.clear();
  }

  void complete_barrier_locked() {
    ++counts.barriers;
    count_smem_writes_locked();
    for (int t = 0; t < nthreads; ++t)
      if (threads[t].state == State::at_barrier) release_locked(t);
    bar_arrived = 0;
    bar_generation.fetch_add(1, std::memory_order_release);
    bar_generation.notify_all();
  }

  void complete_warp_locked(Warp& w) {
    const uint32_t in = w.arrived;
    const uint32_t ballot = [&] {
      uint32_t b = 0;
      for (int l = 0; l < 32; ++l)
        if ((in >> l & 1u) && w.value[l]) b |= 1u << l;
      return b;
    }();
    constexpr uint64_t kPoison = ~uint64_t(0);  // reading a lane that does not take part: undefined
    for (int l = 0; l < 32; ++l) {
      if (!(in >> l & 1u)) continue;
      const int width = w.width[l], base = l / width * width, arg = w.arg[l];
      int src = l;
      switch (w.op) {
        case WarpOp::shfl: src = base + (arg & (width - 1)); break;
        case WarpOp::shfl_up: src = (l - base) < arg ? l : l - arg; break;
        case WarpOp::shfl_down: src = (l - base) + arg >= width ? l : l + arg; break;
        case WarpOp::shfl_xor: src = (l ^ arg) >= base + width ? l : (l ^ arg); break;
        default: break;
      }
      if (w.op == WarpOp::ballot)
        w.result[l] = ballot | (uint64_t(ballot != 0) << 32) | (uint64_t(ballot == in) << 33);
      else if (w.op == WarpOp::sync)
        w.result[l] = 0;
      else
        w.result[l] = (src >= 0 && src < 32 && (in >> src & 1u)) ? w.value[src] : kPoison;
      release_locked(int(&w - warps.get()) * 32 + l);
    }
    w.arrived = 0;
    w.generation.fetch_add(1, std::memory_order_release);
    w.generation.notify_all();
  }

  bool warp_complete(const Warp& w) const { return w.arrived && (w.arrived & w.mask) == w.mask; }
};

thread_local Block* tl_block = nullptr;
thread_local int tl_tid = 0;

// The running CUDA thread's cp.async copies that have not landed yet, in issue order.
struct PendingCopy {
  unsigned char* dst;
  unsigned char data[16];  // the source bytes (read at issue: global memory does not change meanwhile)
  size_t cp_size, src_size;
  uint64_t group;          // index of the commit group the copy belongs to
};
struct AsyncCopies {
  std::vector<PendingCopy> pending;
  uint64_t committed = 0;  // groups committed so far; the open group has this index
  void land_before(uint64_t group) {  // lands every copy of a group below `group`
    size_t keep = 0;
    for (PendingCopy& c : pending) {
      if (c.group < group) {
        std::memcpy(c.dst, c.data, c.src_size);
        std::memset(c.dst + c.src_size, 0, c.cp_size - c.src_size);
      } else {
        pending[keep++] = c;
      }
    }
    pending.resize(keep);
  }
};
thread_local AsyncCopies tl_copies;

Block& current_block() {
  if (!tl_block) throw SimError("cuconv simulator: a device function was called outside a kernel launch");
  return *tl_block;
}

// Waits until `gen` moves past `seen`, then unwinds if the block failed meanwhile.
void wait_generation(Block& b, std::atomic<uint32_t>& gen, uint32_t seen) {
  while (gen.load(std::memory_order_acquire) == seen) gen.wait(seen, std::memory_order_acquire);
  if (b.abort.load()) throw Abort{};
}

// ---- the persistent pool --------------------------------------------------------------------------
class Pool {
 public:
  static Pool& get() {
    static Pool* pool = new Pool;  // never destroyed: workers sleep until the process exits
    return *pool;
  }

  // Runs thread t of `block` on worker t for every t < block.nthreads; returns when all exited,
  // or false after `timeout`.
  bool run(Block& block, const std::function<void()>& body, const dim3& grid, std::chrono::seconds timeout) {
    grow(block.nthreads);
    current_ = &block;
    body_ = &body;
    grid_ = grid;
    {
      std::lock_guard<std::mutex> lock(done_mu_);
      remaining_ = block.nthreads;
    }
    ++generation_;
    job_.store((generation_ << 11) | uint64_t(block.nthreads), std::memory_order_release);
    job_.notify_all();
    std::unique_lock<std::mutex> lock(done_mu_);
    return done_cv_.wait_for(lock, timeout, [&] { return remaining_ == 0; });
  }
  bool run_wait(std::chrono::seconds timeout) {
    std::unique_lock<std::mutex> lock(done_mu_);
    return done_cv_.wait_for(lock, timeout, [&] { return remaining_ == 0; });
  }

 private:
  void grow(int n) {
    while (int(workers_) < n) {
      std::thread([this, i = int(workers_), seen = generation_] { work(i, seen); }).detach();
      ++workers_;
    }
  }

  void work(int i, uint64_t seen) {
    for (;;) {
      uint64_t word = job_.load(std::memory_order_acquire);
      while ((word >> 11) == seen) {
        job_.wait(word, std::memory_order_acquire);
        word = job_.load(std::memory_order_acquire);
      }
      seen = word >> 11;
      if (i >= int(word & 2047)) continue;  // not part of this block; its launcher does not wait for us
      run_thread(*current_, *body_, i);
      std::lock_guard<std::mutex> lock(done_mu_);
      if (--remaining_ == 0) done_cv_.notify_one();
    }
  }

  void run_thread(Block& b, const std::function<void()>& body, int tid) {
    const dim3 bd = b.block_dim;
    threadIdx = uint3{tid % bd.x, (tid / bd.x) % bd.y, tid / (bd.x * bd.y)};
    blockIdx = uint3{b.block_idx.x, b.block_idx.y, b.block_idx.z};
    blockDim = bd;
    gridDim = grid_;
    tl_block = &b;
    tl_tid = tid;
    tl_copies = AsyncCopies{};
    tl_counts = Counters{};
    try {
      if (!b.abort.load()) body();
      tl_copies.land_before(~uint64_t(0));  // copies still in flight at exit complete (PTX exit)
    } catch (const Abort&) {
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(b.mu);
      b.fail_locked("cuconv simulator: " + b.thread_name(tid) + ": " + e.what());
    } catch (...) {
      std::lock_guard<std::mutex> lock(b.mu);
      b.fail_locked("cuconv simulator: " + b.thread_name(tid) + " threw an unknown exception");
    }
    {  // exit: arrive-and-drop at the current barrier and at the warp's pending rendezvous (PTX `exit`)
      std::lock_guard<std::mutex> lock(b.mu);
      b.threads[tid].state = State::exited;
      --b.live;
      add_counters(b.counts, tl_counts);
      Warp& w = b.warps[tid / 32];
      w.exited |= 1u << (tid % 32);
      if (!b.abort.load()) {
        // Strict: a lane that exits while named in its warp's pending operation never takes part.
        if (w.arrived && (w.mask >> (tid % 32) & 1u))
          b.fail_locked("cuconv simulator: " + b.thread_name(tid) + " exited while named in the mask of the warp "
                        "operation at " + where(w.site) + " (lanes of one warp at different operations or masks?)");
        else if (b.bar_arrived > 0 && b.bar_arrived == b.live) b.complete_barrier_locked();
        b.check_progress_locked();
      }
    }
    tl_block = nullptr;
  }

  std::atomic<uint64_t> job_{0};
  uint64_t generation_ = 0;
  size_t workers_ = 0;
  Block* current_ = nullptr;
  const std::function<void()>* body_ = nullptr;
  dim3 grid_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  int remaining_ = 0;
};

std::mutex& launch_mutex() {
  static std::mutex mu;  // one launch at a time: static shared memory and the pool are global
  return mu;
}

// The counters of every launch since the last reset, and the most recent launches' own.
std::mutex counters_mu;
Counters& total_counters() {
  static Counters c;
  return c;
}
std::deque<LaunchCounters>& launch_records() {
  static std::deque<LaunchCounters> records;
  return records;
}

struct Settings {
  std::mutex mu;
  std::string block_order = "linear";
  int64_t timeout_s = 300;
};
Settings& settings() {
  static Settings s;
  return s;
}

// The seed of a "random[:seed]" order; throws for anything that is not an order.
unsigned order_seed(const std::string& mode) {
  if (mode == "linear" || mode == "reverse") return 0;
  if (mode == "random") return 0;
  if (mode.rfind("random:", 0) == 0 && mode.size() > 7 &&
      mode.find_first_not_of("0123456789", 7) == std::string::npos)
    return unsigned(std::stoul(mode.substr(7)));
  throw SimError("block order must be linear, reverse or random[:seed], got '" + mode + "'");
}

// Block visiting order of a launch of `count` blocks (see set_block_order).
std::vector<uint64_t> visiting_order(uint64_t count) {
  std::vector<uint64_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  const std::string mode = block_order();
  if (mode == "reverse") std::reverse(order.begin(), order.end());
  else if (mode.rfind("random", 0) == 0) std::shuffle(order.begin(), order.end(), std::mt19937_64(order_seed(mode)));
  return order;
}

void check_config(const char* name, const void* kernel, dim3 grid, dim3 block, size_t smem) {
  auto bad = [&](const std::string& why) {
    throw SimError(std::string("cuconv simulator: invalid launch configuration of ") + name + ": " + why);
  };
  if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z) bad("zero-sized grid or block");
  if (uint64_t(block.x) * block.y * block.z > 1024) bad("more than 1024 threads per block");
  if (block.x > 1024 || block.y > 1024 || block.z > 64) bad("blockDim exceeds (1024, 1024, 64)");
  if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) bad("gridDim exceeds (2^31-1, 65535, 65535)");
  if (smem > kMaxSharedBytes && smem > optin_of(kernel))
    bad("dynamic shared memory above 48 KiB needs an opt-in attribute (cudaFuncAttributeMaxDynamicSharedMemorySize)");
}

}  // namespace

void syncthreads(const std::source_location& site) {
  Block& b = current_block();
  const int tid = tl_tid;
  std::unique_lock<std::mutex> lock(b.mu);
  if (b.abort.load()) throw Abort{};
  if (b.bar_arrived == 0) {
    b.bar_site = site;
    b.bar_first_tid = tid;
  } else if (!same_site(site, b.bar_site)) {
    b.fail_locked("cuconv simulator: threads of a block wait at different __syncthreads: " +
                  b.thread_name(b.bar_first_tid) + " at " + where(b.bar_site) + ", " + b.thread_name(tid) +
                  " at " + where(site));
    throw Abort{};
  }
  b.threads[tid].state = State::at_barrier;
  b.threads[tid].site = site;
  if (++b.bar_arrived == b.live) {
    b.complete_barrier_locked();
    return;
  }
  const uint32_t seen = b.bar_generation.load(std::memory_order_relaxed);
  b.threads[tid].blocked = true;
  ++b.blocked;
  b.check_progress_locked();
  lock.unlock();
  wait_generation(b, b.bar_generation, seen);
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const std::source_location& site) {
  Block& b = current_block();
  const int tid = tl_tid, lane = tid % 32;
  Warp& w = b.warps[tid / 32];
  std::unique_lock<std::mutex> lock(b.mu);
  if (b.abort.load()) throw Abort{};
  auto fail = [&](const std::string& why) {
    b.fail_locked("cuconv simulator: " + b.thread_name(tid) + " at " + where(site) + ": " + why);
    throw Abort{};
  };
  if (!(mask >> lane & 1u)) fail("the calling lane is not in the warp operation's mask");
  if (mask & ~w.valid) fail("the mask names lanes beyond the end of the block");
  if (mask & w.exited) fail("the mask names lanes that have exited (lanes of one warp at different operations or masks?)");
  if (width < 1 || width > 32 || (width & (width - 1))) fail("width must be a power of 2 in [1, 32]");
  if (w.arrived == 0) {
    w.mask = mask;
    w.op = op;
    w.site = site;
  } else if (mask != w.mask || op != w.op || !same_site(site, w.site)) {
    fail("lanes of one warp meet at different warp operations or with different masks (other lanes at " +
         where(w.site) + ")");
  }
  w.value[lane] = value;
  w.arg[lane] = arg;
  w.width[lane] = width;
  w.arrived |= 1u << lane;
  b.threads[tid].state = State::at_warp;
  b.threads[tid].site = site;
  if (b.warp_complete(w)) {
    b.complete_warp_locked(w);
    return w.result[lane];
  }
  const uint32_t seen = w.generation.load(std::memory_order_relaxed);
  b.threads[tid].blocked = true;
  ++b.blocked;
  b.check_progress_locked();
  lock.unlock();
  wait_generation(b, w.generation, seen);
  return w.result[lane];  // written by the completing lane before its release
}

void warp_exchange(const void* mine, size_t bytes, void* all, const std::source_location& site) {
  if (bytes > 64) throw SimError("cuconv simulator: warp_exchange moves at most 64 bytes per lane");
  Block& b = current_block();
  Warp& w = b.warps[tl_tid / 32];
  std::memcpy(w.exchange + (tl_tid % 32) * 64, mine, bytes);
  warp_op(WarpOp::sync, 0xffffffffu, 0, 0, 32, site);  // every lane has written its slot
  for (int l = 0; l < 32; ++l) std::memcpy(static_cast<unsigned char*>(all) + l * bytes, w.exchange + l * 64, bytes);
  warp_op(WarpOp::sync, 0xffffffffu, 0, 0, 32, site);  // every lane has read before any slot is reused
}

void note_static_shared(const void* ptr, size_t bytes) {
  if (tl_tid != 0 || !tl_block) return;
  std::lock_guard<std::mutex> lock(tl_block->mu);  // check_shared reads the list from other threads
  auto& statics = tl_block->statics;
  for (const auto& s : statics)
    if (s.first == ptr) return;
  statics.emplace_back(const_cast<void*>(ptr), bytes);
}

void* dynamic_shared_memory() {
  Block& b = current_block();
  return b.dynamic_smem.empty() ? nullptr : b.dynamic_smem.data();
}

void check_aligned(const void* ptr, size_t bytes, const char* what) {
  if (reinterpret_cast<uintptr_t>(ptr) % bytes != 0) {
    std::ostringstream os;
    os << "misaligned " << what << " of " << bytes << " bytes at address " << ptr;
    throw SimError(os.str());
  }
}

void check_shared(const void* ptr, size_t bytes, const char* what) {
  Block& b = current_block();
  const auto* p = static_cast<const unsigned char*>(ptr);
  auto inside = [&](const void* base, size_t size) {
    const auto* lo = static_cast<const unsigned char*>(base);
    return p >= lo && p + bytes <= lo + size;
  };
  if (!b.dynamic_smem.empty() && inside(b.dynamic_smem.data(), b.dynamic_smem.size())) return;
  {
    std::lock_guard<std::mutex> lock(b.mu);
    for (const auto& s : b.statics)
      if (inside(s.first, s.second)) return;
  }
  std::ostringstream os;
  os << what << ": " << bytes << " bytes at " << ptr << " are not in the block's shared memory";
  throw SimError(os.str());
}

void cp_async(void* dst, const void* src, size_t cp_size, size_t src_size) {
  if (cp_size != 4 && cp_size != 8 && cp_size != 16) throw SimError("cp.async: cp-size must be 4, 8 or 16 bytes");
  if (src_size > cp_size) throw SimError("cp.async: src-size larger than cp-size");
  check_aligned(dst, cp_size, "cp.async shared destination");
  check_shared(dst, cp_size, "cp.async destination");
  ++tl_counts.cp_async_copies;
  tl_counts.cp_async_bytes += src_size;
  tl_counts.cp_async_zero_fill_bytes += cp_size - src_size;
  current_block().smem_writes[tl_tid].push_back({reinterpret_cast<uintptr_t>(dst), uint32_t(cp_size), SmemKind::cp_async});
  if (src_size > 0) check_aligned(src, cp_size, "cp.async global source");
  PendingCopy c{static_cast<unsigned char*>(dst), {}, cp_size, src_size, tl_copies.committed};
  if (src_size > 0) std::memcpy(c.data, src, src_size);
  std::memset(dst, 0xff, cp_size);  // undefined until the copy lands: poison
  tl_copies.pending.push_back(c);
}

void cp_async_commit() { ++tl_copies.committed; }

void cp_async_wait(int n) {
  if (n < 0) throw SimError("cp.async.wait_group: N must be non-negative");
  const uint64_t newest_kept = uint64_t(n) < tl_copies.committed ? tl_copies.committed - uint64_t(n) : 0;
  tl_copies.land_before(newest_kept);
}

Counters counters() {
  std::lock_guard<std::mutex> lock(counters_mu);
  return total_counters();
}
std::vector<LaunchCounters> launch_counters() {
  std::lock_guard<std::mutex> lock(counters_mu);
  return {launch_records().begin(), launch_records().end()};
}
void reset_counters() {
  std::lock_guard<std::mutex> lock(counters_mu);
  total_counters() = Counters{};
  launch_records().clear();
}

void count_mma(int m, int n, int k) {
  if (tl_tid % 32 != 0) return;
  ++tl_counts.mma_instructions;
  tl_counts.mma_flops += 2 * uint64_t(m) * uint64_t(n) * uint64_t(k);
}

void count_ldmatrix(const uint64_t* row_addresses, int matrices) {
  if (tl_tid % 32 != 0) return;
  thread_local std::vector<LaneAccess> rows;
  rows.clear();
  for (int l = 0; l < 8 * matrices; ++l) rows.push_back({l, uintptr_t(row_addresses[l]), 16});
  ++tl_counts.ldmatrix_accesses;
  tl_counts.ldmatrix_conflicts += bank_conflicts(rows);
}

void count_global_load(const void* src, size_t bytes) {
  if (src) tl_counts.staged_load_bytes += bytes;
}

void count_shared_store(const void* dst, size_t bytes) {
  current_block().smem_writes[tl_tid].push_back({reinterpret_cast<uintptr_t>(dst), uint32_t(bytes), SmemKind::store});
}

void set_block_order(const std::string& order) {
  order_seed(order);
  std::lock_guard<std::mutex> lock(settings().mu);
  settings().block_order = order;
}
std::string block_order() {
  std::lock_guard<std::mutex> lock(settings().mu);
  return settings().block_order;
}
void set_timeout_s(int64_t seconds) {
  if (seconds <= 0) throw SimError("the block timeout must be positive");
  std::lock_guard<std::mutex> lock(settings().mu);
  settings().timeout_s = seconds;
}
int64_t timeout_s() {
  std::lock_guard<std::mutex> lock(settings().mu);
  return settings().timeout_s;
}

void set_max_dynamic_shared(const void* kernel, size_t bytes) {
  std::lock_guard<std::mutex> lock(optin_mu);
  for (auto& o : optins())
    if (o.first == kernel) {
      o.second = bytes;
      return;
    }
  optins().emplace_back(kernel, bytes);
}

void launch_body(const char* kernel_name, const void* kernel, dim3 grid, dim3 block, size_t dynamic_smem_bytes,
                 const std::function<void()>& body) {
  check_config(kernel_name, kernel, grid, block, dynamic_smem_bytes);
  const size_t smem_limit = std::max(kMaxSharedBytes, optin_of(kernel));
  std::lock_guard<std::mutex> launch_lock(launch_mutex());
  const std::chrono::seconds timeout(timeout_s());
  const int nthreads = int(block.x * block.y * block.z);
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  Block b;
  b.block_dim = block;
  b.nthreads = nthreads;
  b.threads.resize(nthreads);
  b.nwarps = (nthreads + 31) / 32;
  b.warps.reset(new Warp[b.nwarps]);
  b.smem_writes.resize(nthreads);
  Counters launch_counts;
  launch_counts.launches = 1;
  // Static shared arrays of earlier launches were poisoned after their last block (below).
  std::vector<std::pair<void*, size_t>> statics;
  for (uint64_t linear : visiting_order(nblocks)) {
    b.block_idx = dim3(unsigned(linear % grid.x), unsigned(linear / grid.x % grid.y),
                       unsigned(linear / (uint64_t(grid.x) * grid.y)));
    b.live = nthreads;
    b.blocked = 0;
    b.bar_arrived = 0;
    b.bar_first_tid = -1;
    for (auto& t : b.threads) t = ThreadState{};
    for (int w = 0; w < b.nwarps; ++w) {
      Warp& warp = b.warps[w];
      const int lanes = std::min(32, nthreads - 32 * w);
      warp.valid = lanes == 32 ? ~0u : (1u << lanes) - 1;
      warp.exited = ~warp.valid;  // lanes past the end of the block never take part
      warp.arrived = 0;
    }
    b.dynamic_smem.assign(dynamic_smem_bytes, 0xff);  // NaN in every float type: reads before writes show
    b.statics.clear();
    b.counts = Counters{};
    for (auto& writes : b.smem_writes) writes.clear();
    if (!Pool::get().run(b, body, grid, timeout)) {
      {
        std::lock_guard<std::mutex> lock(b.mu);
        b.fail_locked("cuconv simulator: block timed out after " + std::to_string(timeout.count()) +
                      " s (cuconv.config sim_timeout_s):" + b.dump_locked());
      }
      if (!Pool::get().run_wait(std::chrono::seconds(10))) {
        std::fprintf(stderr, "%s\ncuconv simulator: threads are stuck in kernel code; aborting\n", b.error.c_str());
        std::abort();
      }
    }
    b.count_smem_writes_locked();  // the writes after the last barrier (every thread has exited)
    ++launch_counts.blocks;
    add_counters(launch_counts, b.counts);
    size_t static_bytes = 0;
    for (const auto& s : b.statics) {
      static_bytes += s.second;
      std::memset(s.first, 0xff, s.second);  // the next block must not see this block's values
    }
    if (b.error.empty() && static_bytes + dynamic_smem_bytes > smem_limit)
      b.error = "cuconv simulator: " + std::string(kernel_name) + " uses " + std::to_string(static_bytes) +
                " bytes of static and " + std::to_string(dynamic_smem_bytes) + " bytes of dynamic shared memory, above its " +
                std::to_string(smem_limit) + "-byte limit";
    if (!b.error.empty()) throw SimError(b.error);
  }
  std::lock_guard<std::mutex> lock(counters_mu);  // a failed launch adds nothing
  add_counters(total_counters(), launch_counts);
  launch_records().push_back({kernel_name, grid, block, dynamic_smem_bytes, launch_counts});
  if (launch_records().size() > kMaxLaunchRecords) launch_records().pop_front();
}

}  // namespace cuconv_sim
