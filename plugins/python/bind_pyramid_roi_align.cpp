// Python bindings of the pyramid_roi_align CPU kernel (the CPU twin of MaskrtPyramidRoIAlign).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "pyramid_roi_align/pyramid_roi_align_kernel.h"
#include "python/checks.h"

namespace py = pybind11;
using namespace maskrt_py;

namespace {

// Largest output_size accepted: P * P bins per channel must stay far from int overflow, and no
// real head pools more than a few dozen bins per side.
constexpr int kMaxOutputSize = 1024;
// Largest fixed sampling ratio: output_size * sampling_ratio taps per axis are tabulated per RoI
// (heads use 0..4; torchvision's default for Mask R-CNN is 2).
constexpr int kMaxSamplingRatio = 1024;

void require_int_range(int64_t v, int64_t lo, int64_t hi, const std::string& name) {
  if (v < lo || v > hi)
    throw py::value_error(name + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                          std::to_string(v));
}

// rois: float32 [B, R, 4]; features: L float32 [B, C, H_l, W_l]; returns float32 [B, R, C, P, P].
py::array_t<float> pyramid_roi_align(const py::array& rois, const py::object& features, int64_t output_size,
                                     int64_t sampling_ratio, bool aligned, const std::vector<int64_t>& strides,
                                     int64_t first_level, double canonical_scale, int64_t canonical_level,
                                     int64_t threads) {
  // ---- attributes
  require_int_range(output_size, 1, kMaxOutputSize, "output_size");
  require_int_range(sampling_ratio, 0, kMaxSamplingRatio, "sampling_ratio");
  if (!std::isfinite(canonical_scale) || !(canonical_scale > 0.0) ||
      !std::isfinite(static_cast<float>(canonical_scale)))
    throw py::value_error("canonical_scale must be a finite float32 > 0, got " + std::to_string(canonical_scale));
  // Level arithmetic stays far from int overflow.
  require_int_range(first_level, -1000, 1000, "first_level");
  require_int_range(canonical_level, -1000, 1000, "canonical_level");
  require_int_range(threads, INT_MIN, INT_MAX, "threads");

  // ---- features: a list/tuple of L arrays (a single ndarray would iterate over its batch axis)
  if (py::isinstance<py::array>(features) || !py::isinstance<py::sequence>(features) ||
      py::isinstance<py::str>(features))
    throw py::value_error("features must be a list or tuple of float32 arrays [B, C, H_l, W_l], one per level");
  const auto seq = py::reinterpret_borrow<py::sequence>(features);
  const auto num_levels = static_cast<int64_t>(py::len(seq));
  require_int_range(num_levels, 1, maskrt::kMaxPyramidLevels, "len(features)");
  if (static_cast<int64_t>(strides.size()) != num_levels)
    throw py::value_error("strides must have one entry per feature level: len(strides) = " +
                          std::to_string(strides.size()) + ", len(features) = " + std::to_string(num_levels));
  for (size_t l = 0; l < strides.size(); ++l)
    require_int_range(strides[l], 1, 1 << 20, "strides[" + std::to_string(l) + "]");

  // ---- rois
  require_dtype<float>(rois, "rois", "float32");
  if (rois.ndim() != 3 || rois.shape(2) != 4)
    throw py::value_error("rois must have shape [B, R, 4], got ndim " + std::to_string(rois.ndim()) +
                          (rois.ndim() == 3 ? " with last dim " + std::to_string(rois.shape(2)) : std::string()));
  require_c_contiguous(rois, "rois");
  const int64_t batch = rois.shape(0), num_rois = rois.shape(1);
  require_int_range(batch, 0, INT_MAX, "rois.shape[0] (B)");
  require_int_range(num_rois, 0, INT_MAX, "rois.shape[1] (R)");
  {
    const float* r = static_cast<const float*>(rois.data());
    for (py::ssize_t i = 0; i < rois.size(); ++i)
      if (!std::isfinite(r[i])) throw py::value_error("rois contains NaN or inf");
  }

  maskrt::PyramidRoiAlignParams p;
  p.batch = static_cast<int>(batch);
  p.num_rois = static_cast<int>(num_rois);
  p.num_levels = static_cast<int>(num_levels);
  p.output_size = static_cast<int>(output_size);
  p.sampling_ratio = static_cast<int>(sampling_ratio);
  p.aligned = aligned;
  p.first_level = static_cast<int>(first_level);
  p.canonical_scale = static_cast<float>(canonical_scale);
  p.canonical_level = static_cast<int>(canonical_level);

  std::vector<py::array> feats;  // keeps every level alive while the GIL is released
  const float* ptrs[maskrt::kMaxPyramidLevels] = {};
  for (int64_t l = 0; l < num_levels; ++l) {
    const std::string name = "features[" + std::to_string(l) + "]";
    py::object item = seq[static_cast<size_t>(l)];
    if (!py::isinstance<py::array>(item))
      throw py::value_error(name + " must be a numpy array, got " + std::string(py::str(py::type::of(item))));
    py::array f = py::reinterpret_borrow<py::array>(item);
    require_dtype<float>(f, name.c_str(), "float32");
    if (f.ndim() != 4)
      throw py::value_error(name + " must have shape [B, C, H, W], got ndim " + std::to_string(f.ndim()));
    require_c_contiguous(f, name.c_str());
    if (f.shape(0) != batch)
      throw py::value_error(name + " has batch " + std::to_string(f.shape(0)) + " but rois has batch " +
                            std::to_string(batch));
    if (l == 0) {
      require_int_range(f.shape(1), 0, INT_MAX, name + ".shape[1] (C)");
      p.channels = static_cast<int>(f.shape(1));
    } else if (f.shape(1) != p.channels) {
      throw py::value_error(name + " has " + std::to_string(f.shape(1)) + " channels but features[0] has " +
                            std::to_string(p.channels));
    }
    require_int_range(f.shape(2), 1, INT_MAX, name + ".shape[2] (H)");
    require_int_range(f.shape(3), 1, INT_MAX, name + ".shape[3] (W)");
    // Offsets within one plane are int32 (as in the CUDA kernel).
    if (f.shape(2) * f.shape(3) > INT_MAX)
      throw py::value_error(name + ": H * W must be < 2^31, got " + std::to_string(f.shape(2) * f.shape(3)));
    p.heights[l] = static_cast<int>(f.shape(2));
    p.widths[l] = static_cast<int>(f.shape(3));
    p.strides[l] = static_cast<int>(strides[static_cast<size_t>(l)]);
    ptrs[l] = static_cast<const float*>(f.data());
    feats.push_back(std::move(f));
  }

  const int64_t P = output_size;
  py::array_t<float> out({batch, num_rois, static_cast<int64_t>(p.channels), P, P});
  float* o = out.mutable_data();
  const float* r = static_cast<const float*>(rois.data());
  {
    py::gil_scoped_release release;
    maskrt::pyramid_roi_align_cpu(p, r, ptrs, o, static_cast<int>(threads));
  }
  return out;
}

}  // namespace

void bind_pyramid_roi_align(py::module_& m) {
  m.def("pyramid_roi_align", &pyramid_roi_align, py::arg("rois"), py::arg("features"), py::arg("output_size") = 7,
        py::arg("sampling_ratio") = 2, py::arg("aligned") = false,
        py::arg("strides") = std::vector<int64_t>{4, 8, 16, 32}, py::arg("first_level") = 2,
        py::arg("canonical_scale") = 224.0, py::arg("canonical_level") = 4, py::arg("threads") = 0,
        R"doc(Multi-level (FPN) RoIAlign: the CPU twin of the TensorRT plugin MaskrtPyramidRoIAlign.

rois: float32 [B, R, 4] (x1, y1, x2, y2) in input pixels, C-contiguous, finite.
features: list/tuple of L (1..8) float32 C-contiguous arrays [B, C, H_l, W_l], one per entry of
    strides (same B as rois, same C on every level).
Each RoI is pooled from level floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6)
clamped to [first_level, first_level + L - 1] (features[0] is level first_level), with
torchvision's roi_align semantics: spatial_scale = 1 / stride, aligned half-pixel shift,
sampling_ratio (0 = adaptive ceil(roi / output_size)), average over each bin's samples.
threads: worker threads (<= 0: all cores). The GIL is released while the kernel runs.
Returns float32 [B, R, C, output_size, output_size]; the result does not depend on threads.)doc");
}
