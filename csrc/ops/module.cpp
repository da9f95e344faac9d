// The Python module cuconv._C: loading it registers the operators (ops/schemas.cpp and the files
// that implement them); it also carries the runtime switches (cuconv.config), the build's
// description, and the direct calls of the public ops that cuconv's functional API makes.
#include <ATen/PythonTorchFunctionTLS.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/python.h>

#include "ops/autograd.h"
#include "ops/config.h"
#include "sim/device.h"

namespace {

// Direct calls: the public ops called through the dispatcher (autograd included) from Python,
// without torch.ops' generic argument conversion, which on a tiny tensor costs more than the op.
// They take the arguments in the form cuconv.ops' wrappers pass them: torch.Tensor or
// nn.Parameter objects, lists or tuples of ints, ints, bools. Anything else (a tensor subclass,
// which may override __torch_function__, an active __torch_function__ mode, another type) makes
// the call return NotImplemented, and the wrapper calls torch.ops, which handles or reports it.
class DirectArgs {
 public:
  // At most 4 ints (padding may have 4), held here for an IntArrayRef.
  struct Ints {
    std::array<int64_t, 4> values{};
    size_t size = 0;
    operator at::IntArrayRef() const { return {values.data(), size}; }
  };

  DirectArgs(PyObject* const* args, Py_ssize_t nargs, Py_ssize_t expected)
      : args_(args), ok_(nargs == expected && !at::impl::torch_function_mode_enabled()) {}
  bool ok() const { return ok_; }

  // Each reader returns a placeholder once an argument is not plain (or their count is wrong).
  at::Tensor tensor(int i) {
    ok_ = ok_ && THPVariable_CheckExact(args_[i]);
    return ok_ ? THPVariable_Unpack(args_[i]) : at::Tensor();
  }
  std::optional<at::Tensor> optional_tensor(int i) {
    if (ok_ && args_[i] == Py_None) return std::nullopt;
    return tensor(i);
  }
  Ints ints(int i) {
    Ints out;
    ok_ = ok_ && (PyList_CheckExact(args_[i]) || PyTuple_CheckExact(args_[i])) &&
          PySequence_Fast_GET_SIZE(args_[i]) <= 4;
    if (!ok_) return out;
    out.size = PySequence_Fast_GET_SIZE(args_[i]);
    for (size_t k = 0; k < out.size; ++k) out.values[k] = integer(PySequence_Fast_ITEMS(args_[i])[k]);
    return out;
  }
  int64_t integer(int i) { return ok_ ? integer(args_[i]) : 0; }
  bool boolean(int i) {
    ok_ = ok_ && PyBool_Check(args_[i]);
    return ok_ && args_[i] == Py_True;
  }

 private:
  int64_t integer(PyObject* o) {
    int overflow = 0;
    ok_ = ok_ && PyLong_CheckExact(o);  // exactly an int: bools and other int types go to torch.ops
    const int64_t v = ok_ ? PyLong_AsLongLongAndOverflow(o, &overflow) : 0;
    ok_ = ok_ && !overflow;
    return v;
  }

  PyObject* const* args_;
  bool ok_;
};

PyObject* wrap(at::Tensor t) { return THPVariable_Wrap(std::move(t)); }
PyObject* wrap(std::tuple<at::Tensor, at::Tensor> t) {
  PyObject* out = PyTuple_New(2);
  if (!out) return nullptr;
  PyTuple_SET_ITEM(out, 0, THPVariable_Wrap(std::move(std::get<0>(t))));
  PyTuple_SET_ITEM(out, 1, THPVariable_Wrap(std::move(std::get<1>(t))));
  return out;
}

template <const char* name, class Result>
PyObject* conv_op(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  DirectArgs a(args, nargs, 7);
  const at::Tensor input = a.tensor(0), weight = a.tensor(1);
  const std::optional<at::Tensor> bias = a.optional_tensor(2);
  const DirectArgs::Ints stride = a.ints(3), padding = a.ints(4), dilation = a.ints(5);
  const int64_t groups = a.integer(6);
  if (!a.ok()) Py_RETURN_NOTIMPLEMENTED;
  static const auto op = cuconv::dispatch::find<cuconv::dispatch::ConvSignature<Result>>(name);
  Result out;
  {
    pybind11::gil_scoped_release no_gil;
    out = op.call(input, weight, bias, stride, padding, dilation, groups);
  }
  return wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

PyObject* max_pool2d_op(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  DirectArgs a(args, nargs, 6);
  const at::Tensor input = a.tensor(0);
  const DirectArgs::Ints kernel_size = a.ints(1), stride = a.ints(2), padding = a.ints(3), dilation = a.ints(4);
  const bool ceil_mode = a.boolean(5);
  if (!a.ok()) Py_RETURN_NOTIMPLEMENTED;
  static const auto op = cuconv::dispatch::find<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool)>(
      "cuconv::max_pool2d");
  std::tuple<at::Tensor, at::Tensor> out;
  {
    pybind11::gil_scoped_release no_gil;
    out = op.call(input, kernel_size, stride, padding, dilation, ceil_mode);
  }
  return wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

constexpr char kConv2d[] = "cuconv::conv2d";
constexpr char kConv2dBiasRelu[] = "cuconv::conv2d_bias_relu";
constexpr char kConv2dBiasReluMaxPool2d[] = "cuconv::conv2d_bias_relu_max_pool2d";

PyMethodDef direct_call(const char* name, _PyCFunctionFast fn) {
  return {name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fn)), METH_FASTCALL,
          "the op of this name in torch.ops.cuconv, called with the functional API's plain arguments; "
          "NotImplemented for any other"};
}

PyMethodDef direct_calls[] = {
    direct_call("conv2d", conv_op<kConv2d, at::Tensor>),
    direct_call("conv2d_bias_relu", conv_op<kConv2dBiasRelu, at::Tensor>),
    direct_call("conv2d_bias_relu_max_pool2d", conv_op<kConv2dBiasReluMaxPool2d, std::tuple<at::Tensor, at::Tensor>>),
    direct_call("max_pool2d", max_pool2d_op),
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "cuconv operators (see torch.ops.cuconv) and runtime switches (see cuconv.config)";
  m.def("_config_values", &cuconv::config::values, "every runtime switch's value, as text");
  m.def("_config_set", &cuconv::config::set, "set one runtime switch from text");
  m.def("_sim_device", &cuconv::sim::device_properties, "the simulated device's properties");
  m.def("_set_sim_device", &cuconv::sim::set_device_properties,
        "set some of the simulated device's properties (an empty dict restores the default)");
  // cuconv._C.direct.<op>(...): the direct calls, in a submodule of their own.
  pybind11::module_ direct = m.def_submodule("direct", "the public ops called without torch.ops (see ops/module.cpp)");
  if (PyModule_AddFunctions(direct.ptr(), direct_calls) != 0) throw pybind11::error_already_set();
#ifdef CUCONV_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
