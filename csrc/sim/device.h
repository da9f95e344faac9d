#pragma once
// The simulated device's properties by name (sim/device.cpp): setting some keeps the rest, an empty
// map restores the default (an A100-like sm_80 with one SM).
#include <cstdint>
#include <map>
#include <string>

namespace cuconv::sim {
std::map<std::string, int64_t> device_properties();
void set_device_properties(const std::map<std::string, int64_t>& props);
}  // namespace cuconv::sim
