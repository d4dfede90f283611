// One [TILE_N x TILE_V] tile of logits z = hidden @ weight^T, computed into shared memory.
//
// Shared by the forward (statistics) and backward (gradient-logits) kernels of the fused
// log-prob op. The hidden size is streamed in TILE_K slices through shared memory; the
// result overwrites the same shared buffer (a union), so a CTA needs at most ~34 KiB of
// static shared memory and the logits never reach global memory.
//   bf16 / fp16 : tensor cores (WMMA m16n16k16, fp32 accumulation), 8 warps as 2 x 4, each
//                 warp a 32 x 32 block of the 64 x 128 tile.
//   fp32 / fp64 : CUDA cores in the input precision (exact like the reference; TF32 would
//                 not be), 4 x 4 (fp32) or 2 x 4 (fp64) outputs per thread.
#pragma once

#include <ATen/ATen.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

namespace r1core {
namespace cuda_kernels {

constexpr int kThreads = 256;

template <typename scalar_t>
struct TileShape;

// in_t: the element type the kernels read (bit-identical to scalar_t); acc_t: accumulation.
template <>
struct TileShape<at::BFloat16> {
  using in_t = __nv_bfloat16;
  using acc_t = float;
  static constexpr int N = 64, V = 128, K = 32;
  static constexpr bool kTensorCores = true;
};
template <>
struct TileShape<at::Half> {
  using in_t = __half;
  using acc_t = float;
  static constexpr int N = 64, V = 128, K = 32;
  static constexpr bool kTensorCores = true;
};
template <>
struct TileShape<float> {
  using in_t = float;
  using acc_t = float;
  static constexpr int N = 64, V = 64, K = 16;
  static constexpr bool kTensorCores = false;
};
template <>
struct TileShape<double> {
  using in_t = double;
  using acc_t = double;
  static constexpr int N = 32, V = 64, K = 16;
  static constexpr bool kTensorCores = false;
};

template <typename scalar_t>
struct TileStorage {
  using Shape = TileShape<scalar_t>;
  using in_t = typename Shape::in_t;
  using acc_t = typename Shape::acc_t;
  // WMMA wants leading dimensions that are multiples of 16 bytes and fragment pointers on
  // 32-byte boundaries; the CUDA-core path pads by one element to avoid bank conflicts.
  static constexpr int kPadIn = Shape::kTensorCores ? 8 : 1;
  static constexpr int kPadZ = Shape::kTensorCores ? 4 : 1;
  static constexpr int kLdIn = Shape::K + kPadIn;
  static constexpr int kLdZ = Shape::V + kPadZ;
  union {
    struct {
      in_t hidden[Shape::N][kLdIn];
      in_t weight[Shape::V][kLdIn];
    } operands;
    acc_t z[Shape::N][kLdZ];
  };
};

// Explicit conversions (torch builds with __CUDA_NO_{HALF,BFLOAT16}_CONVERSIONS__).
template <typename in_t>
__device__ __forceinline__ in_t from_float(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half(x); }
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ double from_float<double>(float x) { return x; }

template <typename in_t, typename acc_t>
__device__ __forceinline__ in_t from_acc(acc_t x) {
  if constexpr (std::is_same_v<in_t, acc_t>) {
    return x;
  } else {
    return from_float<in_t>(static_cast<float>(x));
  }
}

template <typename acc_t, typename in_t>
__device__ __forceinline__ acc_t to_acc(in_t x) {
  if constexpr (std::is_same_v<in_t, __nv_bfloat16>) {
    return static_cast<acc_t>(__bfloat162float(x));
  } else if constexpr (std::is_same_v<in_t, __half>) {
    return static_cast<acc_t>(__half2float(x));
  } else {
    return static_cast<acc_t>(x);
  }
}

// Copies rows [row0, row0 + ROWS) x columns [k0, k0 + K) of a row-major [num_rows, H] matrix
// into shared memory, zero-filling outside the matrix. 16-bit inputs with H % 8 == 0 (and
// 16-byte aligned bases, checked on the host) move 8 elements per 16-byte load.
template <typename in_t, int ROWS, int K, int LD>
__device__ __forceinline__ void load_slice(in_t (*dst)[LD], const in_t* __restrict__ src, int64_t row0,
                                           int64_t num_rows, int64_t k0, int64_t hidden_size, bool vector_loads) {
  if constexpr (sizeof(in_t) == 2) {
    if (vector_loads) {
      constexpr int kChunks = K / 8;
      for (int idx = threadIdx.x; idx < ROWS * kChunks; idx += kThreads) {
        const int r = idx / kChunks, k = (idx % kChunks) * 8;
        const int64_t row = row0 + r, col = k0 + k;
        uint4 value = make_uint4(0, 0, 0, 0);
        if (row < num_rows && col < hidden_size) {
          value = *reinterpret_cast<const uint4*>(src + row * hidden_size + col);
        }
        *reinterpret_cast<uint4*>(&dst[r][k]) = value;
      }
      return;
    }
  }
  for (int idx = threadIdx.x; idx < ROWS * K; idx += kThreads) {
    const int r = idx / K, k = idx % K;
    const int64_t row = row0 + r, col = k0 + k;
    dst[r][k] = (row < num_rows && col < hidden_size) ? src[row * hidden_size + col] : from_acc<in_t>(0.0f);
  }
}

// Fills storage.z with hidden[n0:n0+N] @ weight[v0:v0+V]^T (rows/columns outside the
// matrices hold 0). Ends with a barrier: on return every thread may read all of z.
template <typename scalar_t>
__device__ __forceinline__ void logit_tile(TileStorage<scalar_t>& storage,
                                           const typename TileShape<scalar_t>::in_t* __restrict__ hidden,
                                           const typename TileShape<scalar_t>::in_t* __restrict__ weight,
                                           int64_t num_tokens, int64_t vocab, int64_t hidden_size, int64_t n0,
                                           int64_t v0, bool vector_loads) {
  using Shape = TileShape<scalar_t>;
  using Storage = TileStorage<scalar_t>;
  using in_t = typename Shape::in_t;
  using acc_t = typename Shape::acc_t;
  constexpr int N = Shape::N, V = Shape::V, K = Shape::K, LD = Storage::kLdIn;
  if constexpr (Shape::kTensorCores) {
    namespace wmma = nvcuda::wmma;
    const int warp = threadIdx.x / 32;
    const int warp_row = (warp / 4) * 32, warp_col = (warp % 4) * 32;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    for (int64_t k0 = 0; k0 < hidden_size; k0 += K) {
      __syncthreads();  // the previous slice (or the previous tile's z) is no longer read
      load_slice<in_t, N, K, LD>(storage.operands.hidden, hidden, n0, num_tokens, k0, hidden_size, vector_loads);
      load_slice<in_t, V, K, LD>(storage.operands.weight, weight, v0, vocab, k0, hidden_size, vector_loads);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < K; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, in_t, wmma::row_major> a[2];
        // weight is stored [v][k]: read as a column-major [k][v] operand, which is weight^T.
        wmma::fragment<wmma::matrix_b, 16, 16, 16, in_t, wmma::col_major> b[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &storage.operands.hidden[warp_row + 16 * i][kk], LD);
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &storage.operands.weight[warp_col + 16 * j][kk], LD);
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();  // z aliases the operand slices
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(&storage.z[warp_row + 16 * i][warp_col + 16 * j], acc[i][j], Storage::kLdZ,
                                wmma::mem_row_major);
    __syncthreads();
  } else {
    constexpr int TM = N / 16, TN = V / 16;
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    acc_t acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = 0;
    for (int64_t k0 = 0; k0 < hidden_size; k0 += K) {
      __syncthreads();
      load_slice<in_t, N, K, LD>(storage.operands.hidden, hidden, n0, num_tokens, k0, hidden_size, false);
      load_slice<in_t, V, K, LD>(storage.operands.weight, weight, v0, vocab, k0, hidden_size, false);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < K; ++kk) {
        acc_t a[TM], b[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i] = to_acc<acc_t>(storage.operands.hidden[ty * TM + i][kk]);
#pragma unroll
        for (int j = 0; j < TN; ++j) b[j] = to_acc<acc_t>(storage.operands.weight[tx + 16 * j][kk]);
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) storage.z[ty * TM + i][tx + 16 * j] = acc[i][j];
    __syncthreads();
  }
}

// True when 16-bit operands can be moved 16 bytes at a time.
inline bool can_vector_load(const at::Tensor& hidden, const at::Tensor& weight) {
  return hidden.element_size() == 2 && hidden.size(1) % 8 == 0 &&
         reinterpret_cast<uintptr_t>(hidden.data_ptr()) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(weight.data_ptr()) % 16 == 0;
}

}  // namespace cuda_kernels
}  // namespace r1core
