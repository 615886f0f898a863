// Argument checks shared by the per-op binding files. Every argument is validated before any
// pointer reaches a kernel.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstring>
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

// ---- batched_nms bindings (appended)

// "[2, 3, 4]": an array's shape, for error messages.
inline std::string shape_str(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + "]";
}

// Every element of a C-contiguous float32 array (dtype and layout already checked) is finite.
// Tests the exponent bits (all ones = inf or NaN) with an integer OR-reduction, which vectorises:
// the inputs of the NMS ops hold up to a few million floats.
inline void require_all_finite_f32(const py::array& a, const char* name) {
  const auto* p = static_cast<const unsigned char*>(a.data());
  const py::ssize_t n = a.size();
  uint32_t bad = 0;
  for (py::ssize_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, p + 4 * i, sizeof(bits));  // no aliasing of float as uint32
    bad |= static_cast<uint32_t>((bits & 0x7F800000u) == 0x7F800000u);
  }
  if (bad) throw py::value_error(std::string(name) + " contains NaN or inf");
}

// A float attribute that must be finite and within [lo, hi] (also as float32, which the kernels use).
// Needs the GIL (formats the numbers as Python does).
inline void require_float_in(double v, double lo, double hi, const char* name) {
  if (!std::isfinite(v) || !std::isfinite(static_cast<float>(v)) || v < lo || v > hi)
    throw py::value_error(std::string(name) + " must be a finite number in [" + std::string(py::repr(py::float_(lo))) +
                          ", " + std::string(py::repr(py::float_(hi))) + "], got " +
                          std::string(py::repr(py::float_(v))));
}

}  // namespace maskrt_py
