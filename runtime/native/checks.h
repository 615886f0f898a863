// Argument checks of the maskrt._core bindings: every array and attribute is validated here,
// before any pointer reaches a kernel, with a ValueError that names the argument.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "letterbox.h"

namespace maskrt {
namespace core {
namespace py_checks {

namespace py = pybind11;

[[noreturn]] inline void fail(const std::string& msg) { throw py::value_error(msg); }

// "[2, 3, 4]": an array's shape, for error messages.
inline std::string shape_str(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + "]";
}

inline std::string dtype_str(const py::array& a) { return std::string(py::str(a.dtype())); }

template <typename T>
inline bool has_dtype(const py::array& a) {
  return a.dtype().is(py::dtype::of<T>());
}

template <typename T>
inline void require_dtype(const py::array& a, const std::string& name, const char* dtype_name) {
  if (!has_dtype<T>(a)) fail(name + " must have dtype " + dtype_name + ", got " + dtype_str(a));
}

inline void require_ndim(const py::array& a, const std::string& name, py::ssize_t ndim, const char* layout) {
  if (a.ndim() != ndim) fail(name + " must have shape " + layout + ", got " + shape_str(a));
}

inline void require_c_contiguous(const py::array& a, const std::string& name) {
  if (!(a.flags() & py::array::c_style))
    fail(name + " must be C-contiguous (use numpy.ascontiguousarray), got strides that are not");
}

inline void require_writeable(const py::array& a, const std::string& name) {
  if (!a.writeable()) fail(name + " is read-only: it is written in place");
}

inline void require_int_in(int64_t v, int64_t lo, int64_t hi, const std::string& name) {
  if (v < lo || v > hi)
    fail(name + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
}

inline void require_float_in(double v, double lo, double hi, const std::string& name) {
  if (!std::isfinite(v) || v < lo || v > hi)
    fail(name + " must be a finite number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
         std::to_string(v));
}

// Every element of a C-contiguous float32 array is finite (exponent bits not all ones).
inline void require_all_finite_f32(const py::array& a, const std::string& name) {
  const auto* p = static_cast<const unsigned char*>(a.data());
  const py::ssize_t n = a.size();
  uint32_t bad = 0;
  for (py::ssize_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, p + 4 * i, sizeof(bits));
    bad |= static_cast<uint32_t>((bits & 0x7F800000u) == 0x7F800000u);
  }
  if (bad) fail(name + " contains NaN or inf");
}

// Largest image side accepted (rows and 3 * columns must fit an int in the kernels).
constexpr int64_t kMaxSide = (int64_t{1} << 28);

// A uint8 [H, W, 3] image with interleaved channels: pixel stride 3 bytes, channel stride 1,
// any row stride >= 3 * W (e.g. a crop of a larger frame, or one row of a batch array).
inline ImageU8C3 image_arg(const py::array& a, const std::string& name, bool writeable) {
  require_dtype<uint8_t>(a, name, "uint8");
  require_ndim(a, name, 3, "[H, W, 3]");
  if (a.shape(2) != 3) fail(name + " must have shape [H, W, 3] (3 channels), got " + shape_str(a));
  require_int_in(a.shape(0), 1, kMaxSide, name + ".shape[0] (H)");
  require_int_in(a.shape(1), 1, kMaxSide, name + ".shape[1] (W)");
  if (a.strides(2) != 1 || a.strides(1) != 3 || a.strides(0) < 3 * a.shape(1))
    fail(name + " must have interleaved rows of packed pixels (strides [>= 3 * W, 3, 1]), got strides [" +
         std::to_string(a.strides(0)) + ", " + std::to_string(a.strides(1)) + ", " + std::to_string(a.strides(2)) +
         "] (use numpy.ascontiguousarray)");
  if (writeable) require_writeable(a, name);
  ImageU8C3 im;
  im.data = writeable ? static_cast<uint8_t*>(const_cast<py::array&>(a).mutable_data())
                      : const_cast<uint8_t*>(static_cast<const uint8_t*>(a.data()));
  im.height = static_cast<int>(a.shape(0));
  im.width = static_cast<int>(a.shape(1));
  im.stride = a.strides(0);
  return im;
}

// Byte range [first, last) an image's pixels span.
inline bool images_overlap(const ImageU8C3& a, const ImageU8C3& b) {
  const uint8_t* a0 = a.data;
  const uint8_t* a1 = a.data + a.stride * (a.height - 1) + 3 * a.width;
  const uint8_t* b0 = b.data;
  const uint8_t* b1 = b.data + b.stride * (b.height - 1) + 3 * b.width;
  return a0 < b1 && b0 < a1;
}

inline int threads_arg(int64_t threads) {
  require_int_in(threads, INT_MIN, 4096, "threads");
  return static_cast<int>(threads);
}

}  // namespace py_checks
}  // namespace core
}  // namespace maskrt
