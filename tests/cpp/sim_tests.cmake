# Simulator C++ tests: torch-free executables built from the kernel headers and the simulator
# runtime with plain g++, including planted bugs that the sanitizers or the simulator must report.
# Included by the top-level CMakeLists.txt (after enable_testing()).
set(CUCONV_SIM_ROOT "${CMAKE_CURRENT_LIST_DIR}/../..")
find_package(Threads REQUIRED)

# cuconv_sim_test_exe(<target> <source> [compile options...]): one test driver plus the runtime.
function(cuconv_sim_test_exe target source)
  add_executable(${target} "${CMAKE_CURRENT_LIST_DIR}/${source}" "${CUCONV_SIM_ROOT}/csrc/sim/runtime.cpp")
  target_compile_features(${target} PRIVATE cxx_std_20)
  target_include_directories(${target} PRIVATE "${CUCONV_SIM_ROOT}/csrc")
  target_compile_options(${target} PRIVATE -O1 -g ${ARGN})
  target_link_options(${target} PRIVATE ${ARGN})
  target_link_libraries(${target} PRIVATE Threads::Threads)
endfunction()

set(CUCONV_TSAN -fsanitize=thread)
set(CUCONV_ASAN -fsanitize=address -fno-omit-frame-pointer)

# The simulator's own checks: divergent barriers, deadlocks, launch limits, alignment, warp rules.
cuconv_sim_test_exe(sim_runtime_checks sim_runtime_checks.cpp)
add_test(NAME sim_runtime_checks COMMAND sim_runtime_checks)
set_tests_properties(sim_runtime_checks PROPERTIES TIMEOUT 120)

# ThreadSanitizer: the correct kernels are race-free; a removed __syncthreads is a reported race.
cuconv_sim_test_exe(sim_tsan_clean sim_race_check.cpp ${CUCONV_TSAN})
add_test(NAME sim_tsan_clean COMMAND sim_tsan_clean)
cuconv_sim_test_exe(sim_tsan_missing_syncthreads sim_race_check.cpp -DCUCONV_PLANT_MISSING_SYNCTHREADS ${CUCONV_TSAN})
add_test(NAME sim_tsan_missing_syncthreads COMMAND sim_tsan_missing_syncthreads)
set_tests_properties(sim_tsan_clean sim_tsan_missing_syncthreads PROPERTIES
  ENVIRONMENT "TSAN_OPTIONS=halt_on_error=1 exitcode=66" TIMEOUT 300)
set_tests_properties(sim_tsan_missing_syncthreads PROPERTIES
  PASS_REGULAR_EXPRESSION "ThreadSanitizer: data race.*neighbour_sum_kernel")

# AddressSanitizer: an out-of-bounds shared-memory read is reported.
cuconv_sim_test_exe(sim_asan_clean sim_shared_bounds_check.cpp ${CUCONV_ASAN})
add_test(NAME sim_asan_clean COMMAND sim_asan_clean)
cuconv_sim_test_exe(sim_asan_shared_oob sim_shared_bounds_check.cpp -DCUCONV_PLANT_SHARED_OOB ${CUCONV_ASAN})
add_test(NAME sim_asan_shared_oob COMMAND sim_asan_shared_oob)
set_tests_properties(sim_asan_shared_oob PROPERTIES
  PASS_REGULAR_EXPRESSION "AddressSanitizer: global-buffer-overflow.*global variable 'tile'")
set_tests_properties(sim_asan_clean sim_asan_shared_oob PROPERTIES TIMEOUT 120)

# cp.async: the emulation's group semantics and the tensor-core pipeline built on it are correct;
# a pipeline that skips cp.async.wait_group reads its tiles as poison and is caught.
cuconv_sim_test_exe(sim_cp_async_clean sim_cp_async_check.cpp)
add_test(NAME sim_cp_async_clean COMMAND sim_cp_async_clean)
cuconv_sim_test_exe(sim_cp_async_missing_wait sim_cp_async_check.cpp -DCUCONV_PLANT_MISSING_CP_ASYNC_WAIT)
add_test(NAME sim_cp_async_missing_wait COMMAND sim_cp_async_missing_wait)
set_tests_properties(sim_cp_async_missing_wait PROPERTIES PASS_REGULAR_EXPRESSION "[1-9][0-9]* wrong values")
set_tests_properties(sim_cp_async_clean sim_cp_async_missing_wait PROPERTIES TIMEOUT 300)

# FastDivmod, the index decoding of the implicit-GEMM kernels, against `/` and `%`.
cuconv_sim_test_exe(fast_divmod_check fast_divmod_check.cpp)
add_test(NAME fast_divmod_check COMMAND fast_divmod_check)
set_tests_properties(fast_divmod_check PROPERTIES PASS_REGULAR_EXPRESSION ", 0 failures")

# The max-pool kernels' 64-bit index path (tensors of 2^30 elements or more) against their 32-bit
# path and a scalar reference, under AddressSanitizer.
cuconv_sim_test_exe(sim_max_pool_index sim_max_pool_index_check.cpp ${CUCONV_ASAN})
add_test(NAME sim_max_pool_index COMMAND sim_max_pool_index)
set_tests_properties(sim_max_pool_index PROPERTIES TIMEOUT 120)
