// maskrt._core: the native runtime core (letterbox, mask paste, RLE, overlay) for Python.
// runtime/native_core.py wraps it (documentation of shapes, dtypes and rules lives there and in
// the headers). Every argument is validated here before any pointer reaches a kernel, and the GIL
// is released while kernels run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "letterbox.h"
#include "overlay.h"
#include "paste.h"
#include "rle.h"

namespace py = pybind11;
using namespace maskrt::core;
using namespace maskrt::core::py_checks;

namespace {

// ------------------------------------------------------------------ letterbox

// image uint8 [h, w, 3], out uint8 [H, W, 3] (written fully) -> (new_h, new_w).
py::tuple py_letterbox(const py::array& image, const py::array& out, bool upscale, int64_t pad_value, int64_t threads) {
  const ImageU8C3 src = image_arg(image, "image", false);
  const ImageU8C3 dst = image_arg(out, "out", true);
  require_int_in(pad_value, 0, 255, "pad_value");
  const int nt = threads_arg(threads);
  if (images_overlap(src, dst)) fail("out must not overlap image");
  LetterboxSize sz;
  {
    py::gil_scoped_release release;
    sz = letterbox_u8c3(src, dst, upscale, static_cast<uint8_t>(pad_value), nt);
  }
  return py::make_tuple(sz.height, sz.width);
}

// image uint8 [h, w, 3] -> out uint8 [H, W, 3]: cv2.resize(image, (W, H), INTER_LINEAR).
void py_resize_linear(const py::array& image, const py::array& out, int64_t threads) {
  const ImageU8C3 src = image_arg(image, "image", false);
  const ImageU8C3 dst = image_arg(out, "out", true);
  const int nt = threads_arg(threads);
  if (images_overlap(src, dst)) fail("out must not overlap image");
  py::gil_scoped_release release;
  resize_linear_u8c3(src, dst, nt);
}

// ------------------------------------------------------------------ paste

// masks float32 [K, M, M], boxes float32 [K, 4], (height, width), threshold -> PasteArgs.
PasteArgs paste_args(const py::array& masks, const py::array& boxes, int64_t height, int64_t width, double threshold,
                     bool rle) {
  require_dtype<float>(masks, "masks", "float32");
  require_ndim(masks, "masks", 3, "[K, M, M]");
  if (masks.shape(1) != masks.shape(2)) fail("masks must have shape [K, M, M] (square masks), got " + shape_str(masks));
  require_c_contiguous(masks, "masks");
  const int64_t k = masks.shape(0), m = masks.shape(1);
  require_int_in(k, 0, INT32_MAX, "masks.shape[0] (K)");
  if (k > 0) require_int_in(m, 1, 1 << 14, "masks.shape[1] (M)");
  require_dtype<float>(boxes, "boxes", "float32");
  if (boxes.ndim() != 2 || boxes.shape(0) != k || boxes.shape(1) != 4)
    fail("boxes must have shape [K, 4] = [" + std::to_string(k) + ", 4] matching masks, got " + shape_str(boxes));
  require_c_contiguous(boxes, "boxes");
  require_int_in(height, 1, kMaxSide, "image_size[0] (H)");
  require_int_in(width, 1, kMaxSide, "image_size[1] (W)");
  if (rle && height * width > int64_t{UINT32_MAX})
    fail("image_size: H * W must be < 2^32 for COCO RLE, got " + std::to_string(height * width));
  // NOTE: >= 0: the kernels write only each box's visible region (the rest stays 0, background),
  // while torchvision's rule (pasted probability > threshold, 0 outside the box) would make every
  // pixel outside the box foreground for a negative threshold.
  if (!std::isfinite(threshold) || threshold < 0.0)
    fail("threshold must be a finite number >= 0, got " + std::to_string(threshold));
  require_all_finite_f32(masks, "masks");
  require_all_finite_f32(boxes, "boxes");
  PasteArgs a;
  a.masks = static_cast<const float*>(masks.data());
  a.boxes = static_cast<const float*>(boxes.data());
  a.k = k;
  a.m = static_cast<int>(m);
  a.height = static_cast<int>(height);
  a.width = static_cast<int>(width);
  a.threshold = threshold;
  return a;
}

py::array zeros(py::tuple shape, const char* dtype) {
  // NOTE: numpy.zeros gets calloc'd (lazily zeroed) memory: the kernels write only the visible
  // box regions, so the untouched pages of a [K, H, W] result are never written at all.
  return py::module_::import("numpy").attr("zeros")(shape, py::arg("dtype") = dtype).cast<py::array>();
}

py::array py_paste_masks(const py::array& masks, const py::array& boxes, int64_t height, int64_t width, double threshold,
                      int64_t threads) {
  const PasteArgs a = paste_args(masks, boxes, height, width, threshold, false);
  const int nt = threads_arg(threads);
  py::array out = zeros(py::make_tuple(a.k, height, width), "bool");
  auto* p = static_cast<uint8_t*>(out.mutable_data());
  {
    py::gil_scoped_release release;
    maskrt::core::paste_masks(a, p, nt);
  }
  return out;
}

template <typename Label>
py::array paste_label_map_t(const PasteArgs& a, const py::array& labels, int nt, const char* dtype) {
  const Label* lab = static_cast<const Label*>(labels.data());
  for (int64_t i = 0; i < a.k; ++i)
    if (static_cast<int64_t>(lab[i]) < 1)
      fail("labels[" + std::to_string(i) + "] = " + std::to_string(static_cast<int64_t>(lab[i])) +
           " must be >= 1 (0 is the background)");
  py::array out = zeros(py::make_tuple(a.height, a.width), dtype);
  auto* p = static_cast<Label*>(out.mutable_data());
  {
    py::gil_scoped_release release;
    maskrt::core::paste_label_map<Label>(a, lab, p, nt);
  }
  return out;
}

// labels uint16 or int32 [K] (>= 1) -> label map of the same dtype [H, W].
py::array py_paste_label_map(const py::array& masks, const py::array& boxes, int64_t height, int64_t width,
                          const py::array& labels, double threshold, int64_t threads) {
  const PasteArgs a = paste_args(masks, boxes, height, width, threshold, false);
  const int nt = threads_arg(threads);
  if (labels.ndim() != 1 || labels.shape(0) != a.k)
    fail("labels must have shape [K] = [" + std::to_string(a.k) + "] matching masks, got " + shape_str(labels));
  require_c_contiguous(labels, "labels");
  if (has_dtype<uint16_t>(labels)) return paste_label_map_t<uint16_t>(a, labels, nt, "uint16");
  if (has_dtype<int32_t>(labels)) return paste_label_map_t<int32_t>(a, labels, nt, "int32");
  fail("labels must have dtype uint16 or int32, got " + dtype_str(labels));
}

py::list rle_dicts(const std::vector<std::string>& counts, int64_t height, int64_t width) {
  py::list out;
  for (const std::string& c : counts) {
    py::dict d;
    d["size"] = py::list(py::make_tuple(height, width));
    d["counts"] = py::bytes(c);
    out.append(d);
  }
  return out;
}

py::list py_paste_to_rle(const py::array& masks, const py::array& boxes, int64_t height, int64_t width, double threshold,
                      int64_t threads) {
  const PasteArgs a = paste_args(masks, boxes, height, width, threshold, true);
  const int nt = threads_arg(threads);
  std::vector<std::string> counts;
  {
    py::gil_scoped_release release;
    counts = maskrt::core::paste_to_rle(a, nt);
  }
  return rle_dicts(counts, height, width);
}

// ------------------------------------------------------------------ RLE

// bitmaps bool or uint8 [K, H, W] -> K dicts {"size": [H, W], "counts": bytes}.
py::list py_rle_encode(const py::array& bitmaps, int64_t threads) {
  if (!has_dtype<bool>(bitmaps) && !has_dtype<uint8_t>(bitmaps))
    fail("bitmaps must have dtype bool or uint8, got " + dtype_str(bitmaps));
  require_ndim(bitmaps, "bitmaps", 3, "[K, H, W]");
  require_c_contiguous(bitmaps, "bitmaps");
  const int64_t k = bitmaps.shape(0), h = bitmaps.shape(1), w = bitmaps.shape(2);
  require_int_in(h, 1, kMaxSide, "bitmaps.shape[1] (H)");
  require_int_in(w, 1, kMaxSide, "bitmaps.shape[2] (W)");
  if (h * w > int64_t{UINT32_MAX}) fail("bitmaps: H * W must be < 2^32 for COCO RLE, got " + std::to_string(h * w));
  const int nt = threads_arg(threads);
  const auto* p = static_cast<const uint8_t*>(bitmaps.data());
  std::vector<std::string> counts;
  {
    py::gil_scoped_release release;
    counts = maskrt::core::rle_encode(p, k, h, w, nt);
  }
  return rle_dicts(counts, h, w);
}

// ------------------------------------------------------------------ overlay

const uint8_t* colors_arg(const py::array& colors, int64_t k) {
  require_dtype<uint8_t>(colors, "colors", "uint8");
  if (colors.ndim() != 2 || colors.shape(0) != k || colors.shape(1) != 3)
    fail("colors must have shape [K, 3] = [" + std::to_string(k) + ", 3], got " + shape_str(colors));
  require_c_contiguous(colors, "colors");
  return static_cast<const uint8_t*>(colors.data());
}

int alpha_arg(double alpha) {
  require_float_in(alpha, 0.0, 1.0, "alpha");
  return static_cast<int>(std::lrint(alpha * 256.0));
}

// image uint8 [H, W, 3] (in place), bitmaps bool/uint8 [K, H, W], colors uint8 [K, 3].
void py_overlay_bitmaps(const py::array& image, const py::array& bitmaps, const py::array& colors, double alpha,
                     int64_t threads) {
  const ImageU8C3 im = image_arg(image, "image", true);
  if (!has_dtype<bool>(bitmaps) && !has_dtype<uint8_t>(bitmaps))
    fail("masks must have dtype bool or uint8, got " + dtype_str(bitmaps));
  if (bitmaps.ndim() != 3 || bitmaps.shape(1) != im.height || bitmaps.shape(2) != im.width)
    fail("masks must have shape [K, H, W] = [K, " + std::to_string(im.height) + ", " + std::to_string(im.width) +
         "] matching image, got " + shape_str(bitmaps));
  require_c_contiguous(bitmaps, "masks");
  const int64_t k = bitmaps.shape(0);
  const uint8_t* c = colors_arg(colors, k);
  const int a = alpha_arg(alpha);
  const int nt = threads_arg(threads);
  const auto* p = static_cast<const uint8_t*>(bitmaps.data());
  py::gil_scoped_release release;
  maskrt::core::overlay_bitmaps(im, p, k, c, a, nt);
}

template <typename Label>
void overlay_label_map_t(const ImageU8C3& im, const py::array& label_map, int64_t k, const uint8_t* c, int a, int nt) {
  const Label* lab = static_cast<const Label*>(label_map.data());
  const int64_t n = label_map.size();
  int64_t lo = 0, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(lab[i]);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  if (lo < 0 || hi > k)
    fail("label_map values must be in [0, K = " + std::to_string(k) + "] (0 = background, l = instance l - 1), got " +
         "values in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  py::gil_scoped_release release;
  maskrt::core::overlay_label_map<Label>(im, lab, k, c, a, nt);
}

// image uint8 [H, W, 3] (in place), label_map uint16/int32 [H, W], colors uint8 [K, 3].
void py_overlay_label_map(const py::array& image, const py::array& label_map, const py::array& colors, double alpha,
                       int64_t threads) {
  const ImageU8C3 im = image_arg(image, "image", true);
  if (label_map.ndim() != 2 || label_map.shape(0) != im.height || label_map.shape(1) != im.width)
    fail("label_map must have shape [H, W] = [" + std::to_string(im.height) + ", " + std::to_string(im.width) +
         "] matching image, got " + shape_str(label_map));
  require_c_contiguous(label_map, "label_map");
  if (colors.ndim() != 2) fail("colors must have shape [K, 3], got " + shape_str(colors));
  const int64_t k = colors.shape(0);
  const uint8_t* c = colors_arg(colors, k);
  const int a = alpha_arg(alpha);
  const int nt = threads_arg(threads);
  if (has_dtype<uint16_t>(label_map)) return overlay_label_map_t<uint16_t>(im, label_map, k, c, a, nt);
  if (has_dtype<int32_t>(label_map)) return overlay_label_map_t<int32_t>(im, label_map, k, c, a, nt);
  fail("label_map must have dtype uint16 or int32, got " + dtype_str(label_map));
}

// image uint8 [H, W, 3] (in place), boxes float32 [K, 4] finite, colors uint8 [K, 3].
void py_draw_boxes(const py::array& image, const py::array& boxes, const py::array& colors, int64_t thickness) {
  const ImageU8C3 im = image_arg(image, "image", true);
  require_dtype<float>(boxes, "boxes", "float32");
  if (boxes.ndim() != 2 || boxes.shape(1) != 4) fail("boxes must have shape [K, 4], got " + shape_str(boxes));
  require_c_contiguous(boxes, "boxes");
  require_all_finite_f32(boxes, "boxes");
  const int64_t k = boxes.shape(0);
  const uint8_t* c = colors_arg(colors, k);
  require_int_in(thickness, 1, 1 << 16, "thickness");
  const auto* b = static_cast<const float*>(boxes.data());
  py::gil_scoped_release release;
  maskrt::core::draw_boxes(im, b, k, c, static_cast<int>(thickness));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "maskrt native runtime core: letterbox, mask paste, COCO RLE, overlay (see maskrt.runtime.native_core)";
  using py::arg;
  m.def("letterbox", &py_letterbox, arg("image"), arg("out"), arg("upscale"), arg("pad_value"), arg("threads"),
        "image uint8 [h, w, 3] -> out uint8 [H, W, 3] (fully written); returns (new_h, new_w).");
  m.def("resize_linear", &py_resize_linear, arg("image"), arg("out"), arg("threads"),
        "cv2.resize(image, (W, H), interpolation=cv2.INTER_LINEAR) into out uint8 [H, W, 3].");
  m.def("paste_masks", &py_paste_masks, arg("masks"), arg("boxes"), arg("height"), arg("width"), arg("threshold"),
        arg("threads"), "masks float32 [K, M, M], boxes float32 [K, 4] -> bool [K, H, W].");
  m.def("paste_label_map", &py_paste_label_map, arg("masks"), arg("boxes"), arg("height"), arg("width"), arg("labels"),
        arg("threshold"), arg("threads"), "-> label map [H, W] of labels' dtype (uint16 or int32).");
  m.def("paste_to_rle", &py_paste_to_rle, arg("masks"), arg("boxes"), arg("height"), arg("width"), arg("threshold"),
        arg("threads"), "-> K dicts {'size': [H, W], 'counts': bytes} (COCO compressed RLE).");
  m.def("rle_encode", &py_rle_encode, arg("bitmaps"), arg("threads"),
        "bitmaps bool/uint8 [K, H, W] -> K dicts {'size': [H, W], 'counts': bytes}.");
  m.def("overlay_bitmaps", &py_overlay_bitmaps, arg("image"), arg("masks"), arg("colors"), arg("alpha"), arg("threads"));
  m.def("overlay_label_map", &py_overlay_label_map, arg("image"), arg("label_map"), arg("colors"), arg("alpha"),
        arg("threads"));
  m.def("draw_boxes", &py_draw_boxes, arg("image"), arg("boxes"), arg("colors"), arg("thickness"));
}
