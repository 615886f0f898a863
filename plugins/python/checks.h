// Argument checks shared by the per-op binding files. Every argument is validated before any
// pointer reaches a kernel.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

namespace maskrt_py {

namespace py = pybind11;


template <typename T>
inline void require_dtype(const py::array& a, const char* name, const char* dtype_name) {
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::value_error(std::string(name) + " must have dtype " + dtype_name + ", got " +
                          std::string(py::str(a.dtype())));
}

inline void require_c_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
}

inline void require_boxes(const py::array& a, const char* name) {
  require_dtype<float>(a, name, "float32");
  if (a.ndim() != 2 || a.shape(1) != 4)
    throw py::value_error(std::string(name) + " must have shape [N, 4], got ndim " + std::to_string(a.ndim()));
  require_c_contiguous(a, name);
  const float* p = static_cast<const float*>(a.data());
  for (py::ssize_t i = 0; i < a.size(); ++i)
    if (!std::isfinite(p[i])) throw py::value_error(std::string(name) + " contains NaN or inf");
}


}  // namespace maskrt_py
