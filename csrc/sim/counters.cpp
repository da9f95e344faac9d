// cuconv::_sim_counters(bool reset=False) -> str: the simulator's counters (sim/runtime.h) as JSON,
// {"total": {name: count}, "launches": [{"signature", "grid", "block", "dynamic_smem_bytes", name: count}]},
// summed over every launch since the last reset and per launch (the most recent ones), for
// `python -m cuconv audit --sim-counts` (pyext/cuconv/apps/sim_counts.py). Schema: ops/schemas.cpp.
#include <torch/library.h>

#include <sstream>
#include <string>

#include "sim/runtime.h"

namespace cuconv::sim {
namespace {

void write_counts(std::ostringstream& os, const cuconv_sim::Counters& c) {
  bool first = true;
  cuconv_sim::for_each_counter(c, [&](const char* name, const uint64_t& v) {
    os << (first ? "" : ", ") << '"' << name << "\": " << v;
    first = false;
  });
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += (ch == '\n' || ch == '\t') ? ' ' : ch;
  }
  return out + '"';
}

std::string sim_counters(bool reset) {
  const cuconv_sim::Counters total = cuconv_sim::counters();
  const auto launches = cuconv_sim::launch_counters();
  if (reset) cuconv_sim::reset_counters();
  std::ostringstream os;
  os << "{\"total\": {";
  write_counts(os, total);
  os << "}, \"launches\": [";
  for (size_t i = 0; i < launches.size(); ++i) {
    const auto& l = launches[i];
    os << (i ? ", " : "") << "{\"signature\": " << quoted(l.signature) << ", \"grid\": [" << l.grid.x << ", " << l.grid.y
       << ", " << l.grid.z << "], \"block\": [" << l.block.x << ", " << l.block.y << ", " << l.block.z
       << "], \"dynamic_smem_bytes\": " << l.dynamic_smem_bytes << ", ";
    write_counts(os, l.counts);
    os << "}";
  }
  os << "]}";
  return os.str();
}

}  // namespace
}  // namespace cuconv::sim

// Takes no tensor, so it is registered for every key.
TORCH_LIBRARY_IMPL(cuconv, CompositeExplicitAutograd, m) {
  m.impl("_sim_counters", &cuconv::sim::sim_counters);
}
