#pragma once
// The tensor-core implicit-GEMM main loop shared by the tensor-core fprop, dgrad and wgrad kernels.
// Same Problem interface as implicit_gemm_mainloop.cuh (a_row/a_load, b_col/b_load, store; grid x =
// M tiles, y = groups x N tiles, z = split-K chunks of k_chunk), plus, for the operands loaded with
// cp.async, `const T* a_src(row, kk)` / `b_src(col, kk)`: the address of A[m, kk] / B[kk, n], or
// nullptr where the element is zero padding.
//
// Tiles: a block of WARPS_M x WARPS_N warps computes a BM x BN tile of C; each warp a (BM/WARPS_M) x
// (BN/WARPS_N) sub-tile of 16x8 mma.sync tiles (m16n8k16 for float16/bfloat16, m16n8k8 for float as
// TF32, float accumulation). The reduction runs in 32-deep slices through a ring of `stages` shared
// memory buffers (a run-time pipeline depth: the device's shared memory may allow fewer than the
// configuration asks for). Slices stages-1 ahead are in flight while the warps compute on the current
// one: cp.async for operands whose elements are 4 bytes or whose 16-byte runs are contiguous and
// aligned (zero padding by src-size 0), and register-staged loads otherwise (2-byte gathers, for
// which cp.async has no size): loaded into registers before the MMAs, stored after them.
//
// Shared memory holds each operand row-major along k ([m][k] for A, [n][k] for B; k-major for
// cp16_mn operands, TcOperandMn), as raw storage
// bits (float is rounded to TF32 when fragments are loaded). Rows are padded to 80 bytes (16-bit) or
// 144 bytes (float): 16-byte aligned for cp.async and ldmatrix, and the 8 rows an ldmatrix phase reads
// fall on 8 disjoint groups of 4 banks. Fragments come from ldmatrix.x4 for every type (a tf32 word
// is read as two 16-bit halves, which gives the tf32 fragment layout).
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cp_async.cuh"
#include "launch.cuh"
#include "ldmatrix.cuh"
#include "mma_sync.cuh"

namespace cuconv::kern {

constexpr int kTcBK = 32;  // reduction depth of one pipeline slice

// How one operand's slice reaches shared memory.
enum class TcLoad {
  sync_k,    // register-staged, each thread a run of 8 consecutive k of one row
  sync_row,  // register-staged, neighbouring threads take neighbouring rows (the contiguous direction)
  cp4_k,     // cp.async of single 4-byte elements, runs of 8 consecutive k
  cp4_row,   // cp.async of single 4-byte elements, neighbouring threads on neighbouring rows
  cp16,      // cp.async of 16 bytes: the problem guarantees each aligned 16-byte run along k is contiguous
  cp16_mn,   // cp.async of 16 bytes along the rows: neighbouring rows at one k are contiguous (the
             // shared tile is k-major; fragments by ldmatrix.trans, or word loads for TF32; TcOperandMn)
};

// The tensor-core kind for a storage type (float runs as TF32).
template <typename T> constexpr mma::Kind tc_kind() {
  if constexpr (std::is_same_v<T, half_t>) return mma::Kind::f16;
  else if constexpr (std::is_same_v<T, bfloat16_t>) return mma::Kind::bf16;
  else return mma::Kind::tf32;
}
// Shared-memory element: the storage bits of T.
template <typename T> using tc_elem_t = std::conditional_t<sizeof(T) == 2, uint16_t, uint32_t>;
// Row stride of a shared tile in elements: 32 + 8 (16-bit: 80 bytes) or 32 + 4 (float: 144 bytes).
template <typename T> constexpr int tc_smem_stride() { return kTcBK + (sizeof(T) == 2 ? 8 : 4); }

#if defined(__CUDACC__)
CUCONV_DEVICE uint32_t tc_float_bits(float v) { return __float_as_uint(v); }
CUCONV_DEVICE float tc_bits_float(uint32_t v) { return __uint_as_float(v); }
#else
inline uint32_t tc_float_bits(float v) { return std::bit_cast<uint32_t>(v); }
inline float tc_bits_float(uint32_t v) { return std::bit_cast<float>(v); }
#endif

// A block tile: BM x BN outputs, WARPS_M x WARPS_N warps.
template <int BM_, int BN_, int WARPS_M_, int WARPS_N_>
struct TcTile {
  static constexpr int BM = BM_, BN = BN_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_;
  static constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // warp tile
  static constexpr int MI = WM / 16, NJ = WN / 8;             // 16x8 MMA tiles per warp
  static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tiles of whole m16 tiles and pairs of n8 tiles (ldmatrix.x4)");
};

// ------------------------------------------------------------------ the configuration table
// Every entry is reached by tests (tests/test_tensorcore.py forces each one and checks the chooser).
enum TcConfigId : int {
  kTcLarge = 0,
  kTcMedium = 1,
  kTcNarrow = 2,
  kTcSmallChannel = 3,
  kTcWide = 4,
  kTcTall = 5,
  kTcConfigCount = 6
};
struct TcConfig {
  const char* name;
  int bm, bn, warps_m, warps_n, stages;  // stages: the pipeline depth asked for
};
inline constexpr TcConfig kTcConfigs[kTcConfigCount] = {
    {"large", 128, 64, 4, 2, 3},          // many output tiles: big tiles, 3-deep pipeline
    {"medium", 64, 64, 2, 2, 3},          // too few large tiles to fill the device
    {"narrow", 64, 32, 2, 2, 3},          // at most 32 GEMM columns (few output channels)
    {"small_channel", 128, 64, 4, 2, 1},  // reduction of one slice (C_in = 3 first layer: 27): no pipeline,
                                          // half the shared memory of `large`, so more blocks per SM
    {"wide", 128, 128, 2, 2, 3},          // many output tiles, 16-bit operands both by 16-byte copies: 64x64 warp
                                          // tiles, 64 MMAs per warp and slice for the same fixed cost of
                                          // issuing copies, barriers and the loop that 16 MMAs carry in a
                                          // `large` tile's 32x32 warp tiles
    {"tall", 128, 64, 2, 2, 3},           // the large tile's outputs in 4 warps of 64x32 (32 MMAs per warp and
                                          // slice), for operands both by 16-byte copies: 16-bit where 64 columns
                                          // would leave a wide tile half padding, and TF32 (no wide tile)
};

constexpr int kTcMaxStages = 3;  // the kernel's prologue is unrolled to this depth
static_assert(kTcConfigs[kTcLarge].stages <= kTcMaxStages && kTcConfigs[kTcMedium].stages <= kTcMaxStages &&
                  kTcConfigs[kTcNarrow].stages <= kTcMaxStages && kTcConfigs[kTcSmallChannel].stages <= kTcMaxStages &&
                  kTcConfigs[kTcWide].stages <= kTcMaxStages && kTcConfigs[kTcTall].stages <= kTcMaxStages,
              "pipeline depths within the unrolled prologue");

// Bytes of one pipeline stage (A and B slices) for elements of `elem_bytes` bytes.
inline int64_t tc_stage_bytes(int config, int elem_bytes) {
  const TcConfig& c = kTcConfigs[config];
  return int64_t(c.bm + c.bn) * (kTcBK + (elem_bytes == 2 ? 8 : 4)) * elem_bytes;
}

struct TcPlan {
  int config, stages;
};

// Whether tiles of `tile` along a dimension of n would be more than an eighth padding: MMAs on
// padding are issued and thrown away, so a narrower tile is taken (grad weight's 64 output channels
// on 128-row tiles, or 147 columns of a 7x7 stem on 64-wide ones, would waste a quarter to a half).
inline bool tc_pads_over_an_eighth(int64_t n, int64_t tile) { return (ceil_div(n, tile) * tile - n) * 8 > n; }

// The configuration for a GEMM of M x Ncols x Kdim run as `launches` independent GEMMs (groups, split-K
// chunks) on device d; `forced` >= 0 picks a table entry (tests). `async16`: both operands go by
// 16-byte copies, which the wide tile (with 16-bit elements) and the tall one need (register-staged
// loads would hold a slice's values in registers beside the accumulators, and spill); a wide or tall
// tile asked for without them runs as the large one. Stages shrink to what the device's per-block shared memory opt-in holds; a
// tile whose single stage does not fit gives way to a smaller one.
inline TcPlan tc_plan(int64_t M, int64_t Ncols, int64_t Kdim, int64_t launches, int elem_bytes, bool async16,
                      const DeviceProps& d, int forced = -1) {
  auto blocks = [&](int c) {
    return launches * ceil_div<int64_t>(M, kTcConfigs[c].bm) * ceil_div<int64_t>(Ncols, kTcConfigs[c].bn);
  };
  // TF32 holds twice the runs per thread and converts its fragments: at 64x64 warp tiles it spills;
  // at 64x32 (tall) it fits, both operands by 16-byte copies, as 16-bit does.
  const bool wide_fits = async16 && elem_bytes == 2, tall_fits = async16;
  int config = (forced == kTcWide && !wide_fits) || (forced == kTcTall && !tall_fits) ? int(kTcLarge) : forced;
  if (config < 0 || config >= kTcConfigCount) {
    const bool m_fills_128 = !tc_pads_over_an_eighth(M, kTcConfigs[kTcLarge].bm);
    if (Kdim <= kTcBK) config = kTcSmallChannel;
    else if (Ncols <= 32 || tc_pads_over_an_eighth(Ncols, kTcConfigs[kTcMedium].bn)) config = kTcNarrow;
    else if (wide_fits && blocks(kTcWide) >= 2 * int64_t(d.sm_count) && m_fills_128 &&
             !tc_pads_over_an_eighth(Ncols, kTcConfigs[kTcWide].bn))
      config = kTcWide;
    else if (blocks(kTcLarge) >= 2 * int64_t(d.sm_count) && m_fills_128) config = tall_fits ? kTcTall : kTcLarge;
    else config = kTcMedium;
  }
  for (int c : {config, int(kTcMedium), int(kTcNarrow)}) {
    const int64_t stage = tc_stage_bytes(c, elem_bytes);
    if (stage > d.smem_per_block_optin) continue;
    int stages = kTcConfigs[c].stages;
    while (stages > 1 && stages * stage > d.smem_per_block_optin) --stages;
    return {c, stages};
  }
  return {kTcNarrow, 1};  // below any tensor-core device's shared memory; the launch reports it
}

// ------------------------------------------------------------------ operand loading

template <class Problem, bool IS_A>
using TcCtx = std::conditional_t<IS_A, typename Problem::RowCtx, typename Problem::ColCtx>;

// Optional, for problems whose two operands both go by 16-byte copies (the tap walk): a position
// along the reduction, `APos a_pos(kk)` (decoded once), `void a_pos_next(APos&)` (the position one
// slice on, by adds), `bool a_at(const RowCtx&, const APos&, const T*& src)` (A's run: its address,
// false for zero padding), and B's run at `b_base(const ColCtx&) + b_offset(const APos&)`, columns
// `b_col_stride()` elements apart (whichever column a context is for). A thread's
// runs of A and of B all sit at one reduction index (k_of depends on neither the run nor the
// operand), so the kernel keeps one position per thread, stepped once per slice: a run costs its
// address, its range checks and its copy.
template <class Problem, class = void>
struct has_tap_walk : std::false_type {};
template <class Problem>
struct has_tap_walk<Problem, std::void_t<decltype(&Problem::a_pos_next), decltype(&Problem::b_base)>> : std::true_type {};

// The walk's position type: the problem's APos where it has one, else a placeholder.
template <class Problem>
CUCONV_DEVICE auto tc_walk_pos(const Problem&) {
  if constexpr (has_tap_walk<Problem>::value) return typename Problem::APos{};
  else return 0;
}

// A channels_last problem's row context with `origin`, the address of the row's first tap's run
// (a_at adds a tap's APos offset to it); the base row context as it is otherwise.
template <class Row, typename T>
struct RowWithOrigin : Row {
  const T* origin = nullptr;
};
template <bool CL, class Row, typename T>
using RowWithOriginIf = std::conditional_t<CL, RowWithOrigin<Row, T>, Row>;
// The row `base` with its origin from `origin_of(base)` (channels_last), or `base` itself.
template <bool CL, typename T, class Row, class OriginOf>
CUCONV_DEVICE RowWithOriginIf<CL, Row, T> with_origin(const Row& base, OriginOf origin_of) {
  if constexpr (CL) {
    RowWithOrigin<Row, T> row;
    static_cast<Row&>(row) = base;
    row.origin = origin_of(base);
    return row;
  } else {
    return base;
  }
}

// One operand's share of a slice for one thread: which rows and k it loads, its row contexts, and
// the registers of register-staged loads.
template <class Problem, typename T, bool IS_A, int ROWS, int THREADS, TcLoad L>
struct TcOperand {
  using Elem = tc_elem_t<T>;
  static constexpr bool kAsync = L == TcLoad::cp4_k || L == TcLoad::cp4_row || L == TcLoad::cp16;
  static constexpr bool kRowFast = L == TcLoad::sync_row || L == TcLoad::cp4_row;
  static constexpr int kRun = L == TcLoad::cp16 ? 16 / int(sizeof(T)) : kRowFast ? 1 : 8;  // consecutive k
  static constexpr int kRunsPerRow = kTcBK / kRun;
  static constexpr int kChunks = ROWS * kTcBK / (THREADS * kRun);  // runs per thread
  static constexpr int kCtx = kRowFast ? 1 : kChunks;                // distinct rows per thread
  static constexpr int kStaged = kAsync ? 1 : kChunks * kRun;
  static constexpr int kStride = tc_smem_stride<T>();
  static constexpr bool kWalk = L == TcLoad::cp16 && has_tap_walk<Problem>::value;  // may take part in a tap walk
  static_assert(ROWS * kTcBK % (THREADS * kRun) == 0, "whole runs per thread");
  static_assert(kRowFast ? THREADS % ROWS == 0 : THREADS % kRunsPerRow == 0, "a fixed row set per thread");
  static_assert(!(kAsync && L != TcLoad::cp16 && sizeof(T) != 4), "cp.async has no 2-byte size");

  TcCtx<Problem, IS_A> ctx[kCtx];
  bool ok[kCtx];
  Elem staged[kStaged];

  // cp16 runs of 16-bit elements are 16 bytes, four to a row: a warp's 32 copies cover 8 rows, and
  // a 16-byte access goes to shared memory 8 lanes at a time. Lanes 8i..8i+7 take run i of the 8
  // rows, whose 80-byte pitch puts the 8 runs in 8 different bank quads; row-major (two rows of four
  // runs per 8 lanes) would put two runs in one quad. Register-staged runs keep row-major: their
  // stores are a few per slice, and the mapping's index math would sit in their main loops.
  static constexpr bool kColumnsOf8Rows = L == TcLoad::cp16 && kRunsPerRow == 4;
  static_assert(!kColumnsOf8Rows || (THREADS % 32 == 0 && ROWS % 8 == 0), "whole warps over whole 8-row groups");
  static CUCONV_DEVICE int row_of(int tid, int c) {
    const int i = tid + c * THREADS;
    if constexpr (kColumnsOf8Rows) return (i / 32) * 8 + i % 8;
    return kRowFast ? tid % ROWS : i / kRunsPerRow;
  }
  static CUCONV_DEVICE int k_of(int tid, int c) {
    const int i = tid + c * THREADS;
    if constexpr (kColumnsOf8Rows) return ((i / 8) % 4) * kRun;
    return kRowFast ? tid / ROWS + c * (THREADS / ROWS) : (i % kRunsPerRow) * kRun;
  }

  int n_ok = 0;  // runs inside the operand (rows grow with c, so ok[c] is c < n_ok): one compare a run

  CUCONV_DEVICE void init(const Problem& prob, int64_t g, int64_t base, int64_t limit, int tid) {
    CUCONV_UNROLL
    for (int c = 0; c < kCtx; ++c) {
      const int64_t r = base + row_of(tid, c);
      ok[c] = r < limit;
      n_ok += ok[c];
      // The tap walk forms a run's address before its range checks (a_at, b_base): a row past the
      // edge then takes the tile's first row's context (inside: the grid covers the rows), so that
      // every address lies in the tensor, read or not.
      if (ok[c] || kWalk) {
        if constexpr (IS_A) ctx[c] = prob.a_row(g, ok[c] ? r : base);
        else ctx[c] = prob.b_col(g, ok[c] ? r : base);
      }
    }
  }

  static CUCONV_DEVICE Elem to_elem(float v) {
    if constexpr (sizeof(T) == 2) return mma::bits16(from_float<T>(v));  // exact: v is a T widened
    else return tc_float_bits(v);
  }
  CUCONV_DEVICE float value(const Problem& prob, int c, int64_t kk) const {
    if constexpr (IS_A) return float(prob.a_load(ctx[c], kk));
    else return float(prob.b_load(ctx[c], kk));
  }
  CUCONV_DEVICE const T* src(const Problem& prob, int c, int64_t kk) const {
    if constexpr (IS_A) return prob.a_src(ctx[c], kk);
    else return prob.b_src(ctx[c], kk);
  }

  // The tap walk's B addresses: run c's column is run 0's plus c * (THREADS / kRunsPerRow), and
  // columns lie b_col_stride() elements apart, so one base and a uniform step address every run.
  const T* base0 = nullptr;
  int64_t run_step = 0;
  CUCONV_DEVICE void walk_bases(const Problem& prob) {
    base0 = prob.b_base(ctx[0]);
    run_step = (THREADS / kRunsPerRow) * prob.b_col_stride();
  }
  // gather for a problem with has_tap_walk: this thread's runs at position `pos` (k_in: the position
  // lies inside the chunk's reduction). A run that reads nothing (zero padding, past the edge) passes
  // its address unread: src-size 0 copies no byte (cp_async.cuh).
  template <class Pos>
  CUCONV_DEVICE void gather_at(const Problem& prob, Elem* tile, int tid, const Pos& pos, bool k_in) {
    Elem* dst = tile + row_of(tid, 0) * kStride + k_of(tid, 0);
    const int n_in = k_in ? n_ok : 0;
    // row_of(tid, c + 1) - row_of(tid, c), times kStride (THREADS is a multiple of kRunsPerRow)
    constexpr int kRowStep = (THREADS / kRunsPerRow) * kStride;
    if constexpr (IS_A) {
      CUCONV_UNROLL
      for (int c = 0; c < kChunks; ++c) {
        const T* s = nullptr;
        const bool in = prob.a_at(ctx[c], pos, s) && c < n_in;
        async::copy<16>(dst + c * kRowStep, s, in);
      }
    } else {
      const int64_t offset = prob.b_offset(pos);
      CUCONV_UNROLL
      for (int c = 0; c < kChunks; ++c) async::copy<16>(dst + c * kRowStep, base0 + (offset + c * run_step), c < n_in);
    }
  }
  // Starts the slice [k0, k0 + 32) ∩ [.., k_end) towards `tile` ([ROWS][kStride]): issues the
  // cp.async copies, or loads the register-staged values. `any` is a valid global address for the
  // zero-filling copies, which read nothing.
  CUCONV_DEVICE void gather(const Problem& prob, Elem* tile, int tid, int64_t k0, int64_t k_end, const T* any) {
    CUCONV_UNROLL
    for (int c = 0; c < kChunks; ++c) {
      const int cc = kRowFast ? 0 : c, row = row_of(tid, c), k = k_of(tid, c);
      if constexpr (L == TcLoad::cp16) {
        const int64_t kk = k0 + k;  // the problem keeps 16-byte runs inside [.., k_end) or wholly outside
        const T* s = (ok[cc] && kk < k_end) ? src(prob, cc, kk) : nullptr;
        async::copy<16>(tile + row * kStride + k, s ? s : any, s != nullptr);
      } else {
        CUCONV_UNROLL
        for (int e = 0; e < kRun; ++e) {
          const int64_t kk = k0 + k + e;
          if constexpr (kAsync) {
            const T* s = (ok[cc] && kk < k_end) ? src(prob, cc, kk) : nullptr;
            async::copy<4>(tile + row * kStride + k + e, s ? s : any, s != nullptr);
          } else {
            staged[c * kRun + e] = to_elem((ok[cc] && kk < k_end) ? value(prob, cc, kk) : 0.f);
            if constexpr (kSimulator)
              if (ok[cc] && kk < k_end) sim_count_global_load(src(prob, cc, kk), sizeof(T));
          }
        }
      }
    }
  }
  // Register-staged values to shared memory (nothing for cp.async operands).
  CUCONV_DEVICE void scatter(Elem* tile, int tid) const {
    if constexpr (!kAsync) {
      CUCONV_UNROLL
      for (int c = 0; c < kChunks; ++c) {
        const int row = row_of(tid, c), k = k_of(tid, c);
        // A run of k is one vector store in the SASS (STS.128 for 8 16-bit values).
        if constexpr (kSimulator) sim_count_shared_store(tile + row * kStride + k, kRun * sizeof(Elem));
        CUCONV_UNROLL
        for (int e = 0; e < kRun; ++e) tile[row * kStride + k + e] = staged[c * kRun + e];
      }
    }
  }
};

// One operand's share of a slice when neighbouring rows (output channels, input channels) at one
// reduction index are contiguous in memory, as grad weight's operands are in channels_last: each
// 16-byte copy moves a run of kRun rows (8 16-bit, 4 float) at one k. The tile is k-major,
// [kTcBK][ROWS], and a thread's runs all sit at one k (k_of), so a thread keeps one reduction
// position, stepped by adds once per slice (the problem's mn_pos / mn_pos_next; see has_mn_walk).
// The 16-byte run j of k row k is stored at run j ^ swizzle(k), no padding: the 8 rows an
// ldmatrix.trans phase reads (16-bit: k .. k+7 at one run), the 32 words a warp's TF32 fragment load
// reads (float: k rows t and runs of g), and the 8 copies of a quarter-warp (two k rows of 4 runs,
// or one of 8) each fall on distinct banks.
template <class Problem, typename T, bool IS_A, int ROWS, int THREADS>
struct TcOperandMn {
  using Elem = tc_elem_t<T>;
  static constexpr int kRun = 16 / int(sizeof(T));     // rows per 16-byte run
  static constexpr int kTpk = THREADS / kTcBK;        // threads per k row
  static constexpr int kChunks = ROWS / kRun / kTpk;  // runs per thread
  static_assert(ROWS / kRun >= 8 && ROWS % (kRun * kTpk) == 0 && THREADS % kTcBK == 0,
                "at least 8 runs per k row (the swizzle's 8 bank groups), whole runs per thread");

  static CUCONV_DEVICE int k_of(int tid) { return tid / kTpk; }
  static CUCONV_DEVICE int run_of(int tid, int c) { return tid % kTpk + c * kTpk; }
  // The low 3 bits of k reversed: a permutation of the 8 bank groups over 8 consecutive k; k rows
  // 2i and 2i+1 on opposite halves (a quarter-warp's copies); k rows t = 0..3 (and 4..7) on distinct
  // pairs of groups (a TF32 fragment's 4 k rows of 2 runs).
  static CUCONV_DEVICE int swizzle(int k) { return ((k & 1) << 2) | (k & 2) | ((k >> 2) & 1); }
  // Element offset of run `run` of k row `k` in the tile, and of row `row` of k row `k`.
  static CUCONV_DEVICE int offset(int k, int run) { return k * ROWS + (run ^ swizzle(k)) * kRun; }
  static CUCONV_DEVICE int element(int k, int row) { return offset(k, row / kRun) + row % kRun; }

  TcCtx<Problem, IS_A> ctx[kChunks];
  int n_ok = 0;  // runs inside the operand (rows grow with c)

  CUCONV_DEVICE void init(const Problem& prob, int64_t g, int64_t base, int64_t limit, int tid) {
    CUCONV_UNROLL
    for (int c = 0; c < kChunks; ++c) {
      // The problem keeps runs wholly inside or outside [.., limit). A run past the edge
      // keeps its own context: its address is formed, never read (src-size 0 reads no byte), and
      // the runs' contexts stay a constant apart where the rows are (grad_output's channels), so
      // one address and immediate offsets serve them all.
      const int64_t r = base + kRun * run_of(tid, c);
      n_ok += r < limit;
      if constexpr (IS_A) ctx[c] = prob.a_row(g, r);
      else ctx[c] = prob.b_col(g, r);
    }
  }
  // This thread's runs at position `pos` (k_in: the position lies inside the chunk's reduction). A run
  // that reads nothing passes its address unread: src-size 0 copies no byte.
  template <class Pos>
  CUCONV_DEVICE void gather_at(const Problem& prob, Elem* tile, int tid, const Pos& pos, bool k_in) {
    const int k = k_of(tid), n_in = k_in ? n_ok : 0;
    CUCONV_UNROLL
    for (int c = 0; c < kChunks; ++c) {
      const T* s = nullptr;
      bool in;
      if constexpr (IS_A) in = prob.a_at_mn(ctx[c], pos, s);
      else in = prob.b_at_mn(ctx[c], pos, s);
      async::copy<16>(tile + offset(k, run_of(tid, c)), s, in && c < n_in);
    }
  }
};

// Problems whose operands both go by cp16_mn provide the walk over the reduction: `MnPos mn_pos(kk)`
// (decoded once), `void mn_pos_next(MnPos&)` (kTcBK positions on, by adds), and each operand's run at a
// position, `bool a_at_mn(const RowCtx&, const MnPos&, const T*& src)` / `b_at_mn(const ColCtx&, ...)`
// (its address; false for zero padding).
template <class Problem, class = void>
struct has_mn_walk : std::false_type {};
template <class Problem>
struct has_mn_walk<Problem, std::void_t<decltype(&Problem::mn_pos_next)>> : std::true_type {};
template <class Problem>
CUCONV_DEVICE auto tc_mn_pos(const Problem&) {
  if constexpr (has_mn_walk<Problem>::value) return typename Problem::MnPos{};
  else return 0;
}

// Optional, for problems whose output row m has one place to decode: `Row out_row(g, split, m)` and
// `void store_at(const Row&, g, n, float v)` (column n of that row). The epilogue then decodes a
// thread's 2 * MI rows once each instead of every one of its outputs (64 to 256 stores).
template <class Problem, class = void>
struct has_row_store : std::false_type {};
template <class Problem>
struct has_row_store<Problem, std::void_t<decltype(&Problem::out_row)>> : std::true_type {};

// The operand type of load mode L.
template <class Problem, typename T, bool IS_A, int ROWS, int THREADS, TcLoad L>
using TcOperandOf = std::conditional_t<L == TcLoad::cp16_mn, TcOperandMn<Problem, T, IS_A, ROWS, THREADS>,
                                       TcOperand<Problem, T, IS_A, ROWS, THREADS, L>>;

// ------------------------------------------------------------------ the kernel
// `Build` is the launch stream type: the nvcc and simulator builds of one kernel then differ in their
// mangled names, so the two never collide at link time. Launch bounds with a minimum of one block per
// SM: without it ptxas caps some instantiations at an occupancy-driven register budget (128 or 168) and
// spills 8-32 bytes to the stack; the audit (python -m cuconv audit --check) fails on any local memory.
template <class Problem, typename T, class Tile, TcLoad LA, TcLoad LB, class Build>
__global__ void __launch_bounds__(Tile::kThreads, 1) implicit_gemm_tensorcore_kernel(const Problem prob, const T* a_any,
                                                                                   const T* b_any, int stages) {
  constexpr mma::Kind K = tc_kind<T>();
  constexpr bool kTf32 = K == mma::Kind::tf32;
  constexpr int kStride = tc_smem_stride<T>(), kMmaK = kTf32 ? 8 : 16;
  using Elem = tc_elem_t<T>;
  constexpr int kPer16B = 16 / int(sizeof(Elem));  // elements per 16-byte ldmatrix row
  constexpr int kStageElems = (Tile::BM + Tile::BN) * kStride;
  Elem* smem = dynamic_smem<Elem>();

  const int tid = int(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int wm = (warp % Tile::WARPS_M) * Tile::WM, wn = (warp / Tile::WARPS_M) * Tile::WN;
  // 32-bit: a 64-bit division is a subroutine call on the GPU (see fast_divmod.cuh); gridDim.y < 2^16.
  const uint32_t n_tiles = uint32_t(ceil_div<int64_t>(prob.Ncols, Tile::BN));
  const int64_t grp = prob.group_base + int64_t(blockIdx.y / n_tiles);
  const int64_t m0 = int64_t(blockIdx.x) * Tile::BM, n0 = int64_t(blockIdx.y % n_tiles) * Tile::BN;
  const int64_t k_begin = int64_t(blockIdx.z) * prob.k_chunk;
  const int64_t k_end = prob.Kdim < k_begin + prob.k_chunk ? prob.Kdim : k_begin + prob.k_chunk;
  const int64_t slices = k_end > k_begin ? ceil_div<int64_t>(k_end - k_begin, kTcBK) : 0;

  TcOperandOf<Problem, T, true, Tile::BM, Tile::kThreads, LA> a_op;
  TcOperandOf<Problem, T, false, Tile::BN, Tile::kThreads, LB> b_op;
  a_op.init(prob, grp, m0, prob.M, tid);
  b_op.init(prob, grp, n0, prob.Ncols, tid);
  auto a_tile = [&](int s) { return smem + s * kStageElems; };
  auto b_tile = [&](int s) { return smem + s * kStageElems + Tile::BM * kStride; };
  // The tap walk (has_tap_walk): this thread's reduction index in the next slice to gather, and its
  // position; gathers run slice after slice, each once. 32-bit: the walk's problems (forward, grad
  // input) reduce over one filter, below 2^31 (Conv2dIndexParams).
  constexpr bool kTapWalk = LA == TcLoad::cp16 && LB == TcLoad::cp16 && has_tap_walk<Problem>::value;
  struct TapWalk {
    int32_t kk = 0;
    decltype(tc_walk_pos(prob)) pos{};
  } walk;
  const int32_t walk_end = int32_t(k_end);
  if constexpr (kTapWalk) {
    static_assert(decltype(a_op)::kRun == decltype(b_op)::kRun, "k_of: one reduction index for A and B");
    walk.kk = int32_t(k_begin) + decltype(a_op)::k_of(tid, 0);
    if (slices > 0) walk.pos = prob.a_pos(walk.kk < walk_end ? walk.kk : k_begin);
    b_op.walk_bases(prob);
  }
  // The walk of cp16_mn operands (has_mn_walk): likewise one position per thread, at k_of(tid).
  constexpr bool kMnWalk = LA == TcLoad::cp16_mn;
  static_assert(kMnWalk == (LB == TcLoad::cp16_mn) && (!kMnWalk || has_mn_walk<Problem>::value),
                "cp16_mn takes both operands, of a problem with the walk");
  struct MnWalk {
    int64_t kk = 0;
    decltype(tc_mn_pos(prob)) pos{};
  } mn_walk;
  if constexpr (kMnWalk) {
    mn_walk.kk = k_begin + decltype(a_op)::k_of(tid);
    if (slices > 0) mn_walk.pos = prob.mn_pos(mn_walk.kk < k_end ? mn_walk.kk : k_begin);
  }
  auto gather = [&](int s, int64_t slice) {
    if constexpr (kMnWalk) {
      const bool k_in = mn_walk.kk < k_end;
      a_op.gather_at(prob, a_tile(s), tid, mn_walk.pos, k_in);
      b_op.gather_at(prob, b_tile(s), tid, mn_walk.pos, k_in);
      prob.mn_pos_next(mn_walk.pos);
      mn_walk.kk += kTcBK;
    } else if constexpr (kTapWalk) {
      const bool k_in = walk.kk < walk_end;
      a_op.gather_at(prob, a_tile(s), tid, walk.pos, k_in);
      b_op.gather_at(prob, b_tile(s), tid, walk.pos, k_in);
      prob.a_pos_next(walk.pos);
      walk.kk += kTcBK;
    } else {
      const int64_t k0 = k_begin + slice * kTcBK;
      a_op.gather(prob, a_tile(s), tid, k0, k_end, a_any);
      b_op.gather(prob, b_tile(s), tid, k0, k_end, b_any);
    }
  };
  auto scatter = [&](int s) {
    if constexpr (!kMnWalk) {
      a_op.scatter(a_tile(s), tid);
      b_op.scatter(b_tile(s), tid);
    }
  };

  mma::FragC acc[Tile::MI][Tile::NJ];
  CUCONV_UNROLL
  for (int i = 0; i < Tile::MI; ++i)
    CUCONV_UNROLL
    for (int j = 0; j < Tile::NJ; ++j)
      CUCONV_UNROLL
      for (int e = 0; e < 4; ++e) acc[i][j].x[e] = 0.f;

  // cp16_mn: each lane's fragment offsets in a stage at ks = 0 (the swizzle makes them a permutation,
  // not a stride); ks adds ks rows (swizzle(k) depends on k % 8 alone), so every fragment load of a
  // slice is one of these plus a constant. 16-bit: one ldmatrix.trans row per A tile and per pair of B
  // tiles. TF32 (ldmatrix.trans has no 32-bit form): one word per fragment register, A (g | g+8, t |
  // t+4) and B (t | t+4, g) as the m16n8k8 layout places them.
  constexpr bool kMn16 = kMnWalk && !kTf32, kMn32 = kMnWalk && kTf32;
  int a_frag[kMn16 ? Tile::MI : 1] = {}, b_frag[kMn16 ? Tile::NJ / 2 : 1] = {};
  int a_word[kMn32 ? Tile::MI : 1][4] = {}, b_word[kMn32 ? Tile::NJ : 1][2] = {};
  if constexpr (kMn16) {
    CUCONV_UNROLL
    for (int i = 0; i < Tile::MI; ++i)
      a_frag[i] = decltype(a_op)::offset((lane / 16) * 8 + lane % 8, (wm + 16 * i) / 8 + (lane / 8) % 2);
    CUCONV_UNROLL
    for (int j = 0; j < Tile::NJ; j += 2)
      b_frag[j / 2] = decltype(b_op)::offset(((lane / 8) % 2) * 8 + lane % 8, (wn + 8 * j) / 8 + lane / 16);
  } else if constexpr (kMn32) {
    const int g = lane / 4, t = lane % 4;
    CUCONV_UNROLL
    for (int i = 0; i < Tile::MI; ++i)
      CUCONV_UNROLL
      for (int e = 0; e < 4; ++e)
        a_word[i][e] = decltype(a_op)::element(t + 4 * (e / 2), wm + 16 * i + g + 8 * (e % 2));
    CUCONV_UNROLL
    for (int j = 0; j < Tile::NJ; ++j)
      CUCONV_UNROLL
      for (int e = 0; e < 2; ++e) b_word[j][e] = decltype(b_op)::element(t + 4 * e, wn + 8 * j + g);
  }

  // The MMAs of one slice, fragments by ldmatrix.x4: A matrices (rows 0-7 | 8-15) x (k lo | hi) from
  // lanes 0-7, 8-15, 16-23, 24-31; B matrices (n 0-7, k lo), (n 0-7, k hi), (n 8-15, k lo), (n 8-15, k hi).
  auto compute = [&](int s) {
    const Elem* As = a_tile(s);
    const Elem* Bs = b_tile(s);
    CUCONV_UNROLL
    for (int ks = 0; ks < kTcBK; ks += kMmaK) {
      mma::FragA a[Tile::MI];
      mma::FragB b[Tile::NJ];
      if constexpr (kMn32) {
        CUCONV_UNROLL
        for (int i = 0; i < Tile::MI; ++i)
          CUCONV_UNROLL
          for (int e = 0; e < 4; ++e) a[i].x[e] = As[a_word[i][e] + ks * Tile::BM];
        CUCONV_UNROLL
        for (int j = 0; j < Tile::NJ; ++j)
          CUCONV_UNROLL
          for (int e = 0; e < 2; ++e) b[j].x[e] = Bs[b_word[j][e] + ks * Tile::BN];
      } else {
        CUCONV_UNROLL
        for (int i = 0; i < Tile::MI; ++i) {
          if constexpr (kMn16) {  // k-major: matrices (k lo | hi) x (rows 0-7 | 8-15), transposed
            ldmatrix<4, true>(a[i].x, As + a_frag[i] + ks * Tile::BM);
          } else {
            ldmatrix<4>(a[i].x, As + (wm + 16 * i + lane % 16) * kStride + ks + (lane / 16) * kPer16B);
          }
        }
        CUCONV_UNROLL
        for (int j = 0; j < Tile::NJ; j += 2) {
          uint32_t r[4];
          if constexpr (kMn16) {
            ldmatrix<4, true>(r, Bs + b_frag[j / 2] + ks * Tile::BN);
          } else {
            ldmatrix<4>(r, Bs + (wn + 8 * j + lane % 8 + (lane / 16) * 8) * kStride + ks + ((lane / 8) % 2) * kPer16B);
          }
          b[j].x[0] = r[0];
          b[j].x[1] = r[1];
          b[j + 1].x[0] = r[2];
          b[j + 1].x[1] = r[3];
        }
      }
      if constexpr (kTf32) {  // rounded to tf32 (to nearest even) from the raw float bits
        CUCONV_UNROLL
        for (int i = 0; i < Tile::MI; ++i)
          CUCONV_UNROLL
          for (int e = 0; e < 4; ++e) a[i].x[e] = mma::to_tf32(tc_bits_float(a[i].x[e]));
        CUCONV_UNROLL
        for (int j = 0; j < Tile::NJ; ++j)
          CUCONV_UNROLL
          for (int e = 0; e < 2; ++e) b[j].x[e] = mma::to_tf32(tc_bits_float(b[j].x[e]));
      }
      CUCONV_UNROLL
      for (int i = 0; i < Tile::MI; ++i)
        CUCONV_UNROLL
        for (int j = 0; j < Tile::NJ; ++j) mma::mma_sync<K>(acc[i][j], a[i], b[j], acc[i][j]);
    }
  };

  if (stages == 1) {
    for (int64_t kt = 0; kt < slices; ++kt) {
      gather(0, kt);
      scatter(0);
      async::commit();
      async::wait<0>();
      __syncthreads();  // the slice is complete and visible
      compute(0);
      __syncthreads();  // every warp is done with it before the next overwrites it
    }
  } else {
    // Prologue: slices 0 .. stages-2 in flight, one commit group each. Unrolled to the deepest
    // pipeline: with a run-time trip count ptxas leaves this loop through a CALL, around which it
    // keeps live values on the stack.
    CUCONV_UNROLL
    for (int s = 0; s < kTcMaxStages - 1; ++s) {
      if (s < stages - 1) {
        if (s < slices) {
          gather(s, s);
          scatter(s);
        }
        async::commit();
      }
    }
    // Ring positions of slice kt and of slice kt + stages - 1 (the buffer slice kt-1 used), kept as
    // counters: kt % stages would be a 64-bit division.
    int s_cur = 0, s_next = stages - 1;
    for (int64_t kt = 0; kt < slices; ++kt) {
      async::wait_dynamic(stages - 2);  // this thread's copies of slice kt have landed ...
      __syncthreads();  // ... everyone's are visible, and every warp is done with slice kt-1's buffer
      const int64_t next = kt + stages - 1;
      if (next < slices) gather(s_next, next);
      async::commit();  // possibly empty: one group per iteration keeps wait_group's count uniform
      compute(s_cur);
      if (next < slices) scatter(s_next);  // register-staged stores land after the MMAs they overlapped
      s_cur = s_cur + 1 == stages ? 0 : s_cur + 1;
      s_next = s_next + 1 == stages ? 0 : s_next + 1;
    }
  }

  // c0, c1 at (g, 2t), (g, 2t+1); c2, c3 at (g+8, 2t), (g+8, 2t+1).
  const int g = lane >> 2, t = lane & 3;
  if constexpr (has_row_store<Problem>::value) {
    // a thread's outputs lie on 2 * MI rows: each row's place decoded once, not per element
    CUCONV_UNROLL
    for (int i = 0; i < Tile::MI; ++i)
      CUCONV_UNROLL
      for (int half = 0; half < 2; ++half) {
        const int64_t m = m0 + wm + 16 * i + g + 8 * half;
        if (m >= prob.M) continue;
        const auto row = prob.out_row(grp, int64_t(blockIdx.z), m);
        CUCONV_UNROLL
        for (int j = 0; j < Tile::NJ; ++j)
          CUCONV_UNROLL
          for (int e = 0; e < 2; ++e) {
            const int64_t n = n0 + wn + 8 * j + 2 * t + e;
            if (n < prob.Ncols) prob.store_at(row, grp, n, acc[i][j].x[2 * half + e]);
          }
      }
  } else {
    CUCONV_UNROLL
    for (int i = 0; i < Tile::MI; ++i)
      CUCONV_UNROLL
      for (int j = 0; j < Tile::NJ; ++j)
        CUCONV_UNROLL
        for (int e = 0; e < 4; ++e) {
          const int64_t m = m0 + wm + 16 * i + g + ((e & 2) ? 8 : 0);
          const int64_t n = n0 + wn + 8 * j + 2 * t + (e & 1);
          if (m < prob.M && n < prob.Ncols) prob.store(grp, int64_t(blockIdx.z), m, n, acc[i][j].x[e]);
        }
  }
}

// ------------------------------------------------------------------ launching

// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) beyond 48 KiB; overloaded on the stream type (see
// device_props.cuh: the nvcc and simulator bodies must not share a mangled name).
#if defined(__CUDACC__)
template <typename... P>
void tc_allow_dynamic_smem(void (*kernel)(P...), size_t bytes, cudaStream_t) {
  if (bytes > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  // an error here is sticky in cudaGetLastError: the launch check that follows reports it
}
#else
template <typename... P>
void tc_allow_dynamic_smem(void (*kernel)(P...), size_t bytes, std::nullptr_t) {
  // cudaFuncSetAttribute fails beyond the device's opt-in limit, and so does the launch after it
  if (int64_t(bytes) > simulated_device().smem_per_block_optin)
    throw ::cuconv_sim::SimError("tensor-core kernel needs " + std::to_string(bytes) +
                                 " bytes of shared memory, above the device's per-block opt-in limit of " +
                                 std::to_string(simulated_device().smem_per_block_optin));
  ::cuconv_sim::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), bytes);
}
#endif

template <class Tile, TcLoad LA, TcLoad LB, class Problem, typename T>
void launch_tensorcore_tile(Problem prob, const T* a_any, const T* b_any, int64_t groups, int64_t splits, int stages,
                            stream_t stream) {
  auto kernel = &implicit_gemm_tensorcore_kernel<Problem, T, Tile, LA, LB, stream_t>;
  const size_t smem = size_t(stages) * (Tile::BM + Tile::BN) * tc_smem_stride<T>() * sizeof(tc_elem_t<T>);
  tc_allow_dynamic_smem(kernel, smem, stream);
  const int64_t m_tiles = ceil_div<int64_t>(prob.M, Tile::BM), n_tiles = ceil_div<int64_t>(prob.Ncols, Tile::BN);
  const int64_t groups_per_launch = 65535 / n_tiles;  // gridDim.y <= 65535
  for (int64_t g0 = 0; g0 < groups; g0 += groups_per_launch) {
    const int64_t ng = groups - g0 < groups_per_launch ? groups - g0 : groups_per_launch;
    prob.group_base = g0;
    launch_kernel(kernel, dim3(unsigned(m_tiles), unsigned(ng * n_tiles), unsigned(splits)), dim3(Tile::kThreads), smem,
                  stream, prob, a_any, b_any, stages);
  }
}

// Runs `prob` (all groups, `splits` chunks of prob.k_chunk, a multiple of kTcBK) with the plan's tile
// and pipeline depth. a_any / b_any: any valid address of each operand's tensor.
template <TcLoad LA, TcLoad LB, class Problem, typename T>
void launch_implicit_gemm_tensorcore(const Problem& prob, const T* a_any, const T* b_any, int64_t groups,
                                     int64_t splits, const TcPlan& plan, stream_t stream) {
  switch (plan.config) {
    case kTcWide:
      if constexpr (((LA == TcLoad::cp16 && LB == TcLoad::cp16) || LA == TcLoad::cp16_mn) && sizeof(T) == 2)
        return launch_tensorcore_tile<TcTile<128, 128, 2, 2>, LA, LB>(prob, a_any, b_any, groups, splits, plan.stages,
                                                                       stream);
      // operands short of 16-byte alignment took the element-wise loads: the large tile, whose stage
      // is smaller than the wide one the plan fitted
      [[fallthrough]];
    case kTcTall:
      if constexpr ((LA == TcLoad::cp16 && LB == TcLoad::cp16) || LA == TcLoad::cp16_mn)
        if (plan.config == kTcTall)
          return launch_tensorcore_tile<TcTile<128, 64, 2, 2>, LA, LB>(prob, a_any, b_any, groups, splits,
                                                                        plan.stages, stream);
      [[fallthrough]];  // element-wise loads: the large tile, of the same stage
    case kTcLarge:
    case kTcSmallChannel:  // the large tile, one stage
      return launch_tensorcore_tile<TcTile<128, 64, 4, 2>, LA, LB>(prob, a_any, b_any, groups, splits, plan.stages, stream);
    case kTcMedium:
      return launch_tensorcore_tile<TcTile<64, 64, 2, 2>, LA, LB>(prob, a_any, b_any, groups, splits, plan.stages, stream);
    default:
      if constexpr (LA == TcLoad::cp16_mn)  // the callers take other loads for the narrow tile
        throw std::logic_error("cuconv: 16-byte row copies (cp16_mn) need tiles of 64 rows and columns or more");
      else
        return launch_tensorcore_tile<TcTile<64, 32, 2, 2>, LA, LB>(prob, a_any, b_any, groups, splits, plan.stages,
                                                                     stream);
  }
}

// The scalar load of a T operand: cp.async of 4-byte floats, register-staged for 16-bit types.
template <typename T> constexpr TcLoad tc_scalar_load(bool row_fast) {
  if constexpr (sizeof(T) == 4) return row_fast ? TcLoad::cp4_row : TcLoad::cp4_k;
  else return row_fast ? TcLoad::sync_row : TcLoad::sync_k;
}
inline bool tc_aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

static_assert(kTcConfigs[kTcLarge].bm == 128 && kTcConfigs[kTcLarge].bn == 64 && kTcConfigs[kTcSmallChannel].bm == 128 &&
                  kTcConfigs[kTcSmallChannel].bn == 64 && kTcConfigs[kTcMedium].bm == 64 &&
                  kTcConfigs[kTcMedium].bn == 64 && kTcConfigs[kTcNarrow].bm == 64 && kTcConfigs[kTcNarrow].bn == 32 &&
                  kTcConfigs[kTcWide].bm == 128 && kTcConfigs[kTcWide].bn == 128 && kTcConfigs[kTcWide].warps_m == 2 &&
                  kTcConfigs[kTcWide].warps_n == 2 && kTcConfigs[kTcTall].bm == 128 && kTcConfigs[kTcTall].bn == 64 &&
                  kTcConfigs[kTcTall].warps_m == 2 && kTcConfigs[kTcTall].warps_n == 2,
              "the table's tiles are the ones launch_implicit_gemm_tensorcore instantiates");

}  // namespace cuconv::kern
