// The Python module cuconv._C: loading it registers the operators (ops.cpp); it also carries the
// runtime switches and the build's description.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/python.h>

#include "runners.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "cuconv operators (see torch.ops.cuconv)";
  m.def("simulate_enabled", &cuconv::simulate_enabled, "CPU tensors run through the simulated CUDA kernels");
  m.def("set_simulate_enabled", &cuconv::set_simulate_enabled);
  m.def("poison_enabled", &cuconv::poison_enabled, "outputs are filled with NaN before kernels run");
  m.def("set_poison_enabled", &cuconv::set_poison_enabled);
  m.def("_sim_device", &cuconv::sim::device_properties, "the simulated device's properties");
  m.def("_set_sim_device", &cuconv::sim::set_device_properties,
        "set some of the simulated device's properties (an empty dict restores the default)");
  m.def("_conv2d_wgrad_splits", &cuconv::sim::conv2d_wgrad_splits,
        "split-K chunks of the simulated grad-weight kernel for a convolution on the simulated device");
#ifdef CUCONV_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
