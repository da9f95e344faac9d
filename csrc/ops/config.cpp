// The switches of config.h: parsed from the environment once, when the library loads, then held in
// atomics that cuconv.config sets. The simulator's two knobs live in its runtime (sim/runtime.h),
// which also runs without torch; this file is the one place that reads their environment variables
// and the one that sets them.
#include "ops/config.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "sim/runtime.h"

namespace cuconv::config {
namespace {

struct Choice {
  const char* name;
  int value;
};
const std::vector<Choice> kCpuIsa = {{"auto", int(CpuIsa::automatic)},
                                     {"amx", int(CpuIsa::amx)},
                                     {"avx512_bf16", int(CpuIsa::avx512_bf16)},
                                     {"avx512", int(CpuIsa::avx512)},
                                     {"avx2", int(CpuIsa::avx2)},
                                     {"portable", int(CpuIsa::portable)}};
const std::vector<Choice> kCpuConvAlgo = {
    {"auto", int(CpuConvAlgo::automatic)}, {"gemm", int(CpuConvAlgo::gemm)}, {"winograd", int(CpuConvAlgo::winograd)}};
const std::vector<Choice> kFlag = {{"0", 0}, {"1", 1}};

std::string accepted(const std::vector<Choice>& choices) {
  std::string s;
  for (const Choice& c : choices) s += (s.empty() ? "" : ", ") + std::string(c.name);
  return s;
}

int parse(const char* what, const std::vector<Choice>& choices, const std::string& text) {
  for (const Choice& c : choices)
    if (text == c.name) return c.value;
  if (&choices == &kFlag) {  // flags also take the usual spellings
    if (text == "true" || text == "True" || text == "on") return 1;
    if (text == "false" || text == "False" || text == "off" || text.empty()) return 0;
  }
  TORCH_CHECK_VALUE(false, "cuconv: ", what, " must be one of ", accepted(choices), "; got '", text, "'");
}

const char* name_of(const std::vector<Choice>& choices, int value) {
  for (const Choice& c : choices)
    if (c.value == value) return c.name;
  return "?";
}

int64_t parse_seconds(const char* what, const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  TORCH_CHECK_VALUE(!text.empty() && end && *end == '\0' && v > 0, "cuconv: ", what,
                    " must be a positive whole number of seconds; got '", text, "'");
  return v;
}

struct Switches {
  std::atomic<int> cpu_isa{int(CpuIsa::automatic)};
  std::atomic<int> cpu_conv_algo{int(CpuConvAlgo::automatic)};
  std::atomic<bool> simulate{false}, sim_tf32{false}, sync_launches{false}, poison{false};
  std::string env_error;  // a bad environment value: reported by every op until fixed
};

// One switch: its name in cuconv.config, its environment variable, and how to set it from text.
struct Entry {
  const char* name;
  const char* env;
  void (*set)(Switches&, const std::string&);
  std::string (*get)(const Switches&);
};

const std::vector<Entry>& entries() {
  static const std::vector<Entry> table = {
      {"cpu_isa", "CUCONV_CPU_ISA",
       [](Switches& s, const std::string& v) { s.cpu_isa = parse("cpu_isa (CUCONV_CPU_ISA)", kCpuIsa, v); },
       [](const Switches& s) -> std::string { return name_of(kCpuIsa, s.cpu_isa); }},
      {"cpu_conv_algo", "CUCONV_CPU_CONV_ALGO",
       [](Switches& s, const std::string& v) {
         s.cpu_conv_algo = parse("cpu_conv_algo (CUCONV_CPU_CONV_ALGO)", kCpuConvAlgo, v);
       },
       [](const Switches& s) -> std::string { return name_of(kCpuConvAlgo, s.cpu_conv_algo); }},
      {"simulate", "CUCONV_SIM",
       [](Switches& s, const std::string& v) { s.simulate = parse("simulate (CUCONV_SIM)", kFlag, v); },
       [](const Switches& s) -> std::string { return s.simulate ? "1" : "0"; }},
      {"sim_tf32", "CUCONV_SIM_TF32",
       [](Switches& s, const std::string& v) { s.sim_tf32 = parse("sim_tf32 (CUCONV_SIM_TF32)", kFlag, v); },
       [](const Switches& s) -> std::string { return s.sim_tf32 ? "1" : "0"; }},
      {"sim_block_order", "CUCONV_SIM_BLOCK_ORDER",
       [](Switches&, const std::string& v) {
         try {
           cuconv_sim::set_block_order(v);
         } catch (const cuconv_sim::SimError& e) {
           TORCH_CHECK_VALUE(false, "cuconv: sim_block_order (CUCONV_SIM_BLOCK_ORDER): ", e.what());
         }
       },
       [](const Switches&) { return cuconv_sim::block_order(); }},
      {"sim_timeout_s", "CUCONV_SIM_TIMEOUT_S",
       [](Switches&, const std::string& v) {
         cuconv_sim::set_timeout_s(parse_seconds("sim_timeout_s (CUCONV_SIM_TIMEOUT_S)", v));
       },
       [](const Switches&) { return std::to_string(cuconv_sim::timeout_s()); }},
      {"sync_launches", "CUCONV_SYNC_LAUNCHES",
       [](Switches& s, const std::string& v) {
         s.sync_launches = parse("sync_launches (CUCONV_SYNC_LAUNCHES)", kFlag, v);
       },
       [](const Switches& s) -> std::string { return s.sync_launches ? "1" : "0"; }},
      {"poison", "CUCONV_POISON",
       [](Switches& s, const std::string& v) { s.poison = parse("poison (CUCONV_POISON)", kFlag, v); },
       [](const Switches& s) -> std::string { return s.poison ? "1" : "0"; }},
  };
  return table;
}

Switches& from_environment() {
  static Switches s;
  static const bool read = [] {
    for (const Entry& e : entries()) {
      const char* v = std::getenv(e.env);
      if (!v || !*v) continue;
      try {
        e.set(s, v);
      } catch (const c10::Error& err) {
        if (s.env_error.empty()) s.env_error = err.what_without_backtrace();
      }
    }
    return true;
  }();
  (void)read;
  return s;
}

// The environment is read when the library loads (and its errors reported when a switch is read).
const bool g_loaded = (from_environment(), true);

const Switches& switches() {
  const Switches& s = from_environment();
  TORCH_CHECK_VALUE(s.env_error.empty(), s.env_error);
  return s;
}

}  // namespace

CpuIsa cpu_isa() { return CpuIsa(switches().cpu_isa.load(std::memory_order_relaxed)); }
CpuConvAlgo cpu_conv_algo() { return CpuConvAlgo(switches().cpu_conv_algo.load(std::memory_order_relaxed)); }
bool simulate() { return switches().simulate.load(std::memory_order_relaxed); }
bool sim_tf32() { return switches().sim_tf32.load(std::memory_order_relaxed); }
bool sync_launches() { return switches().sync_launches.load(std::memory_order_relaxed); }
bool poison() { return switches().poison.load(std::memory_order_relaxed); }

std::map<std::string, std::string> values() {
  const Switches& s = switches();
  std::map<std::string, std::string> out;
  for (const Entry& e : entries()) out[e.name] = e.get(s);
  return out;
}

void set(const std::string& name, const std::string& value) {
  (void)switches();
  for (const Entry& e : entries())
    if (name == e.name) return e.set(from_environment(), value);
  std::string known;
  for (const Entry& e : entries()) known += (known.empty() ? "" : ", ") + std::string(e.name);
  TORCH_CHECK_VALUE(false, "cuconv.config: unknown switch '", name, "'; the switches are ", known);
}

}  // namespace cuconv::config
