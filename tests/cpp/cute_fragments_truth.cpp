// Decodes NVIDIA CuTe's MMA and copy traits (the nvidia-cutlass headers) into the plain tables of
// cute_fragments.h. CuTe is compiled host-only by g++: its layouts are constexpr functions
// (thread, value) -> index, evaluated here on the CPU; nothing from CUDA runs.
#include "cute_fragments.h"

#include <stdexcept>
#include <vector>

#include <cute/atom/copy_traits_sm75.hpp>
#include <cute/atom/mma_traits_sm80.hpp>
#include <cutlass/version.h>

namespace cute_truth {
namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("decoding CuTe's traits: " + what);
}

// MMA_Traits<Op>: ALayout (thread, value) -> m + M*k, BLayout -> n + N*k, CLayout -> m + M*n.
template <class Op>
MmaMaps decode_mma(const char* name) {
  using T = cute::MMA_Traits<Op>;
  using Shape = typename T::Shape_MNK;
  using ALayout = typename T::ALayout;
  using BLayout = typename T::BLayout;
  using CLayout = typename T::CLayout;
  MmaMaps m{};
  m.M = int(cute::size<0>(Shape{}));
  m.N = int(cute::size<1>(Shape{}));
  m.K = int(cute::size<2>(Shape{}));
  m.a_vals = int(cute::size<1>(ALayout{}));
  m.b_vals = int(cute::size<1>(BLayout{}));
  m.c_vals = int(cute::size<1>(CLayout{}));
  static_assert(cute::size(typename T::ThrID{}) == 32, "one warp");
  static_assert(cute::size<0>(ALayout{}) == 32 && cute::size<0>(BLayout{}) == 32 && cute::size<0>(CLayout{}) == 32);
  static_assert(cute::size<1>(ALayout{}) <= 8 && cute::size<1>(BLayout{}) <= 4 && cute::size<1>(CLayout{}) <= 4);
  // The fragment's values are its registers' contents in order (CuTe recasts the value array to
  // the instruction's register array), so value v is register v * bits / 32, low bits first.
  static_assert(sizeof(typename Op::ARegisters) * 8 == cute::size<1>(ALayout{}) * cute::sizeof_bits_v<typename T::ValTypeA>);
  static_assert(sizeof(typename Op::BRegisters) * 8 == cute::size<1>(BLayout{}) * cute::sizeof_bits_v<typename T::ValTypeB>);
  static_assert(sizeof(typename Op::CRegisters) * 8 == cute::size<1>(CLayout{}) * cute::sizeof_bits_v<typename T::ValTypeC>);
  for (int t = 0; t < 32; ++t) require(int(typename T::ThrID{}(t)) == t, std::string(name) + ": ThrID is not the lane");

  // Every operand's values cover its tile exactly once.
  std::vector<int> hits_a(m.M * m.K), hits_b(m.N * m.K), hits_c(m.M * m.N);
  for (int t = 0; t < 32; ++t) {
    for (int v = 0; v < m.a_vals; ++v) {
      const int idx = int(ALayout{}(t, v));
      m.a[t][v] = {idx % m.M, idx / m.M};
      ++hits_a.at(idx);
    }
    for (int v = 0; v < m.b_vals; ++v) {
      const int idx = int(BLayout{}(t, v));
      m.b[t][v] = {idx / m.N, idx % m.N};  // (k, n)
      ++hits_b.at(idx);
    }
    for (int v = 0; v < m.c_vals; ++v) {
      const int idx = int(CLayout{}(t, v));
      m.c[t][v] = {idx % m.M, idx / m.M};
      ++hits_c.at(idx);
    }
  }
  for (int h : hits_a) require(h == 1, std::string(name) + ": ALayout is not a bijection onto M x K");
  for (int h : hits_b) require(h == 1, std::string(name) + ": BLayout is not a bijection onto N x K");
  for (int h : hits_c) require(h == 1, std::string(name) + ": CLayout is not a bijection onto M x N");
  return m;
}

// Copy_Traits<Op>: SrcLayout (thread, bit) -> bit index, each thread's source being the 128-bit
// row at its address (lanes past 8 * num repeat earlier rows with stride 0: their addresses are
// not read); DstLayout (thread, bit of its registers, register after register) -> the same bit
// index space.
template <class Op>
LdsmMap decode_ldsm(int num, bool trans) {
  using T = cute::Copy_Traits<Op>;
  using Src = typename T::SrcLayout;
  using Dst = typename T::DstLayout;
  static_assert(cute::size<0>(Src{}) == 32 && cute::size<1>(Src{}) == 128, "one 16-byte row per lane");
  static_assert(cute::size<0>(Dst{}) == 32);
  const std::string name = "ldmatrix.x" + std::to_string(num) + (trans ? ".trans" : "");
  require(int(cute::size<1>(Dst{})) == 32 * num, name + ": DstLayout does not hold " + std::to_string(num) +
                                                     " registers per lane");
  // Which lane's row, and which 16-bit element of it, holds each 16-bit element of the bit space:
  // the lowest lane that holds it, as the real instruction reads rows from lanes 0 .. 8*num-1.
  struct Owner {
    int lane = -1, elem = -1;
  };
  std::vector<Owner> owner(32 * 8 * 4);
  for (int s = 0; s < 32; ++s)
    for (int e = 0; e < 8; ++e) {
      const int idx = int(Src{}(s, 16 * e));
      require(idx % 16 == 0, name + ": a source element is not 16-bit aligned");
      for (int b = 1; b < 16; ++b) require(int(Src{}(s, 16 * e + b)) == idx + b, name + ": a source element is split");
      Owner& o = owner.at(idx / 16);
      if (o.lane < 0) o = {s, e};
    }
  LdsmMap m{};
  m.num = num;
  m.trans = trans;
  for (int t = 0; t < 32; ++t)
    for (int r = 0; r < num; ++r)
      for (int h = 0; h < 2; ++h) {
        const int v = 32 * r + 16 * h;
        const int idx = int(Dst{}(t, v));
        require(idx % 16 == 0, name + ": a register half is not one 16-bit element");
        for (int b = 1; b < 16; ++b) require(int(Dst{}(t, v + b)) == idx + b, name + ": a register half is split");
        const Owner& o = owner.at(idx / 16);
        require(o.lane >= 0, name + ": a register half comes from no lane's row");
        m.src_lane[t][r][h] = o.lane;
        m.src_elem[t][r][h] = o.elem;
      }
  return m;
}

}  // namespace

MmaMaps mma_maps(MmaKind kind) {
  switch (kind) {
    case MmaKind::tf32: return decode_mma<cute::SM80_16x8x8_F32TF32TF32F32_TN>("SM80_16x8x8_F32TF32TF32F32_TN");
    case MmaKind::f16: return decode_mma<cute::SM80_16x8x16_F32F16F16F32_TN>("SM80_16x8x16_F32F16F16F32_TN");
    case MmaKind::bf16: return decode_mma<cute::SM80_16x8x16_F32BF16BF16F32_TN>("SM80_16x8x16_F32BF16BF16F32_TN");
  }
  throw std::runtime_error("unknown MmaKind");
}

LdsmMap ldsm_map(int num, bool trans) {
  if (!trans && num == 1) return decode_ldsm<cute::SM75_U32x1_LDSM_N>(1, false);
  if (!trans && num == 2) return decode_ldsm<cute::SM75_U32x2_LDSM_N>(2, false);
  if (!trans && num == 4) return decode_ldsm<cute::SM75_U32x4_LDSM_N>(4, false);
  if (trans && num == 1) return decode_ldsm<cute::SM75_U16x2_LDSM_T>(1, true);
  if (trans && num == 2) return decode_ldsm<cute::SM75_U16x4_LDSM_T>(2, true);
  if (trans && num == 4) return decode_ldsm<cute::SM75_U16x8_LDSM_T>(4, true);
  throw std::runtime_error("ldmatrix loads 1, 2 or 4 matrices");
}

std::string cute_description() {
  return "CUTLASS/CuTe " + std::to_string(CUTLASS_MAJOR) + "." + std::to_string(CUTLASS_MINOR) + "." +
         std::to_string(CUTLASS_PATCH)
#ifdef CUCONV_CUTLASS_INCLUDE_DIR
         + " from " CUCONV_CUTLASS_INCLUDE_DIR
#endif
      ;
}

}  // namespace cute_truth
