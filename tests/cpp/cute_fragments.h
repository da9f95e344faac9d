#pragma once
// The tensor-core fragment maps as NVIDIA CuTe states them (cute_fragments_truth.cpp decodes
// MMA_Traits / Copy_Traits into these plain tables). A separate translation unit because CuTe
// needs the CUDA headers (dim3, uint3, __half...), which clash with the simulator's own
// definitions in csrc/sim/sim_runtime.h; only these plain structs cross over.
#include <string>

namespace cute_truth {

struct Coord {
  int row, col;
};

enum class MmaKind { tf32, f16, bf16 };

// One mma.sync atom, lane by lane. Element v of a lane's fragment is register v (tf32) or the
// 16-bit half v % 2 (low half first) of register v / 2 (f16, bf16), as CuTe packs its fragments.
//   a[lane][v] = (m, k) in the M x K tile of A
//   b[lane][v] = (k, n) in the K x N tile of B
//   c[lane][v] = (m, n) in the M x N tile of C and D (CuTe has one layout for both)
struct MmaMaps {
  int M, N, K;
  int a_vals, b_vals, c_vals;
  Coord a[32][8], b[32][4], c[32][4];
};
MmaMaps mma_maps(MmaKind kind);

// ldmatrix (x1, x2, x4, optionally .trans), lane by lane: half h (low first) of register r of lane
// l receives 16-bit element src_elem[l][r][h] (0..7) of the 16-byte row whose address lane
// src_lane[l][r][h] supplied.
struct LdsmMap {
  int num;
  bool trans;
  int src_lane[32][4][2], src_elem[32][4][2];
};
// Throws std::runtime_error if CuTe's layouts do not decode to whole 16-bit elements of rows.
LdsmMap ldsm_map(int num, bool trans);

// "CuTe <version> from <include dir>", for the test's log.
std::string cute_description();

}  // namespace cute_truth
