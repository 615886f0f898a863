// Python bindings of the batched_nms CPU kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>

#include "batched_nms/batched_nms_cpu.h"
#include "python/checks.h"

namespace py = pybind11;
using namespace maskrt_py;

namespace {

py::array_t<int64_t> nms(const py::array& boxes, const py::array& scores, float iou_threshold,
                         const std::optional<py::array>& classes, int64_t max_keep) {
  require_boxes(boxes, "boxes");
  require_dtype<float>(scores, "scores", "float32");
  require_c_contiguous(scores, "scores");
  const int64_t n = boxes.shape(0);
  if (scores.ndim() != 1 || scores.shape(0) != n)
    throw py::value_error("scores must have shape [N] matching boxes [N, 4]");
  const float* s = static_cast<const float*>(scores.data());
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(s[i])) throw py::value_error("scores contains NaN or inf");
  if (!std::isfinite(iou_threshold) || iou_threshold < 0.0f || iou_threshold > 1.0f)
    throw py::value_error("iou_threshold must be in [0, 1]");
  const int64_t* cls = nullptr;
  if (classes.has_value()) {
    require_dtype<int64_t>(*classes, "classes", "int64");
    require_c_contiguous(*classes, "classes");
    if (classes->ndim() != 1 || classes->shape(0) != n)
      throw py::value_error("classes must have shape [N] matching boxes [N, 4]");
    cls = static_cast<const int64_t*>(classes->data());
  }
  py::array_t<int64_t> keep(n);
  int64_t* out = keep.mutable_data();
  const float* b = static_cast<const float*>(boxes.data());
  int64_t kept;
  {
    py::gil_scoped_release release;
    kept = maskrt::nms_cpu(b, s, cls, n, iou_threshold, max_keep, out);
  }
  keep.resize({kept});
  return keep;
}

py::array_t<float> box_iou(const py::array& a, const py::array& b) {
  require_boxes(a, "a");
  require_boxes(b, "b");
  const int64_t n = a.shape(0), m = b.shape(0);
  py::array_t<float> out({n, m});
  float* o = out.mutable_data();
  const float* pa = static_cast<const float*>(a.data());
  const float* pb = static_cast<const float*>(b.data());
  {
    py::gil_scoped_release release;
    maskrt::box_iou_cpu(pa, n, pb, m, o);
  }
  return out;
}

}  // namespace

void bind_batched_nms(py::module_& m) {
  m.def("nms", &nms, py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"),
        py::arg("classes") = py::none(), py::arg("max_keep") = -1,
        R"doc(Greedy NMS, suppressing at IoU > iou_threshold, stable on score ties.

boxes: float32 [N, 4] (x1, y1, x2, y2), C-contiguous, finite. scores: float32 [N], finite.
classes: optional int64 [N]; when given, only boxes of one class suppress each other.
max_keep: stop after this many kept boxes (-1: no limit).
Returns int64 [K]: indices of kept boxes in descending score order.)doc");
  m.def("box_iou", &box_iou, py::arg("a"), py::arg("b"),
        "Pairwise IoU. a: float32 [N, 4], b: float32 [M, 4] -> float32 [N, M].");
}
