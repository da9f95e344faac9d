"""`python -m cuconv audit`: parsers on captured cuobjdump / nvdisasm text (tests/data/audit, from
tests/data/audit/small.cu, conv_kernels.cu and loops.cu; CUDA 13.x tools from triton), occupancy
arithmetic, the main-loop mix and the baseline gate, and the command on real binaries where the
tools are available."""
import json
import os
import shutil
import subprocess

import pytest

import cuconv
from cuconv.apps import audit, cli
from cuconv.apps.audit import KernelReport, LoopMix

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
    assert tc == dict(hmma=1, ldgsts=0, ldsm=0, ldg128=1, lds128=1, stg128=0, sts128=1, local_instructions=0)
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
    assert fprop == dict(hmma=1, ldgsts=3, ldsm=2, ldg128=0, lds128=0, stg128=0, sts128=0, local_instructions=0)
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


# ------------------------------------------------------------------------------------ main loops

@pytest.mark.parametrize("sample", ["loops_nvdisasm.txt", "loops_sass.txt"])
def test_main_loop_mix(sample):
    """loops.cu: nvdisasm's labels and cuobjdump's addresses give the same loops and counts."""
    reports = {r.name: r for r in audit.audit_texts("", read(sample))}
    mma = reports["_Z9mma_loopsPKjPfijx"]
    assert mma.math_op == "HMMA"
    # two loops with HMMA: the one-barrier loop is the main one (the pipelined shape)
    assert [(m.math, m.count("BAR")) for m in mma.math_loops] == [(1, 2), (2, 1)]
    main = mma.main_loop
    assert (main.math, main.count("BAR"), main.divisions, main.calls) == (2, 1, 0, 0)
    assert main.per_math == main.instructions / 2 and main.count("LDG") == 1 and main.count("STS") == 1
    assert main.ops["HMMA"] == 2 and sum(main.ops.values()) == main.instructions
    assert main.wide == dict(ldg128=0, lds128=0, stg128=0, sts128=0)
    # the grid-stride loop: `i / d64` (inline 32-bit path + a call to __cuda_sm20_div_s64) and `% d`
    assert (mma.loop_divisions, mma.loop_calls) == (3, 1)
    assert (mma.divisions, mma.calls) == (3, 1)  # nothing outside the loops; the subroutine is not the kernel's
    assert mma.outside_loop_instructions == mma.instructions - sum(m.instructions for m in mma.math_loops)
    ffma = reports["_Z9ffma_loopPK6float4PS_i"]
    assert ffma.math_op == "FFMA" and (ffma.main_loop.math, ffma.main_loop.instructions) == (4, 10)
    assert (ffma.divisions, ffma.calls, ffma.loop_divisions, ffma.loop_calls) == (0, 0, 0, 0)


LOOP_EXIT_SASS = """
	code for sm_80
		Function : _Z9exit_loopPfx
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   FFMA R2, R3, R4, R2 ;
        /*0020*/              @!P0 CALL.REL.NOINC 0x0040 ;
        /*0030*/                   BRA 0x0010 ;
        /*0040*/                   CALL.REL.NOINC 0x0070 ;
        /*0050*/                   EXIT ;
        /*0060*/                   BRA 0x0060 ;
        /*0070*/                   I2F.U64.RP R5, R6 ;
        /*0080*/                   RET.REL.NODEC R20 0x0 ;
"""


def test_loop_exit_call_is_not_a_call():
    """ptxas (sm_80) leaves a divergent loop by a CALL.REL.NOINC to its reconvergence point inside
    the kernel; only a CALL past the kernel's last EXIT reaches a subroutine (here a division)."""
    (r,) = audit.audit_texts("", LOOP_EXIT_SASS)
    assert r.main_loop is not None and (r.main_loop.math, r.main_loop.instructions) == (1, 3)
    assert (r.loop_divisions, r.loop_calls) == (0, 0)
    assert (r.divisions, r.calls) == (1, 1)


def test_main_loop_same_in_both_formats():
    a = {r.name: r for r in audit.audit_texts("", read("loops_nvdisasm.txt"))}
    b = {r.name: r for r in audit.audit_texts("", read("loops_sass.txt"))}
    assert a.keys() == b.keys()
    for name in a:
        assert audit.report_dict(a[name]) == audit.report_dict(b[name]), name


def test_no_loop_in_straight_code():
    reports = {r.name: r for r in audit.audit_texts("", read("small_nvdisasm.txt"))}
    tc = next(r for n, r in reports.items() if "tc_sample" in n)
    assert tc.main_loop is None and tc.math_op is None and tc.hmma == 1


def test_describe_kernel_names():
    tc = ("void cuconv::kern::implicit_gemm_tensorcore_kernel<cuconv::kern::Conv2dDgradTcProblem<__nv_bfloat16, "
          "true>, __nv_bfloat16, cuconv::kern::TcTile<128, 64, 4, 2>, (cuconv::kern::TcLoad)4, "
          "(cuconv::kern::TcLoad)0, CUstream_st*>(cuconv::kern::Conv2dDgradTcProblem<__nv_bfloat16, true>, "
          "__nv_bfloat16 const*, __nv_bfloat16 const*, int)")
    info = audit.describe(tc)
    assert info == dict(family="tensorcore", conv_pass="dgrad", dtype="bf16", layout="nhwc", tile="128x64",
                        config="large", warps=8, load_a="cp16", load_b="sync_k")
    assert audit.label_of(info, "") == "tc dgrad bf16 nhwc 128x64 cp16/sync_k"
    tf32 = tc.replace("__nv_bfloat16", "float").replace("true>", "false>").replace("TcLoad)4", "TcLoad)3")
    assert audit.label_of(audit.describe(tf32), "") == "tc dgrad tf32 nchw 128x64 cp4_row/sync_k"
    # the tall tile: 128x64 in 2x2 warps; grad weight's row copies (TcLoad 5) of a problem without a layout flag
    tall = tc.replace("TcTile<128, 64, 4, 2>", "TcTile<128, 64, 2, 2>")
    assert audit.describe(tall)["config"] == "tall"
    assert audit.label_of(audit.describe(tall), "") == "tc dgrad bf16 nhwc 128x64 cp16/sync_k tall"
    mn = ("void cuconv::kern::implicit_gemm_tensorcore_kernel<cuconv::kern::Conv2dWgradTcMnProblem<__half>, __half, "
          "cuconv::kern::TcTile<128, 128, 2, 2>, (cuconv::kern::TcLoad)5, (cuconv::kern::TcLoad)5, CUstream_st*>(x)")
    assert audit.label_of(audit.describe(mn), "") == "tc wgrad f16 nhwc 128x128 cp16_mn/cp16_mn"
    simt = "void cuconv::kern::implicit_gemm_kernel<cuconv::kern::Conv2dFpropReluPoolProblem<float, false>, true, false>(x)"
    assert audit.label_of(audit.describe(simt), "") == "simt fprop+relu+pool f32 nchw"
    assert audit.label_of(audit.describe("void cuconv::kern::max_pool2d_bprop_kernel<__half>(x)"), "") == \
        "max_pool2d_bprop f16"


def _report(label, loop, math, **kw):
    r = KernelReport(name=label, arch="sm_90", label=label, math_op="HMMA",
                     main_loop=LoopMix(0, 16 * loop, instructions=loop, math=math), **kw)
    return r


def test_baseline_gate_passes_improvements_and_fails_regressions(tmp_path):
    today = [_report("a", 500, 16, divisions=1), _report("b", 100, 4, loop_calls=2)]
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(audit.baseline_document(today, slack=0.02)))
    base = audit.load_baseline(str(path))
    assert base["kernels"][("sm_90", "a")]["loop_instructions"] == 500
    assert audit.compare_to_baseline(today, base) == ([], [])
    # within the slack: neither; better: reported as better; worse: a regression
    assert audit.compare_to_baseline([_report("a", 505, 16, divisions=1)], base) == ([], [])
    worse, better = audit.compare_to_baseline([_report("a", 520, 16, divisions=2), _report("b", 80, 4)], base)
    assert len(worse) == 2 and "instructions per HMMA" in worse[0] and "divisions" in worse[1]
    assert len(better) == 2  # b: fewer instructions per HMMA and no loop calls
    assert audit.compare_to_baseline([_report("new kernel", 900, 1)], base) == ([], [])  # not in the baseline
    lost = _report("a", 500, 16, divisions=1)
    lost.main_loop = None
    assert "no main loop" in audit.compare_to_baseline([lost], base)[0][0]


def test_target_misses():
    info = dict(family="tensorcore", config="large", layout="nhwc", conv_pass="fprop", dtype="f16", load_a="sync_k",
                load_b="sync_k")
    ok = _report("ok", 64, 16, info=info)
    slow = _report("slow", 500, 16, info=info)
    medium = _report("medium", 500, 16, info={**info, "config": "medium"})  # only the largest tiles have the target
    pool = _report("pool", 10, 1, loop_calls=3)
    misses = audit.target_misses([ok, slow, medium, pool])
    assert [(m["kernel"], m["value"]) for m in misses] == [("slow", 31.25), ("pool", 3)]
    # a family with a wide tile is held to it, and its large tile no longer is
    cp16 = {**info, "load_a": "cp16", "load_b": "cp16"}
    large = _report("large cp16", 160, 16, info=cp16)
    wide = _report("wide cp16", 320, 64, info={**cp16, "config": "wide"})
    assert [m["kernel"] for m in audit.target_misses([large, wide])] == ["wide cp16"]
    assert audit.target_misses([large]) != []


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
            # fragments by ldmatrix; TF32 grad weight's k-major tiles by 32-bit shared loads
            # (ldmatrix.trans moves 16-bit elements)
            word_loads = "Conv2dWgradTcMnProblem<float>" in k["demangled"]
            assert k["hmma"] > 0 and (k["ldsm"] > 0) != word_loads, k["demangled"]
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


# ------------------------------------------------------------------------------------ the gate

@pytest.fixture(scope="module")
def built_sm90():
    """The built extension's sm_90 kernels with their main-loop mix (nvdisasm, one cubin per process)."""
    if not getattr(cuconv._C, "with_cuda", False) or tool_or_none("nvdisasm") is None:
        pytest.skip("needs a CUDA build and nvdisasm")
    return audit.audit_texts("", audit.disassemble(audit.extension_path(), {"sm_90"}))


def test_built_kernels_not_worse_than_the_baseline(built_sm90):
    """CI's gate on the counts: no kernel's main loop has more instructions per HMMA / FMA than
    tests/data/audit_baseline.json records (beyond its slack), and no kernel more divisions or calls,
    in its loops or in all. Improvements pass; re-record the baseline to keep them."""
    base = audit.load_baseline(audit.DEFAULT_BASELINE)
    worse, _ = audit.compare_to_baseline(built_sm90, base)
    assert not worse, "\n".join(worse)
    # a kernel missing from the baseline would escape the gate
    new = [r.label for r in built_sm90 if ("sm_90", r.label) not in base["kernels"]]
    assert not new, new


def test_built_main_loops_found(built_sm90):
    """Every tensor-core kernel's main loop is found, holds its HMMAs and has one barrier per slice
    (the pipelined loop; the one-stage loop, with two, is the other); every SIMT conv kernel's main
    loop is an FFMA loop (DFMA in float64); and a target miss is reported exactly where a count exceeds its limit."""
    tc = [r for r in built_sm90 if r.info.get("family") == "tensorcore"]
    simt = [r for r in built_sm90 if r.info.get("family") == "simt"]
    assert tc and simt
    for r in tc:
        assert r.math_op == "HMMA" and r.main_loop and r.main_loop.math > 0, r.label
        assert r.main_loop.count("BAR") == 1 and r.main_loop.per_math > 1, r.label
        one = audit.one_stage_loop(r)
        assert one is None or one.count("BAR") == 2, r.label
    for r in simt:
        assert r.math_op == ("DFMA" if r.info["dtype"] == "f64" else "FFMA") and r.main_loop.math > 0, r.label
    for m in audit.target_misses(built_sm90):
        assert m["value"] > m["limit"]
