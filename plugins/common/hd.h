// Host/device qualifiers for math written once and compiled by both the C++ compiler (CPU
// kernels) and nvcc (CUDA kernels).
#pragma once

#if defined(__CUDACC__)
#define MASKRT_HD __host__ __device__ __forceinline__
#else
#define MASKRT_HD inline
#endif

namespace maskrt {

template <typename T>
MASKRT_HD T hd_max(T a, T b) { return a > b ? a : b; }

template <typename T>
MASKRT_HD T hd_min(T a, T b) { return a < b ? a : b; }

}  // namespace maskrt
