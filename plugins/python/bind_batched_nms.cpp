// Python bindings of the batched_nms CPU kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "batched_nms/batched_nms_cpu.h"
#include "batched_nms/batched_nms_kernel.h"
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
  if (n > INT_MAX) throw py::value_error("boxes: at most 2^31 - 1 boxes");
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

void require_int_in(int64_t v, int64_t lo, int64_t hi, const std::string& name) {
  if (v < lo || v > hi)
    throw py::value_error(name + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                          std::to_string(v));
}

// boxes float32 [B, N, 4], logits float32 [B, N] ->
// (rois float32 [B, post, 4], roi_scores float32 [B, post], num_rois int32 [B]).
py::tuple rpn_nms(const py::array& boxes, const py::array& logits, const std::vector<int64_t>& level_sizes,
                  int64_t pre_nms_top_n, int64_t post_nms_top_n, double iou_threshold, double min_size,
                  double score_threshold, int64_t threads) {
  // ---- attributes
  require_int_in(static_cast<int64_t>(level_sizes.size()), 1, maskrt::kMaxNmsLevels, "len(level_sizes)");
  for (size_t l = 0; l < level_sizes.size(); ++l)
    require_int_in(level_sizes[l], 0, INT_MAX, "level_sizes[" + std::to_string(l) + "]");
  require_int_in(pre_nms_top_n, 1, INT_MAX, "pre_nms_top_n");
  require_int_in(post_nms_top_n, 1, INT_MAX, "post_nms_top_n");
  require_float_in(iou_threshold, 0.0, 1.0, "iou_threshold");
  require_float_in(min_size, 0.0, 1e30, "min_size");
  require_float_in(score_threshold, 0.0, 1.0, "score_threshold");
  require_int_in(threads, INT_MIN, INT_MAX, "threads");

  // ---- boxes, logits
  require_dtype<float>(boxes, "boxes", "float32");
  if (boxes.ndim() != 3 || boxes.shape(2) != 4)
    throw py::value_error("boxes must have shape [B, N, 4], got " + shape_str(boxes));
  require_c_contiguous(boxes, "boxes");
  require_dtype<float>(logits, "logits", "float32");
  if (logits.ndim() != 2 || logits.shape(0) != boxes.shape(0) || logits.shape(1) != boxes.shape(1))
    throw py::value_error("logits must have shape [B, N] = [" + std::to_string(boxes.shape(0)) + ", " +
                          std::to_string(boxes.shape(1)) + "] matching boxes, got " + shape_str(logits));
  require_c_contiguous(logits, "logits");
  const int64_t batch = boxes.shape(0), n = boxes.shape(1);
  require_int_in(batch, 0, INT_MAX, "boxes.shape[0] (B)");
  require_int_in(n, 0, INT_MAX, "boxes.shape[1] (N)");
  int64_t total = 0;
  for (int64_t s : level_sizes) total += s;
  if (total != n)
    throw py::value_error("sum(level_sizes) = " + std::to_string(total) + " must equal N = " + std::to_string(n));
  require_all_finite_f32(boxes, "boxes");
  require_all_finite_f32(logits, "logits");

  maskrt::RpnNmsParams p;
  p.batch = static_cast<int>(batch);
  p.num_anchors = static_cast<int>(n);
  p.num_levels = static_cast<int>(level_sizes.size());
  for (size_t l = 0; l < level_sizes.size(); ++l) p.level_sizes[l] = static_cast<int>(level_sizes[l]);
  p.pre_nms_top_n = static_cast<int>(pre_nms_top_n);
  p.post_nms_top_n = static_cast<int>(post_nms_top_n);
  p.iou_threshold = static_cast<float>(iou_threshold);
  p.min_size = static_cast<float>(min_size);
  p.score_threshold = static_cast<float>(score_threshold);

  py::array_t<float> rois({batch, post_nms_top_n, int64_t{4}});
  py::array_t<float> roi_scores({batch, post_nms_top_n});
  py::array_t<int32_t> num_rois(batch);
  const float* b = static_cast<const float*>(boxes.data());
  const float* lg = static_cast<const float*>(logits.data());
  float* o_rois = rois.mutable_data();
  float* o_scores = roi_scores.mutable_data();
  int32_t* o_count = num_rois.mutable_data();
  {
    py::gil_scoped_release release;
    maskrt::rpn_nms_cpu(p, b, lg, o_rois, o_scores, o_count, static_cast<int>(threads));
  }
  return py::make_tuple(rois, roi_scores, num_rois);
}

// boxes float32 [B, R, C, 4], scores float32 [B, R, C], num_rois int32 [B] or None ->
// (num_detections int32 [B], boxes float32 [B, K, 4], scores float32 [B, K], classes int32 [B, K]).
py::tuple detection_nms(const py::array& boxes, const py::array& scores, const std::optional<py::array>& num_rois,
                        double score_threshold, double iou_threshold, int64_t max_detections, double min_size,
                        int64_t class_offset, int64_t threads) {
  // ---- attributes
  require_float_in(score_threshold, 0.0, 1.0, "score_threshold");
  require_float_in(iou_threshold, 0.0, 1.0, "iou_threshold");
  require_int_in(max_detections, 1, INT_MAX, "max_detections");
  require_float_in(min_size, 0.0, 1e30, "min_size");
  require_int_in(class_offset, 0, INT_MAX, "class_offset");
  require_int_in(threads, INT_MIN, INT_MAX, "threads");

  // ---- boxes, scores
  require_dtype<float>(boxes, "boxes", "float32");
  if (boxes.ndim() != 4 || boxes.shape(3) != 4)
    throw py::value_error("boxes must have shape [B, R, C, 4], got " + shape_str(boxes));
  require_c_contiguous(boxes, "boxes");
  const int64_t batch = boxes.shape(0), rows = boxes.shape(1), classes = boxes.shape(2);
  require_dtype<float>(scores, "scores", "float32");
  if (scores.ndim() != 3 || scores.shape(0) != batch || scores.shape(1) != rows || scores.shape(2) != classes)
    throw py::value_error("scores must have shape [B, R, C] = [" + std::to_string(batch) + ", " +
                          std::to_string(rows) + ", " + std::to_string(classes) + "] matching boxes, got " +
                          shape_str(scores));
  require_c_contiguous(scores, "scores");
  require_int_in(batch, 0, INT_MAX, "boxes.shape[0] (B)");
  require_int_in(rows, 0, INT_MAX, "boxes.shape[1] (R)");
  require_int_in(classes, 0, INT_MAX, "boxes.shape[2] (C)");
  // Candidates are indexed r * C + c in 32 bits; class ids c + class_offset are int32.
  if (rows * classes > INT_MAX)
    throw py::value_error("R * C = " + std::to_string(rows * classes) + " must be < 2^31");
  require_int_in(class_offset + classes, 0, INT_MAX, "class_offset + C");
  require_all_finite_f32(boxes, "boxes");
  require_all_finite_f32(scores, "scores");

  // ---- num_rois
  const int32_t* nr = nullptr;
  if (num_rois.has_value()) {
    require_dtype<int32_t>(*num_rois, "num_rois", "int32");
    if (num_rois->ndim() != 1 || num_rois->shape(0) != batch)
      throw py::value_error("num_rois must have shape [B] = [" + std::to_string(batch) + "], got " +
                            shape_str(*num_rois));
    require_c_contiguous(*num_rois, "num_rois");
    nr = static_cast<const int32_t*>(num_rois->data());
    for (int64_t i = 0; i < batch; ++i)
      if (nr[i] < 0 || nr[i] > rows)
        throw py::value_error("num_rois[" + std::to_string(i) + "] = " + std::to_string(nr[i]) + " must be in [0, R = " +
                              std::to_string(rows) + "]");
  }

  maskrt::DetectionNmsParams p;
  p.batch = static_cast<int>(batch);
  p.num_rois = static_cast<int>(rows);
  p.num_classes = static_cast<int>(classes);
  p.score_threshold = static_cast<float>(score_threshold);
  p.iou_threshold = static_cast<float>(iou_threshold);
  p.max_detections = static_cast<int>(max_detections);
  p.min_size = static_cast<float>(min_size);
  p.class_offset = static_cast<int>(class_offset);

  py::array_t<int32_t> num_detections(batch);
  py::array_t<float> det_boxes({batch, max_detections, int64_t{4}});
  py::array_t<float> det_scores({batch, max_detections});
  py::array_t<int32_t> det_classes({batch, max_detections});
  const float* b = static_cast<const float*>(boxes.data());
  const float* s = static_cast<const float*>(scores.data());
  int32_t* o_count = num_detections.mutable_data();
  float* o_boxes = det_boxes.mutable_data();
  float* o_scores = det_scores.mutable_data();
  int32_t* o_classes = det_classes.mutable_data();
  {
    py::gil_scoped_release release;
    maskrt::detection_nms_cpu(p, b, s, nr, o_count, o_boxes, o_scores, o_classes, static_cast<int>(threads));
  }
  return py::make_tuple(num_detections, det_boxes, det_scores, det_classes);
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
  m.def("rpn_nms", &rpn_nms, py::arg("boxes"), py::arg("logits"), py::arg("level_sizes"),
        py::arg("pre_nms_top_n") = 1000, py::arg("post_nms_top_n") = 1000, py::arg("iou_threshold") = 0.7,
        py::arg("min_size") = 1e-3, py::arg("score_threshold") = 0.0, py::arg("threads") = 0,
        R"doc(RPN proposal selection (CPU twin of the MaskrtRpnNMS TensorRT plugin).

boxes: float32 [B, N, 4] decoded, clipped proposals of every anchor (x1, y1, x2, y2), levels
concatenated in order; logits: float32 [B, N] objectness logits; level_sizes: anchors per level
(1..8 levels, sum = N). Per level: top pre_nms_top_n logits (descending, ties by anchor index),
score = sigmoid(logit) (double, rounded to float32), keep width and height >= min_size and
score >= score_threshold, NMS within the level (suppress at IoU > iou_threshold); then all levels
merged by descending score (ties by level, then rank), first post_nms_top_n.
threads <= 0: one per hardware thread. Releases the GIL.
Returns (rois float32 [B, post, 4], roi_scores float32 [B, post], num_rois int32 [B]); rows at or
past num_rois are zeros.)doc");
  m.def("detection_nms", &detection_nms, py::arg("boxes"), py::arg("scores"), py::arg("num_rois") = py::none(),
        py::arg("score_threshold") = 0.05, py::arg("iou_threshold") = 0.5, py::arg("max_detections") = 100,
        py::arg("min_size") = 1e-2, py::arg("class_offset") = 1, py::arg("threads") = 0,
        R"doc(Box-head detection selection (CPU twin of the MaskrtDetectionNMS TensorRT plugin).

boxes: float32 [B, R, C, 4] class-specific boxes of the C foreground classes; scores: float32
[B, R, C]; num_rois: int32 [B] (rows r >= num_rois[b] ignored) or None (all R rows).
Candidates (r, c), flat index r * C + c: keep score > score_threshold (strictly) and width and
height >= min_size; NMS per class (suppress at IoU > iou_threshold); all kept merged by descending
score, ties by flat index; first max_detections; class id = c + class_offset.
threads <= 0: one per hardware thread. Releases the GIL.
Returns (num_detections int32 [B], boxes float32 [B, K, 4], scores float32 [B, K], classes int32
[B, K]); rows at or past num_detections are zeros.)doc");
}
