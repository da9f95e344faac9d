#pragma once
// The C++ checks' reporting: one "ok"/"FAILED" line per check, and the count a check's main
// returns from (`return failures ? 1 : 0`).
#include <cstdio>
#include <string>

namespace cuconv::testing {

inline int failures = 0;

inline void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  failures += !ok;
}

}  // namespace cuconv::testing
