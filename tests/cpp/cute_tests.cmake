# NVIDIA CuTe as an independent truth for the simulator's tensor-core fragment maps (mma.sync
# m16n8k8 tf32, m16n8k16 f16/bf16; ldmatrix x1/x2/x4): tests/cpp/cute_fragments_check.cpp, with
# CuTe's MMA_Traits / Copy_Traits decoded in tests/cpp/cute_fragments_truth.cpp. Torch-free, built
# with plain g++, run by ctest (`ctest -R cute`). Included by the top-level CMakeLists.txt.
#
# Needs, at configure time:
#   - the nvidia-cutlass package (pyproject's `test` extra) in the Python that CMake finds
#     (Python3_EXECUTABLE), or -DCUCONV_CUTLASS_INCLUDE_DIR=<dir holding cute/>;
#   - a CUDA toolkit's headers (cuda_runtime_api.h and CCCL's cuda/std), which CuTe includes even
#     when compiled for the host only: from CUDA_TOOLKIT_ROOT_DIR, $CUDA_HOME, $CUDA_PATH or
#     /usr/local/cuda. Nothing from CUDA is linked or run.
# Without either, the test `cute_fragments` is still registered and fails saying what is missing.
set(CUCONV_CUTE_ROOT "${CMAKE_CURRENT_LIST_DIR}/../..")
set(CUCONV_CUTLASS_INCLUDE_DIR "" CACHE PATH
    "CUTLASS include directory (holding cute/); empty: found through Python's cutlass_library")

set(_cute_missing "")
set(_cute_include "${CUCONV_CUTLASS_INCLUDE_DIR}")
if(NOT _cute_include)
  if(NOT Python3_EXECUTABLE)
    find_package(Python3 COMPONENTS Interpreter)
  endif()
  if(Python3_EXECUTABLE)
    # The wheel ships CUTLASS's headers under cutlass_library/source/include; cutlass_library.source_path
    # names that tree (and the repository root in a CUTLASS source checkout).
    execute_process(
      COMMAND "${Python3_EXECUTABLE}" -c
              "import cutlass_library, os; print(os.path.join(cutlass_library.source_path, 'include'))"
      OUTPUT_VARIABLE _cute_include OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _cute_rc ERROR_QUIET)
    if(NOT _cute_rc EQUAL 0)
      set(_cute_include "")
    endif()
  endif()
endif()
if(NOT _cute_include OR NOT EXISTS "${_cute_include}/cute/atom/mma_traits_sm80.hpp"
   OR NOT EXISTS "${_cute_include}/cute/atom/copy_traits_sm75.hpp")
  set(_cute_python "${Python3_EXECUTABLE}")
  if(NOT _cute_python)
    set(_cute_python "no Python found: set Python3_EXECUTABLE")
  endif()
  set(_cute_missing "nvidia-cutlass headers not found; pip install nvidia-cutlass (Python: ${_cute_python}) \
or pass -DCUCONV_CUTLASS_INCLUDE_DIR=<dir holding cute/>")
endif()

set(_cute_cuda_includes "")
if(NOT _cute_missing)
  set(_cute_cuda_roots "")
  foreach(_root IN ITEMS "${CUDA_TOOLKIT_ROOT_DIR}" "$ENV{CUDA_HOME}" "$ENV{CUDA_PATH}" /usr/local/cuda)
    if(_root AND EXISTS "${_root}/include/cuda_runtime_api.h")
      if(EXISTS "${_root}/include/cccl/cuda/std/utility")  # CUDA 13 moved CCCL under include/cccl
        set(_cute_cuda_includes "${_root}/include" "${_root}/include/cccl")
        break()
      elseif(EXISTS "${_root}/include/cuda/std/utility")
        set(_cute_cuda_includes "${_root}/include")
        break()
      endif()
    endif()
  endforeach()
  if(NOT _cute_cuda_includes)
    set(_cute_missing "CUDA toolkit headers (cuda_runtime_api.h, CCCL's cuda/std) not found, which CuTe's headers \
include; set CUDA_HOME to a CUDA toolkit")
  endif()
endif()

if(_cute_missing)
  message(WARNING "cute_fragments: ${_cute_missing}. The test cute_fragments will fail.")
  add_test(NAME cute_fragments COMMAND "${CMAKE_COMMAND}" -E echo "cute_fragments: ${_cute_missing}")
  set_tests_properties(cute_fragments PROPERTIES FAIL_REGULAR_EXPRESSION "not found")
  add_custom_target(cute_fragments_check COMMAND "${CMAKE_COMMAND}" -E echo "cute_fragments: ${_cute_missing}"
                    COMMAND "${CMAKE_COMMAND}" -E false)
  return()
endif()
message(STATUS "cute_fragments: CuTe from ${_cute_include}; CUDA headers from ${_cute_cuda_includes}")

find_package(Threads REQUIRED)
# CuTe's side, compiled once: host-only (g++ defines no __CUDACC__), its headers as system headers
# (they warn on CUDA 13's deprecated vector types).
add_library(cuconv_cute_truth OBJECT "${CMAKE_CURRENT_LIST_DIR}/cute_fragments_truth.cpp")
target_compile_features(cuconv_cute_truth PRIVATE cxx_std_20)
target_include_directories(cuconv_cute_truth SYSTEM PRIVATE "${_cute_include}" ${_cute_cuda_includes})
target_compile_definitions(cuconv_cute_truth PRIVATE "CUCONV_CUTLASS_INCLUDE_DIR=\"${_cute_include}\"")
target_compile_options(cuconv_cute_truth PRIVATE -O1)

# cuconv_cute_test_exe(<target> [include dirs searched before csrc...]): the check, the simulator
# runtime and CuTe's tables.
function(cuconv_cute_test_exe target)
  add_executable(${target} "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/cute_fragments_check.cpp"
                 "${CUCONV_CUTE_ROOT}/csrc/sim/runtime.cpp" $<TARGET_OBJECTS:cuconv_cute_truth>)
  target_compile_features(${target} PRIVATE cxx_std_20)
  target_include_directories(${target} PRIVATE ${ARGN} "${CUCONV_CUTE_ROOT}/csrc")
  target_compile_options(${target} PRIVATE -O1 -g)
  target_link_libraries(${target} PRIVATE Threads::Threads)
endfunction()

cuconv_cute_test_exe(cute_fragments_check)
if(COMMAND cuconv_sanitize)  # the top-level build's -DCUCONV_SANITIZE
  cuconv_sanitize(cute_fragments_check)
endif()
add_test(NAME cute_fragments COMMAND cute_fragments_check)
set_tests_properties(cute_fragments PROPERTIES PASS_REGULAR_EXPRESSION "cute_fragments: [1-9][0-9]* passed, 0 failed"
                     TIMEOUT 120)

# Planted bugs: the check built against a copy of one kernel header with two lanes swapped in its
# fragment map must fail. The copy is made at configure time by replacing `anchor` (which must occur
# in the header) and is found before csrc/kernels; its own includes resolve to csrc/kernels.
# cuconv_cute_planted(<test> <header> <anchor> <replacement> <regex the failure must print>)
function(cuconv_cute_planted test header anchor replacement expected)
  set(src "${CUCONV_CUTE_ROOT}/csrc/kernels/${header}")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${src}")
  file(READ "${src}" text)
  string(FIND "${text}" "${anchor}" at)
  if(at EQUAL -1)
    message(WARNING "${test}: `${anchor}` not found in csrc/kernels/${header}; update tests/cpp/cute_tests.cmake")
    add_test(NAME ${test} COMMAND "${CMAKE_COMMAND}" -E echo
             "${test}: planted bug not applied: anchor not found in csrc/kernels/${header}")
    set_tests_properties(${test} PROPERTIES FAIL_REGULAR_EXPRESSION "not applied")
    return()
  endif()
  string(REPLACE "${anchor}" "${replacement}" text "${text}")
  set(dir "${CMAKE_CURRENT_BINARY_DIR}/${test}")
  file(WRITE "${dir}/kernels/${header}.new" "${text}")
  configure_file("${dir}/kernels/${header}.new" "${dir}/kernels/${header}" COPYONLY)  # rewritten only if changed
  cuconv_cute_test_exe(${test}_check "${dir}" "${CUCONV_CUTE_ROOT}/csrc/kernels")
  add_test(NAME ${test} COMMAND ${test}_check)
  set_tests_properties(${test} PROPERTIES PASS_REGULAR_EXPRESSION "${expected}" TIMEOUT 120)
endfunction()

# Lanes 1 and 2 trade A elements in the f16/bf16 map: the map check and the run must both fail.
cuconv_cute_planted(cute_fragments_planted_mma_lane_swap mma_sync.cuh
  "CUCONV_HD RowCol a_coord_16(int lane, int i) {"
  "CUCONV_HD RowCol a_coord_16(int lane, int i) {\n  lane = lane == 1 ? 2 : lane == 2 ? 1 : lane;  // planted bug"
  "FAILED: f16 m16n8k16 A \\(m, k\\) fragment map equals CuTe's.*lane 1 a0: ours \\(0, 4\\), CuTe \\(0, 2\\).*FAILED: f16 m16n8k16 emulated mma.sync: each of 256 A elements")
# Lanes 5 and 9 trade the rows they read in ldmatrix: every width must fail.
cuconv_cute_planted(cute_fragments_planted_ldmatrix_lane_swap ldmatrix.cuh
  "rows[8 * i + lane / 4]"
  "rows[8 * i + (lane == 5 ? 9 : lane == 9 ? 5 : lane) / 4]  /* planted bug */"
  "FAILED: emulated ldmatrix.x1: .*lane 5 r0 low: got element 2 of lane 2's row, CuTe: element 2 of lane 1's row.*FAILED: emulated ldmatrix.x2: .*FAILED: emulated ldmatrix.x4: ")
