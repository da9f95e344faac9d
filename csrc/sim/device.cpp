// The simulated device's properties, as Python sees them (cuconv.config's `sim_device`), so tests
// can check each choice they drive on more than one simulated device.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <map>
#include <string>

#include "sim/device.h"
// after the torch headers: the kernel headers define the CUDA keywords away
#include "kernels/device_props.cuh"

namespace cuconv::sim {

namespace {
// Name -> field of kern::DeviceProps, in one table so the getter and the setter cannot disagree.
template <typename F>
void for_each_field(kern::DeviceProps& d, F&& f) {
  f("sm_count", d.sm_count);
  f("cc_major", d.cc_major);
  f("cc_minor", d.cc_minor);
  f("max_threads_per_sm", d.max_threads_per_sm);
  f("max_blocks_per_sm", d.max_blocks_per_sm);
  f("regs_per_sm", d.regs_per_sm);
  f("smem_per_sm", d.smem_per_sm);
  f("smem_per_block_optin", d.smem_per_block_optin);
}
}  // namespace

std::map<std::string, int64_t> device_properties() {
  std::map<std::string, int64_t> out;
  for_each_field(kern::simulated_device(), [&](const char* name, auto& field) { out[name] = int64_t(field); });
  return out;
}

void set_device_properties(const std::map<std::string, int64_t>& props) {
  if (props.empty()) {
    kern::simulated_device() = kern::kDefaultSimDevice;
    return;
  }
  kern::DeviceProps d = kern::simulated_device();
  size_t used = 0;
  for_each_field(d, [&](const char* name, auto& field) {
    const auto it = props.find(name);
    if (it == props.end()) return;
    TORCH_CHECK(it->second > 0 || std::string(name) == "cc_minor", "cuconv: simulated device property ", name,
                " must be positive, got ", it->second);
    field = static_cast<std::remove_reference_t<decltype(field)>>(it->second);
    ++used;
  });
  TORCH_CHECK(used == props.size(), "cuconv: unknown simulated device property; known: sm_count, cc_major, "
              "cc_minor, max_threads_per_sm, max_blocks_per_sm, regs_per_sm, smem_per_sm, smem_per_block_optin");
  kern::simulated_device() = d;
}

}  // namespace cuconv::sim
