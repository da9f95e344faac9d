"""Build cuconv's Python extension from the one build definition, csrc/build.json (CMakeLists.txt
reads it too). CUDA kernels are compiled when torch is a CUDA build and a CUDA toolkit is found
(CUDA_HOME, else /usr/local/cuda, else nvcc on PATH), with or without a GPU; CUCONV_WITH_CUDA=0
skips them and CUCONV_WITH_CUDA=1 makes a missing toolkit an error. CUCONV_DEBUG=1 builds -O0 -g."""
import glob
import json
import os
import site
import sys

from setuptools import find_packages, setup

# The toolkit's documented default location before whatever nvcc is on PATH (torch's own search
# takes PATH first, where a stray nvcc wrapper may sit outside any toolkit).
if not os.environ.get("CUDA_HOME") and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
from torch.utils import cpp_extension  # noqa: E402  (reads CUDA_HOME when imported)

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD = json.load(open(os.path.join(ROOT, "csrc", "build.json")))


def sources(patterns):
    return sorted({os.path.relpath(p, ROOT) for pat in patterns for p in glob.glob(os.path.join(ROOT, pat))})


def want_cuda():
    import torch

    setting = os.environ.get("CUCONV_WITH_CUDA", "auto")
    if setting not in ("auto", "0", "1"):
        sys.exit(f"CUCONV_WITH_CUDA must be auto, 0 or 1, got {setting!r}")
    found = cpp_extension.CUDA_HOME is not None and torch.version.cuda is not None
    if setting == "1" and not found:
        sys.exit("CUCONV_WITH_CUDA=1 but " + ("torch is not a CUDA build" if torch.version.cuda is None
                                              else "no CUDA toolkit was found: set CUDA_HOME"))
    return setting != "0" and found


def nvidia_pip_includes():
    """ATen's CUDA headers include cuBLAS/cuSPARSE headers; torch's nvidia pip packages carry them."""
    dirs = []
    for base in site.getsitepackages() + [site.getusersitepackages()]:
        dirs += glob.glob(os.path.join(base, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(base, "nvidia", "*", "include"))
    return sorted(set(d for d in dirs if os.path.isdir(d)))


def extension():
    with_cuda = want_cuda()
    debug = os.environ.get("CUCONV_DEBUG", "0") == "1"
    srcs = sources(BUILD["cxx_sources"])
    cxx = BUILD["cxx_flags"] + BUILD["python_module_cxx_flags"] + (BUILD["cxx_debug_flags"] if debug else BUILD["cxx_release_flags"])
    include_dirs = [os.path.join(ROOT, d) for d in BUILD["include_dirs"]]
    kwargs = dict(name="cuconv._C", include_dirs=include_dirs, extra_link_args=BUILD["link_flags"])
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", BUILD["cuda_archs"])
        srcs += sources(BUILD["cuda_sources"])
        include_dirs += nvidia_pip_includes()
        define = "-D" + BUILD["cuda_define"]
        kwargs["extra_compile_args"] = {"cxx": cxx + [define], "nvcc": BUILD["nvcc_flags"] + [define]}
        ext = cpp_extension.CUDAExtension(sources=srcs, **kwargs)
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        ext = cpp_extension.CppExtension(sources=srcs, **kwargs)
    where = f"CUDA ({cpp_extension.CUDA_HOME}, archs {os.environ['TORCH_CUDA_ARCH_LIST']})" if with_cuda else "CPU only"
    print(f"cuconv build: {where}{', debug' if debug else ''}; {len(srcs)} sources", flush=True)
    return ext


setup(
    packages=find_packages("pyext"),
    package_dir={"": "pyext"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
