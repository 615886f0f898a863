// Python bindings of the pyramid_roi_align CPU kernel.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_pyramid_roi_align(py::module_& m) { (void)m; }
