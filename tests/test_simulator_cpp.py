"""Builds the simulator's torch-free C++ test targets (tests/cpp/sim_tests.cmake) with cmake and
runs them with ctest: the simulator's own checks, and the planted bugs that ThreadSanitizer
(a missing __syncthreads), AddressSanitizer (an out-of-bounds shared read) and the simulator
(threads at different barriers; a cp.async pipeline that reads tiles before waiting for them) must
report."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ctest") is None,
                                reason="cmake/ctest not installed")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    src = tmp_path_factory.mktemp("sim_cpp_src")
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.20)\nproject(cuconv_sim_tests CXX)\nenable_testing()\n"
        f'include("{os.path.join(ROOT, "tests", "cpp", "sim_tests.cmake")}")\n')
    build = tmp_path_factory.mktemp("sim_cpp_build")
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Debug"], check=True,
                   capture_output=True, text=True)
    result = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return build


def ctest(build, name):
    result = subprocess.run(["ctest", "--test-dir", str(build), "-R", f"^{name}$", "--output-on-failure", "-V"],
                            capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["sim_runtime_checks", "sim_tsan_clean", "sim_tsan_missing_syncthreads",
                                  "sim_asan_clean", "sim_asan_shared_oob", "sim_cp_async_clean",
                                  "sim_cp_async_missing_wait"])
def test_ctest_target(build_dir, name):
    code, out = ctest(build_dir, name)
    assert code == 0, out
    if name == "sim_runtime_checks":
        assert "ok: threads waiting at different barriers are reported" in out
    if name == "sim_tsan_missing_syncthreads":
        assert "ThreadSanitizer: data race" in out and "tile" in out
    if name == "sim_asan_shared_oob":
        assert "global-buffer-overflow" in out and "'tile'" in out
    if name == "sim_cp_async_clean":
        assert "ok: wait_group 2 lands only the oldest group" in out
        assert re.search(r"(^|\s)0 wrong values", out, re.M)  # ctest -V prefixes lines with "7: "
    if name == "sim_cp_async_missing_wait":  # the planted bug: tiles read as poison, the results are wrong
        assert "FAILED: tensor-core conv2d through the cp.async pipeline" in out
    if name in ("sim_tsan_clean", "sim_asan_clean"):
        assert "0 wrong values" in out and "Sanitizer" not in out.replace("sanitize", "")
