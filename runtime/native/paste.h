// Mask paste with torchvision's semantics (paste_masks_in_image + the "> threshold" of its COCO
// evaluation), the native twin of runtime/postprocess.paste_masks.
//
// For each instance: the M x M mask is padded by one zero pixel per side ((M + 2) x (M + 2)), its
// box is scaled by (M + 2) / M about the centre in float32 and truncated toward zero to an
// inclusive integer box (x0, y0, x1, y1) (TO_REMOVE = 1: w = max(x1 - x0 + 1, 1)), the padded mask
// is resized to h x w with half-pixel bilinear (align_corners=False; source coordinate clamped
// below at 0, last pixel repeated past the end), the part inside the image is kept, and a pixel is
// foreground when its probability is strictly greater than the threshold. paste.cpp has a NOTE at
// every one of these rules.
//
// Arithmetic: the bilinear value is computed in float64 exactly as the float64 mirror of
// tests/references.py (paste_masks_mirror) computes it, operation for operation, so the bitmaps
// equal that mirror's `prob > threshold` bit for bit. runtime/postprocess.paste_masks resizes in
// float32 (OpenCV): it can differ only at pixels whose probability is within ~1e-6 of the threshold.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace maskrt {
namespace core {

struct PasteArgs {
  const float* masks;  // float32 [K, M, M] probabilities, C order
  const float* boxes;  // float32 [K, 4] (x1, y1, x2, y2) in target-image pixels
  int64_t k;           // number of instances
  int m;               // mask resolution M (>= 1 when k > 0)
  int height;          // target image H
  int width;           // target image W
  double threshold;    // foreground: probability > threshold
};

// bitmaps: uint8 [K, H, W], ALREADY ZEROED (e.g. numpy.zeros); only each instance's visible box
// region is written (0 or 1).
void paste_masks(const PasteArgs& a, uint8_t* bitmaps, int threads);

// label map [H, W], ALREADY ZEROED: each pixel gets labels[i] of the first instance i (in the
// given order) whose pasted mask is foreground there, 0 where none is. labels must be >= 1.
// Label is uint16_t or int32_t.
template <typename Label>
void paste_label_map(const PasteArgs& a, const Label* labels, Label* label_map, int threads);

// COCO compressed RLE counts string (pycocotools' rleToString) of each pasted bitmap, computed
// without materialising the full bitmaps. H * W must be < 2^32.
std::vector<std::string> paste_to_rle(const PasteArgs& a, int threads);

}  // namespace core
}  // namespace maskrt
