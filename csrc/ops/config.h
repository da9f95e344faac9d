#pragma once
// Every runtime switch of cuconv, in one place. The environment gives the defaults, read once when
// the library loads (CUCONV_CPU_ISA, CUCONV_CPU_CONV_ALGO, CUCONV_SIM, CUCONV_SIM_TF32,
// CUCONV_SIM_BLOCK_ORDER, CUCONV_SIM_TIMEOUT_S, CUCONV_SYNC_LAUNCHES, CUCONV_POISON); Python's
// cuconv.config changes them for the process or for a block, as torch.backends.cudnn.flags does.
// Reading a switch is an atomic load, so the ops read them on every call and no getenv is ever on
// a hot path. The simulated device's properties are the one switch kept elsewhere
// (kern::simulated_device(), set through cuconv.config as `sim_device`).
#include <map>
#include <string>

namespace cuconv::config {

// The CPU fallback's instruction-set path (cpu/isa.h resolves `automatic`, and a path this CPU
// cannot run, to the best one it can).
enum class CpuIsa { automatic, amx, avx512_bf16, avx512, avx2, portable };
// Winograd for the float32 3x3 stride-1 convs it applies to: chosen by shape, never, or always.
enum class CpuConvAlgo { automatic, gemm, winograd };

CpuIsa cpu_isa();
CpuConvAlgo cpu_conv_algo();
bool simulate();       // CPU tensors run the CUDA kernel source under the simulator
bool sim_tf32();       // the simulator lets float32 convs run as TF32 when torch allows it, as a GPU does
bool sync_launches();  // synchronise and check after every CUDA launch, naming the kernel
bool poison();         // outputs are filled with NaN (indices with -7) before the kernels run

// By name and as text, for cuconv.config: every switch's value ("0"/"1" for the flags), and
// setting one (an unknown name or a bad value raises ValueError listing what is accepted).
std::map<std::string, std::string> values();
void set(const std::string& name, const std::string& value);

}  // namespace cuconv::config
