// The Python module cuconv._C: loading it registers the operators (ops/schemas.cpp and the files
// that implement them); it also carries the runtime switches (cuconv.config) and the build's
// description.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/python.h>

#include "ops/config.h"
#include "sim/device.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "cuconv operators (see torch.ops.cuconv) and runtime switches (see cuconv.config)";
  m.def("_config_values", &cuconv::config::values, "every runtime switch's value, as text");
  m.def("_config_set", &cuconv::config::set, "set one runtime switch from text");
  m.def("_sim_device", &cuconv::sim::device_properties, "the simulated device's properties");
  m.def("_set_sim_device", &cuconv::sim::set_device_properties,
        "set some of the simulated device's properties (an empty dict restores the default)");
#ifdef CUCONV_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
