// maskrt._native: Python bindings of the CPU kernels (the CPU twins of the TensorRT plugins).
// One binding file per op; arguments are validated there before any pointer reaches a kernel,
// and the GIL is released while kernels run.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_batched_nms(py::module_& m);
void bind_pyramid_roi_align(py::module_& m);

PYBIND11_MODULE(_native, m) {
  m.doc() = "maskrt native CPU kernels (the CPU twins of the TensorRT plugins)";
  bind_batched_nms(m);
  bind_pyramid_roi_align(m);
}
