"""Build cuconv: a CUDAExtension when a CUDA toolkit is found and a GPU is visible (or FORCE_CUDA=1),
a CppExtension otherwise. Prints the configuration it chose."""
import glob
import os
import site
import sys

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def want_cuda():
    import torch

    if os.environ.get("FORCE_CUDA", "0") == "1":
        if cpp_extension.CUDA_HOME is None:
            sys.exit("FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME")
        return True
    return cpp_extension.CUDA_HOME is not None and torch.cuda.is_available()


def nvidia_pip_includes():
    """ATen's CUDA headers include cuBLAS/cuSPARSE headers; torch's nvidia pip packages carry them."""
    dirs = []
    for base in site.getsitepackages() + [site.getusersitepackages()]:
        dirs += glob.glob(os.path.join(base, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(base, "nvidia", "*", "include"))
    return sorted(set(d for d in dirs if os.path.isdir(d)))


def extension():
    with_cuda = want_cuda()
    if with_cuda and not rel("csrc/cuda/*.cu"):
        print("cuconv build: no CUDA sources in csrc/cuda, building the CPU runners only", flush=True)
        with_cuda = False
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp") + rel("csrc/sim/*.cpp")
    # -fopenmp: torch is built with OpenMP, and at::parallel_for is an inline `#pragma omp parallel`
    # in the caller's code; without the flag our CPU kernels would silently run on one thread.
    cxx = ["-O3", "-fvisibility=hidden", "-Wall", "-Wno-unused-function", "-fopenmp"]
    debug = os.environ.get("CUCONV_DEBUG", "0") == "1"
    if debug:
        cxx = ["-O0", "-g", "-fvisibility=hidden", "-fopenmp"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    kwargs = dict(name="cuconv._C", sources=sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx},
                  extra_link_args=["-fopenmp"])
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += rel("csrc/cuda/*.cu")
        include_dirs += nvidia_pip_includes()
        cxx.append("-DCUCONV_WITH_CUDA")
        kwargs["extra_compile_args"]["nvcc"] = ["-O3", "-DCUCONV_WITH_CUDA", "--expt-relaxed-constexpr", "-lineinfo"]
        ext = cpp_extension.CUDAExtension(**kwargs)
    else:
        ext = cpp_extension.CppExtension(**kwargs)
    print(
        f"cuconv build: {'CUDA (' + cpp_extension.CUDA_HOME + ', archs ' + os.environ['TORCH_CUDA_ARCH_LIST'] + ')' if with_cuda else 'CPU only'}"
        f"{', debug' if debug else ''}; {len(sources)} sources",
        flush=True,
    )
    return ext


setup(
    packages=find_packages("pyext"),
    package_dir={"": "pyext"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
