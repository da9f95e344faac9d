// The simulator's tensor-core fragment maps against NVIDIA CuTe (an independent statement of the
// PTX fragment layouts, decoded in cute_fragments_truth.cpp):
//   mma.sync m16n8k8 tf32, m16n8k16 f16 and bf16:
//     1. the maps themselves: a_coord_*, b_coord_*, c_coord (csrc/kernels/mma_sync.cuh) against
//        CuTe's ALayout, BLayout, CLayout, for every lane and fragment element;
//     2. the emulated instruction, run by the simulator on one warp: a dense product (A, B, C
//        placed in registers where CuTe says, D read where CuTe says), then one run per A element
//        (that element 1, every B element a distinct code, C 0), so each output names the B
//        element the tensor core pairs with that A element there, or 0 where none.
//   ldmatrix x1, x2, x4 (csrc/kernels/ldmatrix.cuh): the emulated instruction on shared memory
//     whose every 16-bit element encodes (lane that addresses its row, element in the row), rows
//     scattered and padded; each register half must hold the element CuTe's Copy_Traits give it.
//   ldmatrix .trans: the simulator has none (no kernel uses it), so only CuTe's decoded tables
//     are checked to be the transposes of the non-transposed ones.
// Built a second time per planted bug (cute_tests.cmake: a copy of the header with two lanes
// swapped in one map), where these checks must fail.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cute_fragments.h"
#include "kernels/launch.cuh"
#include "kernels/ldmatrix.cuh"
#include "kernels/mma_sync.cuh"

using namespace cuconv::kern;
using cute_truth::Coord;
using cute_truth::MmaKind;

namespace {

int checks = 0, failures = 0;
void expect(bool ok, const std::string& what, const std::vector<std::string>& details = {}) {
  ++checks;
  failures += !ok;
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  for (const std::string& d : details) std::printf("    %s\n", d.c_str());
}
// Keeps the first few mismatches of a check for its report.
struct Mismatches {
  int count = 0;
  std::vector<std::string> shown;
  void add(const std::string& s) {
    if (count++ < 6) shown.push_back(s);
  }
  std::vector<std::string> report() const {
    std::vector<std::string> r = shown;
    if (count > int(shown.size())) r.push_back("... " + std::to_string(count) + " mismatches in all");
    return r;
  }
};
std::string hex16(int v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%04x", v);
  return buf;
}
std::string str(Coord c) { return "(" + std::to_string(c.row) + ", " + std::to_string(c.col) + ")"; }

// ------------------------------------------------------------------ mma.sync

const char* name(MmaKind k) { return k == MmaKind::tf32 ? "tf32 m16n8k8" : k == MmaKind::f16 ? "f16 m16n8k16" : "bf16 m16n8k16"; }

// Our map of each operand, as the emulation uses it.
Coord our_a(MmaKind k, int lane, int v) {
  const mma::RowCol rc = k == MmaKind::tf32 ? mma::a_coord_tf32(lane, v) : mma::a_coord_16(lane, v);
  return {rc.row, rc.col};
}
Coord our_b(MmaKind k, int lane, int v) {
  const mma::RowCol rc = k == MmaKind::tf32 ? mma::b_coord_tf32(lane, v) : mma::b_coord_16(lane, v);
  return {rc.row, rc.col};
}
Coord our_c(int lane, int v) {
  const mma::RowCol rc = mma::c_coord(lane, v);
  return {rc.row, rc.col};
}

void check_mma_maps(MmaKind k, const cute_truth::MmaMaps& t) {
  const char* ops[3] = {"A (m, k)", "B (k, n)", "C/D (m, n)"};
  const int vals[3] = {t.a_vals, t.b_vals, t.c_vals};
  const char* reg[3] = {"a", "b", "c"};
  for (int op = 0; op < 3; ++op) {
    Mismatches mm;
    for (int lane = 0; lane < 32; ++lane)
      for (int v = 0; v < vals[op]; ++v) {
        const Coord ours = op == 0 ? our_a(k, lane, v) : op == 1 ? our_b(k, lane, v) : our_c(lane, v);
        const Coord cute = op == 0 ? t.a[lane][v] : op == 1 ? t.b[lane][v] : t.c[lane][v];
        if (ours.row != cute.row || ours.col != cute.col)
          mm.add("lane " + std::to_string(lane) + " " + reg[op] + std::to_string(v) + ": ours " + str(ours) +
                 ", CuTe " + str(cute));
      }
    expect(mm.count == 0, std::string(name(k)) + " " + ops[op] + " fragment map equals CuTe's", mm.report());
  }
}

// One warp runs `probes` mma.syncs; probe p reads lane l's registers at [(p * 32 + l) * n + i].
template <mma::Kind K>
__global__ void mma_probes(const uint32_t* a, const uint32_t* b, const float* c, float* d, int probes) {
  const int lane = int(threadIdx.x);
  for (int p = 0; p < probes; ++p) {
    mma::FragA fa;
    mma::FragB fb;
    mma::FragC fc, fd;
    const int at = p * 32 + lane;
    for (int i = 0; i < 4; ++i) fa.x[i] = a[at * 4 + i];
    for (int i = 0; i < 2; ++i) fb.x[i] = b[at * 2 + i];
    for (int i = 0; i < 4; ++i) fc.x[i] = c[at * 4 + i];
    mma::mma_sync<K>(fd, fa, fb, fc);
    for (int i = 0; i < 4; ++i) d[at * 4 + i] = fd.x[i];
  }
}

// Registers of one probe, filled element by element in CuTe's packing.
struct Probe {
  uint32_t a[32][4] = {}, b[32][2] = {};
  float c[32][4] = {};
};
void put(MmaKind k, uint32_t* regs, int v, float value) {  // small integers: exact in every type
  if (k == MmaKind::tf32) {
    regs[v] = std::bit_cast<uint32_t>(value);
    return;
  }
  const uint16_t bits = k == MmaKind::f16 ? from_float<half_t>(value).bits : from_float<bfloat16_t>(value).bits;
  regs[v / 2] |= uint32_t(bits) << (16 * (v % 2));
}

std::vector<float> run_probes(MmaKind k, const std::vector<Probe>& probes) {
  const int n = int(probes.size());
  std::vector<uint32_t> a(n * 32 * 4), b(n * 32 * 2);
  std::vector<float> c(n * 32 * 4), d(n * 32 * 4);
  for (int p = 0; p < n; ++p)
    for (int l = 0; l < 32; ++l) {
      for (int i = 0; i < 4; ++i) a[(p * 32 + l) * 4 + i] = probes[p].a[l][i];
      for (int i = 0; i < 2; ++i) b[(p * 32 + l) * 2 + i] = probes[p].b[l][i];
      for (int i = 0; i < 4; ++i) c[(p * 32 + l) * 4 + i] = probes[p].c[l][i];
    }
  if (k == MmaKind::tf32)
    launch_kernel(&mma_probes<mma::Kind::tf32>, dim3(1), dim3(32), 0, nullptr, a.data(), b.data(), c.data(), d.data(), n);
  else if (k == MmaKind::f16)
    launch_kernel(&mma_probes<mma::Kind::f16>, dim3(1), dim3(32), 0, nullptr, a.data(), b.data(), c.data(), d.data(), n);
  else
    launch_kernel(&mma_probes<mma::Kind::bf16>, dim3(1), dim3(32), 0, nullptr, a.data(), b.data(), c.data(), d.data(), n);
  return d;
}

void check_mma_run(MmaKind k, const cute_truth::MmaMaps& t) {
  std::vector<Probe> probes;
  // Probe 0, dense: D = A * B + C with small integers everywhere, placed and read through CuTe's maps.
  std::vector<float> A(t.M * t.K), B(t.K * t.N), C(t.M * t.N);
  for (int m = 0; m < t.M; ++m)
    for (int kk = 0; kk < t.K; ++kk) A[m * t.K + kk] = float((m * 5 + kk * 3) % 9 - 4);
  for (int kk = 0; kk < t.K; ++kk)
    for (int n = 0; n < t.N; ++n) B[kk * t.N + n] = float((kk * 7 + n * 2) % 9 - 4);
  for (int m = 0; m < t.M; ++m)
    for (int n = 0; n < t.N; ++n) C[m * t.N + n] = float((m * 3 + n) % 17 - 8);
  Probe dense;
  for (int l = 0; l < 32; ++l) {
    for (int v = 0; v < t.a_vals; ++v) put(k, dense.a[l], v, A[t.a[l][v].row * t.K + t.a[l][v].col]);
    for (int v = 0; v < t.b_vals; ++v) put(k, dense.b[l], v, B[t.b[l][v].row * t.N + t.b[l][v].col]);
    for (int v = 0; v < t.c_vals; ++v) dense.c[l][v] = C[t.c[l][v].row * t.N + t.c[l][v].col];
  }
  probes.push_back(dense);
  // Probes 1.., one per A element (lane la, value va): that element 1, B element (l, v) the code
  // 1 + l * b_vals + v, C zero.
  auto code = [&](int l, int v) { return float(1 + l * t.b_vals + v); };
  Probe coded_b;
  for (int l = 0; l < 32; ++l)
    for (int v = 0; v < t.b_vals; ++v) put(k, coded_b.b[l], v, code(l, v));
  for (int la = 0; la < 32; ++la)
    for (int va = 0; va < t.a_vals; ++va) {
      Probe p = coded_b;
      put(k, p.a[la], va, 1.f);
      probes.push_back(p);
    }
  const std::vector<float> d = run_probes(k, probes);

  Mismatches dense_mm, pair_mm;
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < t.c_vals; ++i) {
      const Coord mn = t.c[l][i];
      float want = C[mn.row * t.N + mn.col];
      for (int kk = 0; kk < t.K; ++kk) want += A[mn.row * t.K + kk] * B[kk * t.N + mn.col];
      const float got = d[l * 4 + i];
      if (got != want)
        dense_mm.add("lane " + std::to_string(l) + " d" + std::to_string(i) + " (CuTe: D" + str(mn) + ") = " +
                     std::to_string(got) + ", want " + std::to_string(want));
    }
  int p = 1;
  for (int la = 0; la < 32; ++la)
    for (int va = 0; va < t.a_vals; ++va, ++p) {
      const Coord mk = t.a[la][va];
      for (int l = 0; l < 32; ++l)
        for (int i = 0; i < t.c_vals; ++i) {
          const Coord mn = t.c[l][i];
          float want = 0;  // the B element at (k, n) of CuTe's B map, if this output is in A's row
          std::string partner = "no B element";
          if (mn.row == mk.row)
            for (int lb = 0; lb < 32; ++lb)
              for (int vb = 0; vb < t.b_vals; ++vb)
                if (t.b[lb][vb].row == mk.col && t.b[lb][vb].col == mn.col) {
                  want = code(lb, vb);
                  partner = "B of lane " + std::to_string(lb) + " b" + std::to_string(vb);
                }
          const float got = d[(p * 32 + l) * 4 + i];
          if (got != want) {
            const int g = int(got) - 1;
            const std::string got_s = got == 0 ? "0" : got == float(g + 1) && g >= 0 && g < 32 * t.b_vals
                ? "B of lane " + std::to_string(g / t.b_vals) + " b" + std::to_string(g % t.b_vals)
                : std::to_string(got);
            pair_mm.add("A of lane " + std::to_string(la) + " a" + std::to_string(va) + " (CuTe: A" + str(mk) +
                        ") at lane " + std::to_string(l) + " d" + std::to_string(i) + ": got " + got_s +
                        ", CuTe: " + partner);
          }
        }
    }
  expect(dense_mm.count == 0, std::string(name(k)) + " emulated mma.sync: dense D = A * B + C through CuTe's maps",
         dense_mm.report());
  expect(pair_mm.count == 0,
         std::string(name(k)) + " emulated mma.sync: each of " + std::to_string(32 * t.a_vals) +
             " A elements meets the B elements CuTe pairs it with, in the D elements CuTe names",
         pair_mm.report());
}

// ------------------------------------------------------------------ ldmatrix

// Shared memory: lane l's 16-byte row at slot (13 l + 5) % 32 of 32-byte slots (rows neither in
// lane order nor adjacent); element e of that row holds 16 l + e, the padding 0xeeee.
constexpr int kSlotBytes = 32;
int slot_of(int lane) { return (13 * lane + 5) % 32; }

template <int N>
__global__ void ldmatrix_probe(const uint16_t* image, int halves, const int* row_offset, uint32_t* out) {
  uint16_t* smem = dynamic_smem<uint16_t>();
  const int lane = int(threadIdx.x);
  for (int i = lane; i < halves; i += 32) smem[i] = image[i];
  __syncthreads();
  uint32_t r[N];
  ldmatrix<N>(r, reinterpret_cast<const unsigned char*>(smem) + row_offset[lane]);
  for (int i = 0; i < N; ++i) out[lane * N + i] = r[i];
}

template <int N>
void check_ldmatrix() {
  const cute_truth::LdsmMap t = cute_truth::ldsm_map(N, false);
  std::vector<uint16_t> image(32 * kSlotBytes / 2, 0xeeee);
  std::vector<int> offset(32);
  for (int l = 0; l < 32; ++l) {
    offset[l] = slot_of(l) * kSlotBytes;
    for (int e = 0; e < 8; ++e) image[offset[l] / 2 + e] = uint16_t(16 * l + e);
  }
  std::vector<uint32_t> out(32 * N);
  launch_kernel(&ldmatrix_probe<N>, dim3(1), dim3(32), image.size() * 2, nullptr, image.data(), int(image.size()),
                offset.data(), out.data());
  Mismatches mm;
  for (int l = 0; l < 32; ++l)
    for (int r = 0; r < N; ++r)
      for (int h = 0; h < 2; ++h) {
        const int got = int((out[l * N + r] >> (16 * h)) & 0xffffu);
        const int want_lane = t.src_lane[l][r][h], want_elem = t.src_elem[l][r][h];
        if (got != 16 * want_lane + want_elem) {
          const std::string got_s = got < 16 * 32 && got % 16 < 8 ? "element " + std::to_string(got % 16) +
                                                                        " of lane " + std::to_string(got / 16) + "'s row"
                                                                  : hex16(got) + " (not a row element)";
          mm.add("lane " + std::to_string(l) + " r" + std::to_string(r) + (h ? " high" : " low") + ": got " + got_s +
                 ", CuTe: element " + std::to_string(want_elem) + " of lane " + std::to_string(want_lane) + "'s row");
        }
      }
  expect(mm.count == 0, "emulated ldmatrix.x" + std::to_string(N) + ": every register half holds the element CuTe's "
                        "Copy_Traits<SM75_U32x" + std::to_string(N) + "_LDSM_N> give it", mm.report());
}

// The simulator has no ldmatrix .trans; CuTe's transposed tables must at least be the transposes of
// its non-transposed ones: half h of register r of lane l gets element (row, col) = (2 (l % 4) + h,
// l / 4) of matrix r where the non-transposed load gives element (l / 4, 2 (l % 4) + h).
void check_ldmatrix_trans_tables(int num) {
  const cute_truth::LdsmMap n = cute_truth::ldsm_map(num, false), t = cute_truth::ldsm_map(num, true);
  Mismatches mm;
  for (int l = 0; l < 32; ++l)
    for (int r = 0; r < num; ++r)
      for (int h = 0; h < 2; ++h) {
        const int row_n = n.src_lane[l][r][h] - 8 * r, col_n = n.src_elem[l][r][h];
        const int row_t = t.src_lane[l][r][h] - 8 * r, col_t = t.src_elem[l][r][h];
        if (row_t != col_n || col_t != row_n)
          mm.add("lane " + std::to_string(l) + " r" + std::to_string(r) + " h" + std::to_string(h) + ": .trans " +
                 str({row_t, col_t}) + ", plain " + str({row_n, col_n}));
      }
  expect(mm.count == 0, "CuTe's ldmatrix.x" + std::to_string(num) + ".trans table is the transpose of its .x" +
                        std::to_string(num) + " table (no .trans emulation to run)", mm.report());
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // lines survive an abort
  try {
    std::printf("truth: %s\n", cute_truth::cute_description().c_str());
    for (MmaKind k : {MmaKind::tf32, MmaKind::f16, MmaKind::bf16}) {
      const cute_truth::MmaMaps t = cute_truth::mma_maps(k);
      check_mma_maps(k, t);
      check_mma_run(k, t);
    }
    check_ldmatrix<1>();
    check_ldmatrix<2>();
    check_ldmatrix<4>();
    for (int num : {1, 2, 4}) check_ldmatrix_trans_tables(num);
  } catch (const std::exception& e) {
    expect(false, std::string("exception: ") + e.what());
  }
  std::printf("cute_fragments: %d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
