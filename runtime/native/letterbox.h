// Letterbox: fit a uint8 BGR image into the graph's fixed input size (keep aspect, top-left,
// zero padding), with OpenCV's INTER_LINEAR resize reproduced bit for bit.
//
// The rule is runtime/letterbox.py's (the Python reference): s = min(H / h, W / w); an image that
// already fits is not enlarged unless `upscale`; the resized size is (round(h * s), round(w * s))
// (round half to even, as Python's round) clamped to [1, H] x [1, W]; the picture sits in the
// top-left corner and the rest of the output is `pad_value` (0 in the reference).
#pragma once

#include <cstdint>

namespace maskrt {
namespace core {

// An interleaved 3-channel uint8 image: pixel (y, x) channel c at data[y * stride + 3 * x + c].
struct ImageU8C3 {
  uint8_t* data;
  int height;
  int width;
  int64_t stride;  // bytes between rows, >= 3 * width
};

struct LetterboxSize {
  int height;  // rows of the output holding the picture
  int width;   // columns of the output holding the picture
};

// (new_h, new_w) of an h x w image letterboxed into in_h x in_w (all sizes >= 1).
LetterboxSize letterbox_size(int h, int w, int in_h, int in_w, bool upscale);

// cv2.resize(src, (dst.width, dst.height), interpolation=cv2.INTER_LINEAR) for uint8 3-channel
// images, into dst (which must not overlap src). See letterbox.cpp for the fixed-point rules.
void resize_linear_u8c3(const ImageU8C3& src, const ImageU8C3& dst, int threads);

// Writes the letterboxed `src` into all of `dst` (dst.height x dst.width = the input size):
// picture in the top-left new_h x new_w corner, `pad_value` everywhere else. Returns the size of
// the picture. src and dst must not overlap.
LetterboxSize letterbox_u8c3(const ImageU8C3& src, const ImageU8C3& dst, bool upscale, uint8_t pad_value,
                             int threads);

}  // namespace core
}  // namespace maskrt
