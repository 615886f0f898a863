// MaskrtRpnNMS and MaskrtDetectionNMS: CUDA kernels behind the launchers of batched_nms_cuda.h.
// The CPU twins are rpn_nms_cpu.cpp and detection_nms_cpu.cpp; both share batched_nms_math.h
// (IoU, sigmoid, min-size test, ordering keys), so they take the same decision on every candidate.
//
// Algorithm (deterministic: no floating-point atomics, every order is total):
//   1. rank:   a stable radix sort per NMS group: RPN, one device-wide sort of all B x N anchors
//              on 64-bit keys (image x level in the high word, so each group stays in place;
//              levels are large: P2 of a 800 x 1344 input has 201,600 anchors); detection, a
//              segmented sort per image x class (R rows each), candidates failing the filters
//              keyed last. Low word ~float_order_key(value): descending value, ties by index.
//   2. gather: the ranked candidates' boxes into a contiguous float4 array (RPN: the top-k per
//              level, with sigmoid scores and a "filtered out" flag).
//   3. mask:   for each group, bit j of mask[i][j / 64] = (i < j) and IoU(i, j) > threshold,
//              64 x 64 tiles, one thread per row (upper triangle only).
//   4. reduce: one warp per group walks the ranked candidates in order, with the "removed" bits in
//              shared memory: a candidate is kept iff not removed; keeping it ORs its mask row in.
//              Candidates of a 64-block are decided from one register word; the kept rows of the
//              block are then ORed into the later words lane-parallel. Stops after max_keep kept.
//              Kept candidates become 64-bit merge keys (descending score, ties by index).
//   5. merge:  a segmented radix sort per image of the merge keys (unique: index in the low word).
//   6. output: the first K keys per image -> boxes, scores (classes); zeros after the count.
// No allocation, no synchronisation: all buffers come from the caller's workspace, carved the
// same way by *_workspace_size and the launchers. Every launcher returns cudaGetLastError().
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include <cstdint>

#include "batched_nms/batched_nms_cuda.h"
#include "batched_nms/batched_nms_math.h"

namespace maskrt {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 64;  // candidates per mask word
constexpr int kWarp = 32;
constexpr size_t kAlign = 256;
constexpr uint32_t kInvalidKey32 = 0xFFFFFFFFu;
// The reduction keeps one "removed" word per 64 candidates of a group in shared memory.
constexpr int64_t kMaxMaskWords = (48 * 1024) / 8;
constexpr int64_t kMaxGridYZ = 65535;

inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Carves typed, 256-byte aligned buffers from one workspace. With base == nullptr it only sums
// the sizes, so the size functions and the launchers share one layout.
struct Carver {
  char* base;
  size_t offset = 0;
  explicit Carver(void* b) : base(static_cast<char*>(b)) {}
  template <typename T>
  T* take(int64_t count) {
    offset = (offset + kAlign - 1) / kAlign * kAlign;
    T* p = base != nullptr ? reinterpret_cast<T*>(base + offset) : nullptr;
    offset += static_cast<size_t>(count > 0 ? count : 0) * sizeof(T);
    return p;
  }
  size_t size() const { return (offset + kAlign - 1) / kAlign * kAlign; }
};

// ============================================================================ shared kernels
// offsets[i] = i * stride for i <= count (uniform segments for cub).
__global__ void fill_uniform_offsets(int* offsets, int count, int stride) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= count) offsets[i] = i * stride;
}

struct Segment {
  int64_t base;       // first candidate of the group in the float4 candidate array
  int n;              // candidates in the group (ranked)
  int64_t mask_base;  // first mask word of the group
  int cb;             // mask words per row = ceil(n_capacity / 64)
};

// Step 3. grid (col tile, row tile, group), kTile threads. Layout::segment(g) -> Segment.
template <typename Layout>
__global__ void __launch_bounds__(kTile) nms_mask_kernel(Layout layout, const float4* cand, float iou_threshold,
                                                         unsigned long long* mask) {
  const Segment g = layout.segment(static_cast<int>(blockIdx.z));
  const int row_tile = static_cast<int>(blockIdx.y), col_tile = static_cast<int>(blockIdx.x);
  // Block-uniform exits (before the barrier): lower triangle, tiles past the group's candidates.
  if (col_tile < row_tile || col_tile * kTile >= g.n) return;
  __shared__ float4 cols[kTile];
  __shared__ float col_area[kTile];
  const int t = static_cast<int>(threadIdx.x);
  const int col_n = min(g.n - col_tile * kTile, kTile);
  const int row_n = min(g.n - row_tile * kTile, kTile);
  if (t < col_n) {
    const float4 c = cand[g.base + col_tile * kTile + t];
    cols[t] = c;
    col_area[t] = box_area(c.x, c.y, c.z, c.w);
  }
  __syncthreads();
  if (t >= row_n) return;
  const int i = row_tile * kTile + t;
  const float4 a = cand[g.base + i];
  const float area_a = box_area(a.x, a.y, a.z, a.w);
  unsigned long long bits = 0;
  for (int k = (row_tile == col_tile) ? t + 1 : 0; k < col_n; ++k) {
    const float4 c = cols[k];
    const float iou = box_iou_soa(a.x, a.y, a.z, a.w, area_a, c.x, c.y, c.z, c.w, col_area[k]);
    if (iou_suppresses(iou, iou_threshold)) bits |= 1ull << k;
  }
  mask[g.mask_base + static_cast<int64_t>(i) * g.cb + col_tile] = bits;
}

// Step 4 for one group, run by one full warp (all lanes take the same path: the sequential part
// is computed redundantly by every lane from broadcast loads, which avoids shuffles).
// removed: shared, g.cb words, initialised by the caller (bits of filtered-out candidates).
// emit(rank, j): the rank-th kept candidate is ranked candidate j (called by exactly one lane).
// Returns the number kept (<= max_keep).
template <typename Emit>
__device__ int greedy_reduce_warp(const Segment& g, const unsigned long long* mask, unsigned long long* removed,
                                  int max_keep, const Emit& emit) {
  const int lane = static_cast<int>(threadIdx.x);
  int kept = 0;
  const int tiles = (g.n + kTile - 1) / kTile;
  for (int tile = 0; tile < tiles && kept < max_keep; ++tile) {
    unsigned long long cur = removed[tile];
    const int lim = min(g.n - tile * kTile, kTile);
    unsigned long long kept_bits = 0;
    const int kept_before = kept;
    for (int bit = 0; bit < lim; ++bit) {
      if ((cur >> bit) & 1ull) continue;
      kept_bits |= 1ull << bit;
      // Row (tile*64 + bit), word `tile`: the later candidates of this tile that it removes.
      cur |= mask[g.mask_base + static_cast<int64_t>(tile * kTile + bit) * g.cb + tile];
      if (++kept >= max_keep) break;
    }
    for (int bit = lane; bit < kTile; bit += kWarp) {
      if ((kept_bits >> bit) & 1ull) {
        const int rank = kept_before + __popcll(kept_bits & ((1ull << bit) - 1ull));
        emit(rank, tile * kTile + bit);
      }
    }
    if (kept < max_keep) {
      // Only words of tiles still to be walked (mask words past the group's candidates are
      // never written by nms_mask_kernel).
      for (int w = tile + 1 + lane; w < tiles; w += kWarp) {
        unsigned long long acc = removed[w];
        unsigned long long kb = kept_bits;
        while (kb != 0) {
          const int bit = __ffsll(static_cast<long long>(kb)) - 1;
          kb &= kb - 1ull;
          acc |= mask[g.mask_base + static_cast<int64_t>(tile * kTile + bit) * g.cb + w];
        }
        removed[w] = acc;
      }
    }
    __syncwarp();
  }
  return kept;
}

// ============================================================================ detection
struct DetLayout {
  int R, C;
  int cb;  // ceil(R / 64)
  const int* count;  // valid candidates per (image, class) group
  __device__ Segment segment(int s) const {
    Segment g;
    g.base = static_cast<int64_t>(s) * R;
    g.n = count[s];
    g.cb = cb;
    g.mask_base = static_cast<int64_t>(s) * R * cb;
    return g;
  }
};

// Step 1 input: one thread per (image, class, row) in class-major order (the sort's segments).
// NOTE: a candidate is valid iff r < num_rois[b], score > score_threshold (strictly; NaN fails)
// and width, height >= min_size; invalid ones get the largest key and sort after every valid one.
__global__ void det_prepare(DetectionNmsParams p, const float* boxes, const float* scores, const int32_t* num_rois,
                            uint32_t* keys, int32_t* rows_out, int32_t* count) {
  const int64_t M = static_cast<int64_t>(p.batch) * p.num_classes * p.num_rois;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= M) return;
  const int64_t s = i / p.num_rois;
  const int r = static_cast<int>(i % p.num_rois);
  const int64_t b = s / p.num_classes;
  const int c = static_cast<int>(s % p.num_classes);
  int rows = p.num_rois;
  if (num_rois != nullptr) rows = max(0, min(num_rois[b], p.num_rois));  // clamped: no trust in inputs
  const int64_t src = (b * p.num_rois + r) * p.num_classes + c;
  const float sc = scores[src];
  const bool valid = r < rows && sc > p.score_threshold && box_min_size_ok(boxes + 4 * src, p.min_size);
  keys[i] = valid ? ~float_order_key(sc) : kInvalidKey32;
  rows_out[i] = r;
  if (valid) atomicAdd(count + s, 1);  // integer count: order-independent
}

// Step 2: ranked candidates' boxes, contiguous per group.
__global__ void det_gather(DetectionNmsParams p, const float* boxes, const int32_t* sorted_rows, const int32_t* count,
                           float4* cand) {
  const int64_t M = static_cast<int64_t>(p.batch) * p.num_classes * p.num_rois;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= M) return;
  const int64_t s = i / p.num_rois;
  const int j = static_cast<int>(i % p.num_rois);
  if (j >= count[s]) return;
  const int64_t b = s / p.num_classes;
  const int c = static_cast<int>(s % p.num_classes);
  const int64_t src = (b * p.num_rois + sorted_rows[i]) * p.num_classes + c;
  cand[i] = make_float4(boxes[4 * src], boxes[4 * src + 1], boxes[4 * src + 2], boxes[4 * src + 3]);
}

struct DetEmit {
  uint64_t* slots;             // this group's kept slots
  const uint32_t* keys;        // this group's sorted keys (~float_order_key(score))
  const int32_t* rows;         // this group's sorted rows
  int C, c;
  __device__ void operator()(int rank, int j) const {
    // == desc_key_with_index(score, r * C + c): descending score, ties by flat index.
    slots[rank] = (static_cast<uint64_t>(keys[j]) << 32) | static_cast<uint32_t>(rows[j] * C + c);
  }
};

// Step 4: one warp per (image, class) group; dynamic shared memory: cb words.
__global__ void __launch_bounds__(kWarp) det_reduce(DetLayout layout, const unsigned long long* mask,
                                                    const uint32_t* sorted_keys, const int32_t* sorted_rows,
                                                    int per_class, uint64_t* merge_keys) {
  extern __shared__ unsigned long long removed[];
  const int s = static_cast<int>(blockIdx.x);
  const Segment g = layout.segment(s);
  const int lane = static_cast<int>(threadIdx.x);
  for (int w = lane; w < g.cb; w += kWarp) removed[w] = 0ull;
  __syncwarp();
  DetEmit emit;
  emit.slots = merge_keys + static_cast<int64_t>(s) * per_class;
  emit.keys = sorted_keys + g.base;
  emit.rows = sorted_rows + g.base;
  emit.C = layout.C;
  emit.c = s % layout.C;
  const int kept = greedy_reduce_warp(g, mask, removed, per_class, emit);
  for (int t = kept + lane; t < per_class; t += kWarp) emit.slots[t] = kInvalidSortKey;
}

// Step 6: one thread per (image, output row).
__global__ void det_output(DetectionNmsParams p, const float* boxes, const float* scores, const uint64_t* merged,
                           int per_image, int32_t* out_count, float* out_boxes, float* out_scores,
                           int32_t* out_classes) {
  const int K = p.max_detections;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(p.batch) * K) return;
  const int64_t b = i / K;
  const int k = static_cast<int>(i % K);
  const uint64_t* m = merged + b * per_image;
  const uint64_t key = k < per_image ? m[k] : kInvalidSortKey;
  float4 box = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float score = 0.0f;
  int32_t cls = 0;
  const bool valid = key != kInvalidSortKey;
  if (valid) {
    const int64_t flat = key_index(key);
    const int c = static_cast<int>(flat % p.num_classes);
    const int64_t src = b * p.num_rois * p.num_classes + flat;
    box = make_float4(boxes[4 * src], boxes[4 * src + 1], boxes[4 * src + 2], boxes[4 * src + 3]);
    score = scores[src];
    cls = c + p.class_offset;
  }
  // Scalar stores: the outputs need only float alignment.
  out_boxes[4 * i] = box.x;
  out_boxes[4 * i + 1] = box.y;
  out_boxes[4 * i + 2] = box.z;
  out_boxes[4 * i + 3] = box.w;
  out_scores[i] = score;
  out_classes[i] = cls;
  // Valid keys are a prefix (invalid ones sort last): the last valid row writes the count.
  const bool next_valid = k + 1 < K && k + 1 < per_image && m[k + 1] != kInvalidSortKey;
  if (valid && !next_valid) out_count[b] = k + 1;
  if (!valid && k == 0) out_count[b] = 0;
}

struct DetWorkspace {
  uint32_t *keys_in, *keys_out;
  int32_t *rows_in, *rows_out, *seg_offsets, *count, *merge_offsets;
  float4* cand;
  unsigned long long* mask;
  uint64_t *merge_in, *merge_out;
  void* temp;
  size_t temp_bytes;
  size_t total;
};

// per_class = min(K, R): a class contributes at most K detections to the top-K, so its NMS may
// stop after K kept boxes without changing the result.
struct DetShape {
  int64_t B, R, C, K, M, S, cb, per_class, per_image;
  explicit DetShape(const DetectionNmsParams& p)
      : B(p.batch), R(p.num_rois), C(p.num_classes), K(p.max_detections) {
    M = B * C * R;
    S = B * C;
    cb = div_up(R, kTile);
    per_class = K < R ? K : R;
    per_image = C * per_class;
  }
  bool empty() const { return B <= 0 || R <= 0 || C <= 0 || K <= 0; }
  bool supported() const {
    return B >= 0 && R >= 0 && C >= 0 && K >= 0 && R * C <= INT32_MAX && M <= INT32_MAX &&
           B * per_image <= INT32_MAX && S <= kMaxGridYZ && cb <= kMaxMaskWords && cb <= kMaxGridYZ;
  }
};

cudaError_t det_carve(const DetectionNmsParams& p, void* ws, DetWorkspace& w) {
  const DetShape d(p);
  Carver cv(ws);
  w.keys_in = cv.take<uint32_t>(d.M);
  w.keys_out = cv.take<uint32_t>(d.M);
  w.rows_in = cv.take<int32_t>(d.M);
  w.rows_out = cv.take<int32_t>(d.M);
  w.seg_offsets = cv.take<int32_t>(d.S + 1);
  w.count = cv.take<int32_t>(d.S);
  w.cand = cv.take<float4>(d.M);
  w.mask = cv.take<unsigned long long>(d.S * d.R * d.cb);
  w.merge_in = cv.take<uint64_t>(d.B * d.per_image);
  w.merge_out = cv.take<uint64_t>(d.B * d.per_image);
  w.merge_offsets = cv.take<int32_t>(d.B + 1);
  // cub's temporary storage: the larger of the two sorts' (sizes depend only on the counts).
  size_t t1 = 0, t2 = 0;
  cudaError_t e = cub::DeviceSegmentedRadixSort::SortPairs(
      nullptr, t1, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), static_cast<int>(d.M),
      static_cast<int>(d.S), static_cast<int32_t*>(nullptr), static_cast<int32_t*>(nullptr), 0, 32);
  if (e != cudaSuccess) return e;
  e = cub::DeviceSegmentedRadixSort::SortKeys(
      nullptr, t2, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<int>(d.B * d.per_image), static_cast<int>(d.B), static_cast<int32_t*>(nullptr),
      static_cast<int32_t*>(nullptr), 0, 64);
  if (e != cudaSuccess) return e;
  w.temp_bytes = t1 > t2 ? t1 : t2;
  w.temp = cv.take<char>(static_cast<int64_t>(w.temp_bytes));
  w.total = cv.size();
  return cudaSuccess;
}

// ============================================================================ RPN
struct RpnShape {
  int64_t B = 0, N = 0, L = 0, post = 0;
  int64_t start[kMaxNmsLevels] = {}, n[kMaxNmsLevels] = {}, k[kMaxNmsLevels] = {};
  int64_t cand_off[kMaxNmsLevels] = {}, slot_off[kMaxNmsLevels] = {}, mask_off[kMaxNmsLevels] = {};
  int64_t cb[kMaxNmsLevels] = {};
  int64_t T = 0, S = 0, mask_words = 0, cb_max = 0;  // per image: candidates, kept slots, mask words
  bool valid = true;
  explicit RpnShape(const RpnNmsParams& p) : B(p.batch), N(p.num_anchors), L(p.num_levels), post(p.post_nms_top_n) {
    if (B < 0 || N < 0 || L < 1 || L > kMaxNmsLevels || post < 0 || p.pre_nms_top_n < 0) {
      valid = false;
      L = 0;
    }
    int64_t a = 0;
    for (int64_t l = 0; l < L; ++l) {
      if (p.level_sizes[l] < 0) valid = false;
      n[l] = p.level_sizes[l] > 0 ? p.level_sizes[l] : 0;
      start[l] = a;
      k[l] = p.pre_nms_top_n < n[l] ? p.pre_nms_top_n : n[l];
      cb[l] = div_up(k[l], kTile);
      cand_off[l] = T;
      slot_off[l] = S;
      mask_off[l] = mask_words;
      a += n[l];
      T += k[l];
      S += post < k[l] ? post : k[l];  // a level keeps at most post boxes that can reach the output
      mask_words += k[l] * cb[l];
      cb_max = cb[l] > cb_max ? cb[l] : cb_max;
    }
    if (a != N) valid = false;
  }
  bool empty() const { return B <= 0 || T <= 0 || post <= 0; }
  bool supported() const {
    return valid && B * N <= INT32_MAX && B * L + 1 <= INT32_MAX && B * T <= INT32_MAX && B * S <= INT32_MAX &&
           B * L <= kMaxGridYZ && cb_max <= kMaxMaskWords && cb_max <= kMaxGridYZ;
  }
};

// Bits of the RPN rank keys: 32 of the logit key + enough for the group id b * L + l.
inline int rpn_key_end_bit(const RpnShape& s) {
  int bits = 0;
  while ((int64_t{1} << bits) < s.B * s.L) ++bits;
  return 32 + bits;
}

// Per-level constants for the kernels (by value: fits the kernel parameter space easily).
struct RpnLevels {
  int L, N, T, S, post;
  int64_t mask_words;
  int start[kMaxNmsLevels], k[kMaxNmsLevels], cand_off[kMaxNmsLevels], slot_off[kMaxNmsLevels],
      cb[kMaxNmsLevels];
  int64_t mask_off[kMaxNmsLevels];
};

RpnLevels make_levels(const RpnShape& s) {
  RpnLevels v{};
  v.L = static_cast<int>(s.L);
  v.N = static_cast<int>(s.N);
  v.T = static_cast<int>(s.T);
  v.S = static_cast<int>(s.S);
  v.post = static_cast<int>(s.post);
  v.mask_words = s.mask_words;
  for (int64_t l = 0; l < s.L; ++l) {
    v.start[l] = static_cast<int>(s.start[l]);
    v.k[l] = static_cast<int>(s.k[l]);
    v.cand_off[l] = static_cast<int>(s.cand_off[l]);
    v.slot_off[l] = static_cast<int>(s.slot_off[l]);
    v.cb[l] = static_cast<int>(s.cb[l]);
    v.mask_off[l] = s.mask_off[l];
  }
  return v;
}

struct RpnLayout {
  RpnLevels lv;
  __device__ Segment segment(int s) const {
    const int b = s / lv.L, l = s % lv.L;
    Segment g;
    g.base = static_cast<int64_t>(b) * lv.T + lv.cand_off[l];
    g.n = lv.k[l];
    g.cb = lv.cb[l];
    g.mask_base = static_cast<int64_t>(b) * lv.mask_words + lv.mask_off[l];
    return g;
  }
};

// Step 1 input: 64-bit keys (group b * L + l) << 32 | ~float_order_key(logit), values = anchor
// index within the image. Sorting them groups the anchors by (image, level) in input order (each
// group keeps its place: [b * N + start[l], + n_l)) and ranks each group by logit.
__global__ void rpn_prepare(RpnLevels lv, int B, const float* logits, uint64_t* keys, int32_t* anchors) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(B) * lv.N) return;
  const int64_t b = i / lv.N;
  const int a = static_cast<int>(i % lv.N);
  int l = 0;
  while (l + 1 < lv.L && a >= lv.start[l + 1]) ++l;
  // NOTE: ranking on the logits, descending, ties by anchor index (stable sort), as _select.
  keys[i] = (static_cast<uint64_t>(b * lv.L + l) << 32) | ~float_order_key(logits[i]);
  anchors[i] = a;
}

// Step 2: one thread per (image, candidate position t in the level-major top-k list).
__global__ void rpn_gather(RpnLevels lv, int B, RpnNmsParams p, const float* boxes, const float* logits,
                           const int32_t* sorted_anchors, float4* cand, float* cand_score, uint8_t* cand_dropped) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(B) * lv.T) return;
  const int64_t b = i / lv.T;
  const int t = static_cast<int>(i % lv.T);
  int l = 0;
  while (l + 1 < lv.L && t >= lv.cand_off[l + 1]) ++l;
  const int q = t - lv.cand_off[l];  // rank within the level
  const int anchor = sorted_anchors[b * lv.N + lv.start[l] + q];
  const int64_t src = b * lv.N + anchor;
  const float* bx = boxes + 4 * src;
  const float score = sigmoid_f32(logits[src]);
  cand[i] = make_float4(bx[0], bx[1], bx[2], bx[3]);
  cand_score[i] = score;
  // NOTE: min-size, then score >= score_threshold (not strict, unlike the box head), as _select.
  cand_dropped[i] = (box_min_size_ok(bx, p.min_size) && score >= p.score_threshold) ? 0 : 1;
}

struct RpnEmit {
  uint64_t* slots;
  const float* score;  // this level's candidates
  int cand_off;
  __device__ void operator()(int rank, int j) const {
    // Descending score, ties by position in the concatenated candidate list (batched_nms's order).
    slots[rank] = desc_key_with_index(score[j], static_cast<uint32_t>(cand_off + j));
  }
};

// Step 4: one warp per (image, level); dynamic shared memory: cb_max words.
__global__ void __launch_bounds__(kWarp) rpn_reduce(RpnLayout layout, const unsigned long long* mask,
                                                    const float* cand_score, const uint8_t* cand_dropped,
                                                    uint64_t* merge_keys) {
  extern __shared__ unsigned long long removed[];
  const int s = static_cast<int>(blockIdx.x);
  const RpnLevels& lv = layout.lv;
  const int b = s / lv.L, l = s % lv.L;
  const Segment g = layout.segment(s);
  const int lane = static_cast<int>(threadIdx.x);
  // Filtered-out candidates start removed: never kept, never suppress.
  for (int w = lane; w < g.cb; w += kWarp) {
    unsigned long long word = 0;
    const int lim = min(g.n - w * kTile, kTile);
    for (int bit = 0; bit < lim; ++bit)
      if (cand_dropped[g.base + w * kTile + bit]) word |= 1ull << bit;
    removed[w] = word;
  }
  __syncwarp();
  const int cap = min(lv.post, lv.k[l]);
  RpnEmit emit;
  emit.slots = merge_keys + static_cast<int64_t>(b) * lv.S + lv.slot_off[l];
  emit.score = cand_score + g.base;
  emit.cand_off = lv.cand_off[l];
  const int kept = greedy_reduce_warp(g, mask, removed, cap, emit);
  for (int t = kept + lane; t < cap; t += kWarp) emit.slots[t] = kInvalidSortKey;
}

// Step 6: one thread per (image, output row).
__global__ void rpn_output(RpnLevels lv, int B, const uint64_t* merged, const float4* cand, const float* cand_score,
                           float* out_rois, float* out_scores, int32_t* out_count) {
  const int P = lv.post;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(B) * P) return;
  const int64_t b = i / P;
  const int k = static_cast<int>(i % P);
  const uint64_t* m = merged + b * lv.S;
  const uint64_t key = k < lv.S ? m[k] : kInvalidSortKey;
  const bool valid = key != kInvalidSortKey;
  float4 box = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float score = 0.0f;
  if (valid) {
    const int64_t src = b * lv.T + key_index(key);
    box = cand[src];
    score = cand_score[src];
  }
  out_rois[4 * i] = box.x;  // scalar stores: the outputs need only float alignment
  out_rois[4 * i + 1] = box.y;
  out_rois[4 * i + 2] = box.z;
  out_rois[4 * i + 3] = box.w;
  out_scores[i] = score;
  const bool next_valid = k + 1 < P && k + 1 < lv.S && m[k + 1] != kInvalidSortKey;
  if (valid && !next_valid) out_count[b] = k + 1;
  if (!valid && k == 0) out_count[b] = 0;
}

struct RpnWorkspace {
  uint64_t *keys_in, *keys_out;
  int32_t *anchors_in, *anchors_out, *merge_offsets;
  float4* cand;
  float* cand_score;
  uint8_t* cand_dropped;
  unsigned long long* mask;
  uint64_t *merge_in, *merge_out;
  void* temp;
  size_t temp_bytes;
  size_t total;
};

cudaError_t rpn_carve(const RpnShape& s, void* ws, RpnWorkspace& w) {
  Carver cv(ws);
  const int64_t BN = s.B * s.N, BT = s.B * s.T;
  w.keys_in = cv.take<uint64_t>(BN);
  w.keys_out = cv.take<uint64_t>(BN);
  w.anchors_in = cv.take<int32_t>(BN);
  w.anchors_out = cv.take<int32_t>(BN);
  w.cand = cv.take<float4>(BT);
  w.cand_score = cv.take<float>(BT);
  w.cand_dropped = cv.take<uint8_t>(BT);
  w.mask = cv.take<unsigned long long>(s.B * s.mask_words);
  w.merge_in = cv.take<uint64_t>(s.B * s.S);
  w.merge_out = cv.take<uint64_t>(s.B * s.S);
  w.merge_offsets = cv.take<int32_t>(s.B + 1);
  size_t t1 = 0, t2 = 0;
  cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, t1, static_cast<const uint64_t*>(nullptr),
                                                  static_cast<uint64_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                  static_cast<int32_t*>(nullptr), static_cast<int>(BN), 0,
                                                  rpn_key_end_bit(s));
  if (e != cudaSuccess) return e;
  e = cub::DeviceSegmentedRadixSort::SortKeys(
      nullptr, t2, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<int>(s.B * s.S), static_cast<int>(s.B), static_cast<int32_t*>(nullptr),
      static_cast<int32_t*>(nullptr), 0, 64);
  if (e != cudaSuccess) return e;
  w.temp_bytes = t1 > t2 ? t1 : t2;
  w.temp = cv.take<char>(static_cast<int64_t>(w.temp_bytes));
  w.total = cv.size();
  return cudaSuccess;
}

inline unsigned grid_for(int64_t n) { return static_cast<unsigned>(div_up(n > 0 ? n : 1, kThreads)); }

}  // namespace

// ============================================================================ launchers
size_t detection_nms_cuda_workspace_size(const DetectionNmsParams& p) {
  const DetShape d(p);
  if (d.empty() || !d.supported()) return 0;
  DetWorkspace w{};
  if (det_carve(p, nullptr, w) != cudaSuccess) return 0;  // the launcher reports the same error
  return w.total;
}

cudaError_t detection_nms_cuda(const DetectionNmsParams& p, const float* boxes, const float* scores,
                               const int32_t* num_rois, int32_t* out_count, float* out_boxes, float* out_scores,
                               int32_t* out_classes, void* workspace, cudaStream_t stream) {
  const DetShape d(p);
  if (!d.supported()) return cudaErrorInvalidValue;
  if (d.B <= 0) return cudaSuccess;
  if (d.empty()) {  // nothing to select: zero outputs, count 0
    cudaError_t e = cudaMemsetAsync(out_count, 0, sizeof(int32_t) * d.B, stream);
    if (d.K > 0 && e == cudaSuccess) e = cudaMemsetAsync(out_boxes, 0, sizeof(float) * 4 * d.B * d.K, stream);
    if (d.K > 0 && e == cudaSuccess) e = cudaMemsetAsync(out_scores, 0, sizeof(float) * d.B * d.K, stream);
    if (d.K > 0 && e == cudaSuccess) e = cudaMemsetAsync(out_classes, 0, sizeof(int32_t) * d.B * d.K, stream);
    return e != cudaSuccess ? e : cudaGetLastError();
  }
  if (workspace == nullptr) return cudaErrorInvalidValue;
  DetWorkspace w{};
  cudaError_t e = det_carve(p, workspace, w);
  if (e != cudaSuccess) return e;

  e = cudaMemsetAsync(w.count, 0, sizeof(int32_t) * d.S, stream);
  if (e != cudaSuccess) return e;
  fill_uniform_offsets<<<grid_for(d.S + 1), kThreads, 0, stream>>>(w.seg_offsets, static_cast<int>(d.S),
                                                                    static_cast<int>(d.R));
  fill_uniform_offsets<<<grid_for(d.B + 1), kThreads, 0, stream>>>(w.merge_offsets, static_cast<int>(d.B),
                                                                    static_cast<int>(d.per_image));
  det_prepare<<<grid_for(d.M), kThreads, 0, stream>>>(p, boxes, scores, num_rois, w.keys_in, w.rows_in, w.count);
  // 1. rank per (image, class): stable, so equal scores keep row order.
  size_t temp_bytes = w.temp_bytes;
  e = cub::DeviceSegmentedRadixSort::SortPairs(w.temp, temp_bytes, w.keys_in, w.keys_out, w.rows_in, w.rows_out,
                                               static_cast<int>(d.M), static_cast<int>(d.S), w.seg_offsets,
                                               w.seg_offsets + 1, 0, 32, stream);
  if (e != cudaSuccess) return e;
  // 2.-4. gather, IoU mask, greedy reduction per (image, class).
  det_gather<<<grid_for(d.M), kThreads, 0, stream>>>(p, boxes, w.rows_out, w.count, w.cand);
  DetLayout layout{static_cast<int>(d.R), static_cast<int>(d.C), static_cast<int>(d.cb), w.count};
  const dim3 mask_grid(static_cast<unsigned>(d.cb), static_cast<unsigned>(d.cb), static_cast<unsigned>(d.S));
  nms_mask_kernel<<<mask_grid, kTile, 0, stream>>>(layout, w.cand, p.iou_threshold, w.mask);
  det_reduce<<<static_cast<unsigned>(d.S), kWarp, sizeof(unsigned long long) * d.cb, stream>>>(
      layout, w.mask, w.keys_out, w.rows_out, static_cast<int>(d.per_class), w.merge_in);
  // 5. merge per image: descending score, ties by flat index r * C + c.
  temp_bytes = w.temp_bytes;
  e = cub::DeviceSegmentedRadixSort::SortKeys(w.temp, temp_bytes, w.merge_in, w.merge_out,
                                              static_cast<int>(d.B * d.per_image), static_cast<int>(d.B),
                                              w.merge_offsets, w.merge_offsets + 1, 0, 64, stream);
  if (e != cudaSuccess) return e;
  // 6. first K per image.
  det_output<<<grid_for(d.B * d.K), kThreads, 0, stream>>>(p, boxes, scores, w.merge_out,
                                                           static_cast<int>(d.per_image), out_count, out_boxes,
                                                           out_scores, out_classes);
  return cudaGetLastError();
}

size_t rpn_nms_cuda_workspace_size(const RpnNmsParams& p) {
  const RpnShape s(p);
  if (s.empty() || !s.supported()) return 0;
  RpnWorkspace w{};
  if (rpn_carve(s, nullptr, w) != cudaSuccess) return 0;  // the launcher reports the same error
  return w.total;
}

cudaError_t rpn_nms_cuda(const RpnNmsParams& p, const float* boxes, const float* logits, float* out_rois,
                         float* out_scores, int32_t* out_count, void* workspace, cudaStream_t stream) {
  const RpnShape s(p);
  if (!s.supported()) return cudaErrorInvalidValue;
  if (s.B <= 0) return cudaSuccess;
  if (s.empty()) {
    cudaError_t e = cudaMemsetAsync(out_count, 0, sizeof(int32_t) * s.B, stream);
    if (s.post > 0 && e == cudaSuccess) e = cudaMemsetAsync(out_rois, 0, sizeof(float) * 4 * s.B * s.post, stream);
    if (s.post > 0 && e == cudaSuccess) e = cudaMemsetAsync(out_scores, 0, sizeof(float) * s.B * s.post, stream);
    return e != cudaSuccess ? e : cudaGetLastError();
  }
  if (workspace == nullptr) return cudaErrorInvalidValue;
  RpnWorkspace w{};
  cudaError_t e = rpn_carve(s, workspace, w);
  if (e != cudaSuccess) return e;
  const RpnLevels lv = make_levels(s);
  const int B = static_cast<int>(s.B);
  const int64_t segs = s.B * s.L;
  rpn_prepare<<<grid_for(s.B * s.N), kThreads, 0, stream>>>(lv, B, logits, w.keys_in, w.anchors_in);
  fill_uniform_offsets<<<grid_for(s.B + 1), kThreads, 0, stream>>>(w.merge_offsets, B, static_cast<int>(s.S));
  // 1. rank per (image, level) on the logits: stable, so equal logits keep anchor order.
  size_t temp_bytes = w.temp_bytes;
  e = cub::DeviceRadixSort::SortPairs(w.temp, temp_bytes, w.keys_in, w.keys_out, w.anchors_in, w.anchors_out,
                                      static_cast<int>(s.B * s.N), 0, rpn_key_end_bit(s), stream);
  if (e != cudaSuccess) return e;
  // 2. top-k per level: boxes, sigmoid scores, filters.
  rpn_gather<<<grid_for(s.B * s.T), kThreads, 0, stream>>>(lv, B, p, boxes, logits, w.anchors_out, w.cand,
                                                           w.cand_score, w.cand_dropped);
  // 3.-4. IoU mask and greedy reduction per (image, level).
  RpnLayout layout{lv};
  const dim3 mask_grid(static_cast<unsigned>(s.cb_max), static_cast<unsigned>(s.cb_max),
                       static_cast<unsigned>(segs));
  nms_mask_kernel<<<mask_grid, kTile, 0, stream>>>(layout, w.cand, p.iou_threshold, w.mask);
  rpn_reduce<<<static_cast<unsigned>(segs), kWarp, sizeof(unsigned long long) * s.cb_max, stream>>>(
      layout, w.mask, w.cand_score, w.cand_dropped, w.merge_in);
  // 5. merge per image: descending score, ties by position in the level-major candidate list.
  temp_bytes = w.temp_bytes;
  e = cub::DeviceSegmentedRadixSort::SortKeys(w.temp, temp_bytes, w.merge_in, w.merge_out,
                                              static_cast<int>(s.B * s.S), B, w.merge_offsets,
                                              w.merge_offsets + 1, 0, 64, stream);
  if (e != cudaSuccess) return e;
  // 6. first post_nms_top_n per image.
  rpn_output<<<grid_for(s.B * s.post), kThreads, 0, stream>>>(lv, B, w.merge_out, w.cand, w.cand_score, out_rois,
                                                              out_scores, out_count);
  return cudaGetLastError();
}

}  // namespace maskrt
