// Visualisation: alpha-blended instance masks and box outlines drawn in place on a BGR image.
// Text (class names, scores) is not drawn here: cv2.putText on the result does that.
//
// Rules (runtime/native_core.draw_overlay documents them for Python):
//  * blend: with a = round(alpha * 256) in [0, 256], a covered pixel's channel p becomes
//    (p * (256 - a) + c * a + 128) >> 8, c the instance colour's channel; alpha 1 gives c exactly,
//    alpha 0 leaves p;
//  * a pixel covered by several instances is blended once, with the colour of the first of them
//    in the given order (the highest-scoring when detections come sorted by score), the same rule
//    as the label map of paste_label_map;
//  * boxes: the outline of the pixels a box covers (pixel j spans [j, j + 1)): columns
//    floor(x1) .. max(ceil(x2) - 1, floor(x1)) and rows likewise, `thickness` pixels wide on the
//    inside of that rectangle, solid colour (not blended), clipped to the image; drawn after the
//    masks, last instance first so the first instance's outline is on top.
#pragma once

#include <cstdint>

#include "letterbox.h"  // ImageU8C3

namespace maskrt {
namespace core {

// bitmaps: uint8 [K, H, W] (nonzero = covered); colors: uint8 [K, 3] BGR.
void overlay_bitmaps(const ImageU8C3& image, const uint8_t* bitmaps, int64_t k, const uint8_t* colors, int alpha256,
                     int threads);

// label_map: [H, W] with values in [0, K] (0 = background, l = instance l - 1); Label is uint16_t
// or int32_t. colors: uint8 [K, 3] BGR.
template <typename Label>
void overlay_label_map(const ImageU8C3& image, const Label* label_map, int64_t k, const uint8_t* colors, int alpha256,
                       int threads);

// boxes: float32 [K, 4] (x1, y1, x2, y2), finite; colors: uint8 [K, 3]; thickness >= 1.
void draw_boxes(const ImageU8C3& image, const float* boxes, int64_t k, const uint8_t* colors, int thickness);

}  // namespace core
}  // namespace maskrt
