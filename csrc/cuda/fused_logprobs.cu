// CUDA kernels of the fused log-prob op (statistics forward, gradient backward).
//
// Forward: a CTA owns TILE_N tokens and a range of vocabulary tiles (the vocabulary is split
// across blockIdx.y when there are too few token tiles to fill the GPU). For each vocabulary
// tile it computes the logits into shared memory (logit_tile.cuh) and folds them into an
// online max / sum-exp / sum-exp*z per thread; the threads of a row and then the splits are
// merged at the end. Logits never reach global memory.
// Backward: per vocabulary chunk, one kernel recomputes the logit tiles and writes
// dL/dlogits for the chunk ([N, chunk] in the input dtype, like Liger-Kernel's chunked
// backward); cuBLAS then adds G W_chunk into grad_hidden (fp32) and writes G^T H into the
// chunk's rows of grad_weight. Its allocations follow logprobs_backward_plan.h.
#include "../logprobs_backward_plan.h"
#include "../r1core.h"
#include "logit_tile.cuh"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace r1core {
namespace cuda_kernels {
namespace {

static_assert(TileShape<at::BFloat16>::V == kTileColumns16Bit && TileShape<at::Half>::V == kTileColumns16Bit &&
                  TileShape<float>::V == kTileColumnsFloat && TileShape<double>::V == kTileColumnsDouble,
              "logprobs_backward_plan.h must know the gradient kernel's tile widths");

template <typename acc_t>
__device__ __forceinline__ acc_t negative_infinity() {
  return -std::numeric_limits<acc_t>::infinity();
}

// exp(a - b) where a may be -inf (an empty partial): 0 instead of NaN when b is -inf too.
template <typename acc_t>
__device__ __forceinline__ acc_t rescale(acc_t a, acc_t b) {
  return a == negative_infinity<acc_t>() ? acc_t(0) : exp(a - b);
}

// Online softmax statistics of one (token, column subset); `merge` folds another in.
template <typename acc_t>
struct OnlineStats {
  acc_t max, sum_exp, sum_exp_z, target;
  __device__ void merge(acc_t other_max, acc_t other_sum, acc_t other_sum_z, acc_t other_target) {
    const acc_t new_max = max > other_max ? max : other_max;
    const acc_t a = rescale(max, new_max), b = rescale(other_max, new_max);
    sum_exp = sum_exp * a + other_sum * b;
    sum_exp_z = sum_exp_z * a + other_sum_z * b;
    target += other_target;  // exactly one partial holds the label's logit
    max = new_max;
  }
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    logprobs_stats_kernel(const typename TileShape<scalar_t>::in_t* __restrict__ hidden,
                          const typename TileShape<scalar_t>::in_t* __restrict__ weight,
                          const int64_t* __restrict__ labels, typename TileShape<scalar_t>::acc_t* __restrict__ partial,
                          int64_t num_tokens, int64_t vocab, int64_t hidden_size, int64_t tiles_per_split,
                          typename TileShape<scalar_t>::acc_t inv_temperature, bool need_entropy, bool vector_loads) {
  using Shape = TileShape<scalar_t>;
  using acc_t = typename Shape::acc_t;
  constexpr int kThreadsPerRow = kThreads / Shape::N;
  __shared__ __align__(128) TileStorage<scalar_t> storage;

  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * Shape::N;
  const int64_t num_tiles = (vocab + Shape::V - 1) / Shape::V;
  const int64_t tile_begin = static_cast<int64_t>(blockIdx.y) * tiles_per_split;
  const int64_t tile_end = min(num_tiles, tile_begin + tiles_per_split);
  const int row = threadIdx.x / kThreadsPerRow, lane = threadIdx.x % kThreadsPerRow;
  const int64_t token = n0 + row;
  const int64_t label = token < num_tokens ? labels[token] : -1;

  OnlineStats<acc_t> stats{negative_infinity<acc_t>(), 0, 0, 0};
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const int64_t v0 = tile * Shape::V;
    logit_tile<scalar_t>(storage, hidden, weight, num_tokens, vocab, hidden_size, n0, v0, vector_loads);
    const int width = vocab - v0 < Shape::V ? static_cast<int>(vocab - v0) : Shape::V;
    const acc_t* z = storage.z[row];
    acc_t tile_max = negative_infinity<acc_t>();
    for (int c = lane; c < width; c += kThreadsPerRow) tile_max = max(tile_max, z[c] * inv_temperature);
    if (tile_max != negative_infinity<acc_t>()) {
      const acc_t new_max = max(stats.max, tile_max);
      const acc_t scale = rescale(stats.max, new_max);
      acc_t sum = 0, sum_z = 0;
      for (int c = lane; c < width; c += kThreadsPerRow) {
        const acc_t zc = z[c] * inv_temperature;
        const acc_t e = exp(zc - new_max);
        sum += e;
        sum_z = fma(e, zc, sum_z);
      }
      stats.sum_exp = stats.sum_exp * scale + sum;
      if (need_entropy) stats.sum_exp_z = stats.sum_exp_z * scale + sum_z;
      stats.max = new_max;
    }
    const int64_t local = label - v0;
    if (local >= 0 && local < width && local % kThreadsPerRow == lane) stats.target = z[local] * inv_temperature;
  }
  // The threads of a row are kThreadsPerRow consecutive lanes of one warp.
#pragma unroll
  for (int offset = kThreadsPerRow / 2; offset > 0; offset /= 2) {
    const acc_t other_max = __shfl_xor_sync(0xffffffffu, stats.max, offset);
    const acc_t other_sum = __shfl_xor_sync(0xffffffffu, stats.sum_exp, offset);
    const acc_t other_sum_z = __shfl_xor_sync(0xffffffffu, stats.sum_exp_z, offset);
    const acc_t other_target = __shfl_xor_sync(0xffffffffu, stats.target, offset);
    stats.merge(other_max, other_sum, other_sum_z, other_target);
  }
  if (lane == 0 && token < num_tokens) {
    acc_t* out = partial + static_cast<int64_t>(blockIdx.y) * kNumStats * num_tokens;
    out[token] = stats.max;
    out[num_tokens + token] = stats.sum_exp;
    out[2 * num_tokens + token] = stats.sum_exp_z;
    out[3 * num_tokens + token] = stats.target;
  }
}

// Merges the per-split statistics [splits, 4, N] into [4, N].
template <typename acc_t>
__global__ void combine_splits_kernel(const acc_t* __restrict__ partial, acc_t* __restrict__ out, int64_t num_tokens,
                                      int64_t num_splits) {
  const int64_t token = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (token >= num_tokens) return;
  OnlineStats<acc_t> stats{negative_infinity<acc_t>(), 0, 0, 0};
  for (int64_t s = 0; s < num_splits; ++s) {
    const acc_t* p = partial + s * kNumStats * num_tokens;
    stats.merge(p[token], p[num_tokens + token], p[2 * num_tokens + token], p[3 * num_tokens + token]);
  }
  out[token] = stats.max;
  out[num_tokens + token] = stats.sum_exp;
  out[2 * num_tokens + token] = stats.sum_exp_z;
  out[3 * num_tokens + token] = stats.target;
}

// dL/dlogits of one vocabulary chunk: grad_logits[i, c] for c in [0, chunk_width).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    grad_logits_kernel(const typename TileShape<scalar_t>::in_t* __restrict__ hidden,
                       const typename TileShape<scalar_t>::in_t* __restrict__ weight_chunk,
                       const int64_t* __restrict__ labels, const typename TileShape<scalar_t>::acc_t* __restrict__ lse,
                       const typename TileShape<scalar_t>::acc_t* __restrict__ entropy,
                       const typename TileShape<scalar_t>::acc_t* __restrict__ grad_logp,
                       const typename TileShape<scalar_t>::acc_t* __restrict__ grad_entropy,
                       typename TileShape<scalar_t>::in_t* __restrict__ grad_logits, int64_t num_tokens,
                       int64_t chunk_width, int64_t hidden_size, int64_t chunk_start,
                       typename TileShape<scalar_t>::acc_t inv_temperature, bool has_entropy, bool vector_loads) {
  using Shape = TileShape<scalar_t>;
  using acc_t = typename Shape::acc_t;
  using in_t = typename Shape::in_t;
  __shared__ __align__(128) TileStorage<scalar_t> storage;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * Shape::N;
  const int64_t v0 = static_cast<int64_t>(blockIdx.y) * Shape::V;
  logit_tile<scalar_t>(storage, hidden, weight_chunk, num_tokens, chunk_width, hidden_size, n0, v0, vector_loads);
  for (int idx = threadIdx.x; idx < Shape::N * Shape::V; idx += kThreads) {
    const int r = idx / Shape::V, c = idx % Shape::V;
    const int64_t token = n0 + r, column = v0 + c;
    if (token >= num_tokens || column >= chunk_width) continue;
    const acc_t z = storage.z[r][c] * inv_temperature;
    const acc_t lse_i = lse[token], gl = grad_logp[token];
    const acc_t p = exp(z - lse_i);
    acc_t g = -gl * p;
    if (has_entropy) g -= grad_entropy[token] * p * (z - lse_i + entropy[token]);
    if (labels[token] - chunk_start == column) g += gl;
    grad_logits[token * chunk_width + column] = from_acc<in_t>(g * inv_temperature);
  }
}

// (ATen/cuda/CUDAContext.h would give this too, but pulls in cuBLAS/cuSPARSE headers.)
int num_sms(int device) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

template <typename scalar_t>
const typename TileShape<scalar_t>::in_t* in_ptr(const at::Tensor& t) {
  return reinterpret_cast<const typename TileShape<scalar_t>::in_t*>(t.data_ptr<scalar_t>());
}

at::Tensor logprobs_stats_cuda(const at::Tensor& hidden_in, const at::Tensor& weight_in, const at::Tensor& labels_in,
                               double inv_temperature, bool need_entropy) {
  check_logprobs_inputs(hidden_in, weight_in, labels_in);
  const c10::cuda::CUDAGuard guard(hidden_in.device());
  const auto dtype = compute_dtype(hidden_in);
  const int64_t num_tokens = hidden_in.size(0), vocab = weight_in.size(0), hidden_size = hidden_in.size(1);
  at::Tensor stats = at::empty({kNumStats, num_tokens}, hidden_in.options().dtype(dtype));
  if (num_tokens == 0) return stats;
  if (vocab == 0) {
    stats.zero_();
    stats[0].fill_(-std::numeric_limits<double>::infinity());
    return stats;
  }
  const at::Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous(), labels = labels_in.contiguous();
  const bool vector_loads = can_vector_load(hidden, weight);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hidden.scalar_type(), "r1core_logprobs_stats_cuda", [&] {
    using Shape = TileShape<scalar_t>;
    using acc_t = typename Shape::acc_t;
    const int64_t row_blocks = (num_tokens + Shape::N - 1) / Shape::N;
    const int64_t num_tiles = (vocab + Shape::V - 1) / Shape::V;
    // Split the vocabulary until there are ~2 CTAs per SM; each split costs 4N floats.
    const int64_t wanted = std::max<int64_t>(1, (2 * num_sms(hidden.get_device()) + row_blocks - 1) / row_blocks);
    int64_t splits = std::min<int64_t>(wanted, std::min<int64_t>(num_tiles, 65535));
    const int64_t tiles_per_split = (num_tiles + splits - 1) / splits;
    splits = (num_tiles + tiles_per_split - 1) / tiles_per_split;
    at::Tensor partial = splits == 1 ? stats : at::empty({splits, kNumStats, num_tokens}, stats.options());
    const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(splits));
    logprobs_stats_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        in_ptr<scalar_t>(hidden), in_ptr<scalar_t>(weight), labels.data_ptr<int64_t>(), partial.data_ptr<acc_t>(),
        num_tokens, vocab, hidden_size, tiles_per_split, static_cast<acc_t>(inv_temperature), need_entropy,
        vector_loads);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (splits > 1) {
      const int threads = 256;
      combine_splits_kernel<acc_t><<<static_cast<unsigned>((num_tokens + threads - 1) / threads), threads, 0, stream>>>(
          partial.data_ptr<acc_t>(), stats.data_ptr<acc_t>(), num_tokens, splits);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return stats;
}

// grad_hidden += grad_logits @ weight_chunk with grad_hidden fp32 and the operands 16-bit. cuBLAS
// adds the product into the fp32 output in place (addmm with out_dtype, beta = 1); where this
// torch lacks that, products of `rows` rows go through an fp32 temporary of the plan's size.
void accumulate_fp32(at::Tensor& grad_hidden, const at::Tensor& grad_logits, const at::Tensor& weight_chunk,
                     int64_t rows) {
  static bool in_place = true;  // cleared once, the first time cuBLAS refuses
  if (in_place) {
    try {
      at::addmm_out(grad_hidden, grad_hidden, grad_logits, weight_chunk, at::kFloat);
      return;
    } catch (const c10::Error& error) {
      in_place = false;
      TORCH_WARN_ONCE("r1core: fp32-output addmm is unavailable (", error.what_without_backtrace(),
                      "); the CUDA log-prob backward adds ", rows, "-row products through an fp32 temporary");
    }
  }
  const int64_t num_tokens = grad_logits.size(0);
  for (int64_t r0 = 0; r0 < num_tokens; r0 += rows) {
    const int64_t count = std::min(rows, num_tokens - r0);
    grad_hidden.narrow(0, r0, count).add_(at::mm(grad_logits.narrow(0, r0, count), weight_chunk, at::kFloat));
  }
}

std::tuple<at::Tensor, at::Tensor> logprobs_backward_cuda(const at::Tensor& hidden_in, const at::Tensor& weight_in,
                                                          const at::Tensor& labels_in, const at::Tensor& lse_in,
                                                          const at::Tensor& entropy_in, const at::Tensor& grad_logp_in,
                                                          const at::Tensor& grad_entropy_in, double inv_temperature) {
  check_logprobs_inputs(hidden_in, weight_in, labels_in);
  const c10::cuda::CUDAGuard guard(hidden_in.device());
  const auto dtype = compute_dtype(hidden_in);
  const int64_t num_tokens = hidden_in.size(0), vocab = weight_in.size(0), hidden_size = hidden_in.size(1);
  const bool has_entropy = grad_entropy_in.numel() > 0;
  TORCH_CHECK(lse_in.numel() == num_tokens && grad_logp_in.numel() == num_tokens,
              "r1core: lse and grad_logp must be [N]=", num_tokens);
  TORCH_CHECK(!has_entropy || (entropy_in.numel() == num_tokens && grad_entropy_in.numel() == num_tokens),
              "r1core: entropy and grad_entropy must be [N]=", num_tokens, " or grad_entropy empty");
  if (num_tokens == 0 || vocab == 0) {
    return {at::zeros(hidden_in.sizes(), hidden_in.options()), at::zeros(weight_in.sizes(), weight_in.options())};
  }
  // Every row of grad_weight is written by its chunk's GEMM: no zero fill.
  at::Tensor grad_weight = at::empty(weight_in.sizes(), weight_in.options());
  const bool accumulates_in_output = hidden_in.scalar_type() == dtype;  // fp32 / fp64 inputs
  const LogprobsBackwardPlan plan = plan_logprobs_backward(num_tokens, vocab, hidden_size, hidden_in.element_size(),
                                                           tile_columns_for(hidden_in.element_size()),
                                                           accumulates_in_output);
  at::Tensor grad_hidden = at::zeros({num_tokens, hidden_size}, hidden_in.options().dtype(dtype));
  const at::Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous(), labels = labels_in.contiguous();
  const at::Tensor lse = lse_in.to(dtype).contiguous(), grad_logp = grad_logp_in.to(dtype).contiguous();
  const at::Tensor entropy = has_entropy ? entropy_in.to(dtype).contiguous() : lse;
  const at::Tensor grad_entropy = has_entropy ? grad_entropy_in.to(dtype).contiguous() : lse;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hidden.scalar_type(), "r1core_logprobs_backward_cuda", [&] {
    using Shape = TileShape<scalar_t>;
    using acc_t = typename Shape::acc_t;
    using in_t = typename Shape::in_t;
    TORCH_CHECK(plan.chunk_columns % Shape::V == 0 || plan.chunk_columns == vocab,
                "r1core: backward chunk of ", plan.chunk_columns, " columns is not whole tiles");
    const int64_t chunk = plan.chunk_columns;
    at::Tensor grad_logits_buffer = at::empty({plan.grad_logits_bytes / hidden.element_size()}, hidden.options());
    for (int64_t c0 = 0; c0 < vocab; c0 += chunk) {
      const int64_t width = std::min(chunk, vocab - c0);
      const at::Tensor weight_chunk = weight.narrow(0, c0, width);
      at::Tensor grad_logits = grad_logits_buffer.narrow(0, 0, num_tokens * width).view({num_tokens, width});
      const dim3 grid(static_cast<unsigned>((num_tokens + Shape::N - 1) / Shape::N),
                      static_cast<unsigned>((width + Shape::V - 1) / Shape::V));
      grad_logits_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
          in_ptr<scalar_t>(hidden), in_ptr<scalar_t>(weight_chunk), labels.data_ptr<int64_t>(), lse.data_ptr<acc_t>(),
          entropy.data_ptr<acc_t>(), grad_logp.data_ptr<acc_t>(), grad_entropy.data_ptr<acc_t>(),
          reinterpret_cast<in_t*>(grad_logits.data_ptr<scalar_t>()), num_tokens, width, hidden_size, c0,
          static_cast<acc_t>(inv_temperature), has_entropy, can_vector_load(hidden, weight_chunk));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
        grad_hidden.addmm_(grad_logits, weight_chunk);
      } else {
        accumulate_fp32(grad_hidden, grad_logits, weight_chunk, plan.temporary_rows);
      }
      at::Tensor grad_weight_chunk = grad_weight.narrow(0, c0, width);
      at::mm_out(grad_weight_chunk, grad_logits.t(), hidden);
    }
  });
  return {accumulates_in_output ? grad_hidden : grad_hidden.to(hidden_in.scalar_type()), grad_weight};
}

}  // namespace
}  // namespace cuda_kernels
}  // namespace r1core

TORCH_LIBRARY_IMPL(r1core, CUDA, m) {
  m.impl("logprobs_stats", &r1core::cuda_kernels::logprobs_stats_cuda);
  m.impl("logprobs_backward", &r1core::cuda_kernels::logprobs_backward_cuda);
}
