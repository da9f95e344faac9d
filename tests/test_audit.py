"""`python -m cuconv audit`: parsers on captured cuobjdump / nvdisasm text (tests/data/audit, from
tests/data/audit/small.cu and conv_kernels.cu; CUDA 13.1 tools from triton), occupancy arithmetic,
and the command on real binaries where the tools are available."""
import json
import os
import shutil
import subprocess

import pytest

import cuconv
from cuconv.apps import audit, cli

DATA = os.path.join(os.path.dirname(__file__), "data", "audit")


def read(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def by_name(d, fragment):
    (key,) = [k for k in d if fragment in k[1]]
    return d[key]


def tool_or_none(name):
    try:
        return audit.find_tool(name)
    except FileNotFoundError:
        return None


def test_parse_res_usage_cubin():
    res = audit.parse_res_usage(read("small_res_usage.txt"))
    assert len(res) == 2
    assert all(arch is None for arch, _ in res)  # a bare cubin names no arch here
    tc = by_name(res, "tc_sample")
    assert tc == dict(registers=16, stack_bytes=0, shared_bytes=2048, local_bytes=0)
    assert by_name(res, "local_sample")["stack_bytes"] == 1024


def test_parse_res_usage_fatbin_two_archs():
    res = audit.parse_res_usage(read("conv_res_usage.txt"))
    assert {arch for arch, _ in res} == {"sm_80", "sm_90"}
    assert len(res) == 16  # 8 kernels x 2 archs
    assert all(v["local_bytes"] == 0 and v["registers"] > 0 for v in res.values())


@pytest.mark.parametrize("sample", ["small_sass.txt", "small_nvdisasm.txt"])
def test_parse_sass_counts(sample):
    sass = audit.parse_sass(read(sample))
    assert {arch for arch, _ in sass} == {"sm_80"}
    tc = by_name(sass, "tc_sample")
    assert tc == dict(hmma=1, ldgsts=0, ldsm=0, ldg128=1, lds128=1, local_instructions=0)
    local = by_name(sass, "local_sample")
    assert local["hmma"] == 0 and local["local_instructions"] == 65  # 64 STL.128 + 1 LDL


def test_parse_sass_tensorcore_kernels():
    sass = audit.parse_sass(read("conv_sass.txt"))
    tc = {k: v for k, v in sass.items() if "tensorcore" in k[1]}
    assert len(tc) == 12  # 3 dtypes x 2 layouts x 2 archs
    for (arch, name), counts in tc.items():
        # per 16-deep slice: 4 m16n8k16 (f16/bf16) or 8 m16n8k8 (tf32) per warp
        assert counts["hmma"] == (8 if "ProblemIfLb" in name else 4), name
    gemm = {k: v for k, v in sass.items() if "implicit_gemm" in k[1]}
    assert gemm and all(v["hmma"] == 0 for v in gemm.values())


PIPELINE_SASS = """
	code for sm_80
		Function : _Z31implicit_gemm_tensorcore_kernelI20Conv2dFpropTcProblemEvv
        /*0100*/                   LDGSTS.E.BYPASS.LTC128B.128 [R5], [R2.64] ;
        /*0110*/              @!P0 LDGSTS.E.BYPASS.LTC128B.128.ZFILL [R5+0x50], [R2.64+0x10] ;
        /*0120*/                   LDGSTS.E [R7], [R8.64] ;
        /*0130*/                   LDGDEPBAR ;
        /*0140*/                   DEPBAR.LE SB0, 0x1 ;
        /*0150*/                   LDSM.16.M88.4 R12, [R9] ;
        /*0160*/                   LDSM.16.M88.4 R16, [R9+0x500] ;
        /*0170*/                   HMMA.16816.F32 R20, R12, R16, R20 ;
		Function : _Z31implicit_gemm_tensorcore_kernelI20Conv2dDgradTcProblemEvv
        /*0100*/                   LDS R4, [R2] ;
"""


def test_parse_sass_pipeline_instructions():
    sass = audit.parse_sass(PIPELINE_SASS)
    fprop = by_name(sass, "Fprop")
    assert fprop == dict(hmma=1, ldgsts=3, ldsm=2, ldg128=0, lds128=0, local_instructions=0)
    assert by_name(sass, "Dgrad")["hmma"] == 0


def test_check_requires_every_tensorcore_op():
    reports = audit.audit_texts("", PIPELINE_SASS)
    dgrad = next(r for r in reports if "Dgrad" in r.name)
    assert dgrad.problems == ["tensor-core kernel without HMMA"]  # a tensor-core kernel that lost its MMAs
    assert audit.missing_tensorcore_ops(reports, ["fprop", "dgrad", "wgrad"]) == ["wgrad"]
    assert audit.missing_tensorcore_ops(reports, ["fprop"]) == []


def test_parse_elf_max_threads():
    threads = audit.parse_elf_max_threads(read("small_elf.txt"))
    assert list(threads.values()) == [128]  # only tc_sample has __launch_bounds__
    assert "tc_sample" in next(iter(threads))[1]


def test_occupancy_arithmetic():
    # 118 registers x 256 threads: 3840 registers per warp, 8 warps -> 2 blocks, 16 of 64 warps
    occ, blocks, limiter = audit.occupancy("sm_80", 118, 8320, 256)
    assert (occ, blocks, limiter) == (0.25, 2, "registers")
    assert audit.occupancy("sm_80", 32, 0, 256)[0] == 1.0
    assert audit.occupancy("sm_90", 32, 0, 256)[0] == 1.0  # no shared memory at all: not a limit
    # 48 KiB static shared + 1 KiB reserved per block: 3 blocks of 4 warps on sm_80's 164 KiB
    occ, blocks, limiter = audit.occupancy("sm_80", 32, 48 * 1024, 128)
    assert (blocks, limiter) == (3, "shared memory") and occ == pytest.approx(12 / 64)
    assert audit.occupancy("sm_90", 32, 48 * 1024, 128)[1] == 4  # 228 KiB
    assert audit.occupancy("sm_75", 32, 0, 128) is None


def test_audit_texts_check_rules():
    texts = read("small_res_usage.txt"), read("small_sass.txt"), read("small_elf.txt")
    reports = audit.audit_texts(*texts)
    assert {r.arch for r in reports} == {"sm_80"}  # taken from the SASS
    assert not any(r.problems for r in reports)  # neither name matches the default hot/tensor-core regexes
    tc = next(r for r in reports if "tc_sample" in r.name)
    assert (tc.threads, tc.threads_assumed, tc.occupancy) == (128, False, 1.0)
    flagged = audit.audit_texts(*texts, hot="local_sample", tensorcore="local_sample|tc_sample")
    local = next(r for r in flagged if "local_sample" in r.name)
    assert len(local.problems) == 2  # local memory, and no HMMA
    assert not next(r for r in flagged if "tc_sample" in r.name).problems


def test_audit_texts_conv_kernels_clean():
    reports = audit.audit_texts(read("conv_res_usage.txt"), read("conv_sass.txt"))
    assert len(reports) == 16
    assert not any(r.problems for r in reports)
    assert all(r.threads_assumed for r in reports)  # no -elf text given


@pytest.fixture(scope="module")
def sample_cubin(tmp_path_factory):
    nvcc = shutil.which("nvcc") or os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    if not os.path.isfile(nvcc) or tool_or_none("cuobjdump") is None or tool_or_none("nvdisasm") is None:
        pytest.skip("needs nvcc, cuobjdump and nvdisasm")
    out = str(tmp_path_factory.mktemp("audit") / "small.cubin")
    subprocess.run([nvcc, "-cubin", "-arch=sm_80", "-O3", os.path.join(DATA, "small.cu"), "-o", out], check=True)
    return out


def test_cli_on_cubin(sample_cubin, capsys):
    assert cli.main(["audit", "--json", sample_cubin]) == 0
    doc = json.loads(capsys.readouterr().out)
    kernels = {k["demangled"].split("(")[0]: k for k in doc["kernels"]}
    assert kernels["tc_sample"]["hmma"] == 1 and kernels["tc_sample"]["threads"] == 128
    assert kernels["local_sample"]["local_instructions"] > 0
    assert cli.main(["audit", "--check", sample_cubin]) == 0
    assert cli.main(["audit", "--check", "--hot", "local_sample", sample_cubin]) == 1
    assert cli.main(["audit", "--check", "--tensorcore", "sample", sample_cubin]) == 1
    assert cli.main(["audit", "--check", "--require", "fprop", sample_cubin]) == 1  # no tensor-core fprop in it


@pytest.mark.skipif(not getattr(cuconv._C, "with_cuda", False), reason="the extension was built without CUDA")
def test_cli_on_built_extension(capsys):
    rc = cli.main(["audit", "--check", "--json"])  # CI fails if a hot kernel spills or loses its HMMA
    doc = json.loads(capsys.readouterr().out)
    assert doc["kernels"], "a CUDA build has device code"
    assert {k["arch"] for k in doc["kernels"]} <= {"sm_80", "sm_90"}
    for k in doc["kernels"]:
        assert k["registers"] > 0 and 0 < k["occupancy"] <= 1
        if "tensorcore" in k["name"]:
            assert k["hmma"] > 0 and k["ldsm"] > 0  # fragments by ldmatrix
    assert doc["missing_tensorcore_ops"] == []
    for op, problem in audit.TENSORCORE_OPS.items():  # every pass has pipelined (cp.async) tensor-core kernels
        assert any(problem in k["name"] and k["ldgsts"] > 0 for k in doc["kernels"]), op
    assert rc == 0


@pytest.mark.skipif(os.environ.get("CUCONV_NVCC_TESTS") != "1", reason="compiles the kernels with nvcc (minutes); set CUCONV_NVCC_TESTS=1")
def test_tensorcore_kernels_compile_to_hmma_without_spills(tmp_path, capsys):
    """The real tensor-core kernels (one tile and load mode per pass), compiled for sm_80: HMMA,
    LDSM and (for the cp.async operands) LDGSTS present, no local memory."""
    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    src = tmp_path / "tc.cu"
    src.write_text(
        '#include "kernels/conv2d_dgrad_tensorcore.cuh"\n'
        '#include "kernels/conv2d_fprop_tensorcore.cuh"\n'
        '#include "kernels/conv2d_wgrad_tensorcore.cuh"\n'
        "namespace cuconv::kern {\n"
        "void check_last_launch(const char*) {}\n"
        "template <class P, typename T> void one(const P& p, const T* a) {\n"
        "  launch_implicit_gemm_tensorcore<TcLoad::cp16, tc_scalar_load<T>(false)>(p, a, a, 1, 1, TcPlan{kTcMedium, 3}, 0);\n"
        "}\n"
        "void instantiate(const Conv2dParams& p, const half_t* h, const float* f, float* ws) {\n"
        "  one(Conv2dFpropTcProblem<half_t, true>{}, h);\n"
        "  one(Conv2dDgradTcProblem<half_t, true>{}, h);\n"
        "  one(Conv2dWgradTcProblem<float, false>{}, f);\n"
        "}\n}\n")
    csrc = os.path.join(os.path.dirname(__file__), "..", "csrc")
    obj = str(tmp_path / "tc.o")
    subprocess.run([nvcc, "-std=c++20", "-O3", "--expt-relaxed-constexpr", "-I", csrc, "-arch=sm_80", "-c", str(src),
                    "-o", obj], check=True)
    assert cli.main(["audit", "--check", "--json", "--require", "fprop,dgrad,wgrad", obj]) == 0
    kernels = json.loads(capsys.readouterr().out)["kernels"]
    assert len(kernels) == 3
    assert all(k["hmma"] > 0 and k["ldsm"] > 0 and k["ldgsts"] > 0 and k["local_instructions"] == 0 for k in kernels)
