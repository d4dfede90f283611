// CUDA kernels of the GRPO loss: per-row statistics (one CTA per row, block reduction of
// the eight sums) and the per-token d/dlogp (one thread per token).
//
// The token tensors are read in the accumulation dtype (the host converts them, which is a
// no-op for float32 inputs); advantages given as [B] expanded to [B, T] are read through
// a column stride of 0.
#include "../r1core.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace r1core {
namespace cuda_kernels {
namespace {

constexpr int kRowThreads = 256;

template <typename acc_t>
struct TokenPointers {
  const acc_t* logp;
  const acc_t* old_logp;
  const acc_t* advantages;
  const acc_t* mask;
  const acc_t* ref_logp;      // null without a KL term
  const acc_t* rollout_logp;  // null without truncated importance sampling
  int64_t advantage_row_stride, advantage_col_stride, length;
};

template <typename acc_t>
struct TokenTerms {
  acc_t ratio, pg, grad_pg, kl, grad_kl;
  bool clip_low, clip_high, dual;
};

// The per-token specification (grpo_token_terms in grpo_loss.py) and its derivative.
template <typename acc_t>
__device__ __forceinline__ TokenTerms<acc_t> token_terms(const TokenPointers<acc_t>& in, int64_t row, int64_t col,
                                                         const ClipParams& params) {
  const int64_t index = row * in.length + col;
  const acc_t logp = in.logp[index], old_logp = in.old_logp[index];
  const acc_t adv = in.advantages[row * in.advantage_row_stride + col * in.advantage_col_stride];
  const acc_t lower = acc_t(1) - acc_t(params.clip_low), upper = acc_t(1) + acc_t(params.clip_high);
  TokenTerms<acc_t> t;
  t.ratio = exp(logp - old_logp);
  const acc_t pg_unclipped = -adv * t.ratio;
  const acc_t pg_clipped = -adv * min(max(t.ratio, lower), upper);
  const bool clipped = pg_clipped > pg_unclipped;
  t.pg = clipped ? pg_clipped : pg_unclipped;
  t.grad_pg = clipped ? acc_t(0) : pg_unclipped;
  t.clip_low = clipped && t.ratio < lower;
  t.clip_high = clipped && t.ratio > upper;
  t.dual = false;
  if (params.dual_clip > 0) {
    const acc_t bound = -acc_t(params.dual_clip) * adv;
    t.dual = adv < acc_t(0) && bound < t.pg;
    if (t.dual) {
      t.pg = bound;
      t.grad_pg = 0;
    }
  }
  if (in.rollout_logp != nullptr) {
    const acc_t weight = min(exp(old_logp - in.rollout_logp[index]), acc_t(params.is_cap));
    t.pg *= weight;
    t.grad_pg *= weight;
  }
  t.kl = 0;
  t.grad_kl = 0;
  if (in.ref_logp != nullptr) {
    const acc_t diff = logp - in.ref_logp[index];
    if (params.kl_estimator == 0) {
      t.kl = diff;
      t.grad_kl = 1;
    } else if (params.kl_estimator == 1) {
      t.kl = acc_t(0.5) * diff * diff;
      t.grad_kl = diff;
    } else {
      const acc_t e = exp(-diff);
      t.kl = e + diff - acc_t(1);
      t.grad_kl = acc_t(1) - e;
    }
  }
  return t;
}

template <typename acc_t>
__global__ void __launch_bounds__(kRowThreads)
    row_stats_kernel(TokenPointers<acc_t> in, ClipParams params, acc_t* __restrict__ out) {
  const int64_t row = blockIdx.x;
  acc_t sums[kNumRowStats] = {0, 0, 0, 0, 0, 0, 0, 0};  // last one is the ratio max
  for (int64_t col = threadIdx.x; col < in.length; col += kRowThreads) {
    const acc_t m = in.mask[row * in.length + col];
    const TokenTerms<acc_t> t = token_terms(in, row, col, params);
    sums[0] += t.pg * m;
    sums[1] += t.kl * m;
    sums[2] += m;
    sums[3] += t.clip_low ? m : acc_t(0);
    sums[4] += t.clip_high ? m : acc_t(0);
    sums[5] += t.dual ? m : acc_t(0);
    sums[6] += t.ratio * m;
    if (m > acc_t(0)) sums[7] = max(sums[7], t.ratio);
  }
  __shared__ acc_t partial[kRowThreads / 32][kNumRowStats];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int k = 0; k < kNumRowStats; ++k) {
    acc_t v = sums[k];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      const acc_t other = __shfl_xor_sync(0xffffffffu, v, offset);
      v = k == kNumRowStats - 1 ? max(v, other) : v + other;
    }
    if (lane == 0) partial[warp][k] = v;
  }
  __syncthreads();
  if (threadIdx.x < kNumRowStats) {
    const int k = threadIdx.x;
    acc_t v = partial[0][k];
    for (int w = 1; w < kRowThreads / 32; ++w) v = k == kNumRowStats - 1 ? max(v, partial[w][k]) : v + partial[w][k];
    out[row * kNumRowStats + k] = v;
  }
}

template <typename acc_t>
__global__ void row_backward_kernel(TokenPointers<acc_t> in, ClipParams params, const acc_t* __restrict__ grad_pg_rows,
                                    const acc_t* __restrict__ grad_kl_rows, acc_t* __restrict__ grad) {
  const int64_t row = blockIdx.x;
  const int64_t col = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (col >= in.length) return;
  const TokenTerms<acc_t> t = token_terms(in, row, col, params);
  const int64_t index = row * in.length + col;
  grad[index] = (grad_pg_rows[row] * t.grad_pg + grad_kl_rows[row] * t.grad_kl) * in.mask[index];
}

struct Prepared {
  at::Tensor logp, old_logp, advantages, mask, ref_logp, rollout_logp;
  int64_t advantage_row_stride, advantage_col_stride;
};

Prepared prepare(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                 const at::Tensor& mask, const std::optional<at::Tensor>& ref_logp,
                 const std::optional<at::Tensor>& rollout_logp, double is_cap) {
  const auto dtype = compute_dtype(logp);
  auto conv = [&](const at::Tensor& t) { return t.to(dtype).contiguous(); };
  Prepared p;
  p.logp = conv(logp);
  p.old_logp = conv(old_logp);
  if (advantages.size(1) <= 1 || advantages.stride(1) == 0) {  // [B] expanded along T
    p.advantages = conv(advantages.select(1, 0));
    p.advantage_row_stride = 1;
    p.advantage_col_stride = 0;
  } else {
    p.advantages = conv(advantages);
    p.advantage_row_stride = advantages.size(1);
    p.advantage_col_stride = 1;
  }
  p.mask = conv(mask);
  if (ref_logp.has_value()) p.ref_logp = conv(*ref_logp);
  if (rollout_logp.has_value() && is_cap > 0) p.rollout_logp = conv(*rollout_logp);
  return p;
}

template <typename acc_t>
TokenPointers<acc_t> pointers(const Prepared& p) {
  auto ptr = [](const at::Tensor& t) -> const acc_t* { return t.defined() ? t.data_ptr<acc_t>() : nullptr; };
  return {ptr(p.logp),           ptr(p.old_logp),   ptr(p.advantages),         ptr(p.mask), ptr(p.ref_logp),
          ptr(p.rollout_logp), p.advantage_row_stride, p.advantage_col_stride, p.logp.size(1)};
}

at::Tensor grpo_row_stats_cuda(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                               const at::Tensor& mask, const std::optional<at::Tensor>& ref_logp,
                               const std::optional<at::Tensor>& rollout_logp, double clip_low, double clip_high,
                               double dual_clip, int64_t kl_estimator, double is_cap) {
  check_row_inputs(logp, old_logp, advantages, mask, ref_logp, rollout_logp);
  TORCH_CHECK(kl_estimator >= 0 && kl_estimator <= 2, "r1core: kl_estimator must be 0, 1 or 2, got ", kl_estimator);
  const c10::cuda::CUDAGuard guard(logp.device());
  const auto dtype = compute_dtype(logp);
  const int64_t batch = logp.size(0);
  at::Tensor stats = at::zeros({batch, kNumRowStats}, logp.options().dtype(dtype));
  if (batch == 0 || logp.size(1) == 0) return stats;
  const Prepared prepared = prepare(logp, old_logp, advantages, mask, ref_logp, rollout_logp, is_cap);
  const ClipParams params{clip_low, clip_high, dual_clip, kl_estimator, is_cap};
  AT_DISPATCH_FLOATING_TYPES(dtype, "r1core_grpo_row_stats_cuda", [&] {
    row_stats_kernel<scalar_t><<<static_cast<unsigned>(batch), kRowThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        pointers<scalar_t>(prepared), params, stats.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return stats;
}

at::Tensor grpo_row_backward_cuda(const at::Tensor& grad_pg_rows, const at::Tensor& grad_kl_rows,
                                  const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                                  const at::Tensor& mask, const std::optional<at::Tensor>& ref_logp,
                                  const std::optional<at::Tensor>& rollout_logp, double clip_low, double clip_high,
                                  double dual_clip, int64_t kl_estimator, double is_cap) {
  check_row_inputs(logp, old_logp, advantages, mask, ref_logp, rollout_logp);
  TORCH_CHECK(kl_estimator >= 0 && kl_estimator <= 2, "r1core: kl_estimator must be 0, 1 or 2, got ", kl_estimator);
  const c10::cuda::CUDAGuard guard(logp.device());
  const auto dtype = compute_dtype(logp);
  const int64_t batch = logp.size(0), length = logp.size(1);
  TORCH_CHECK(grad_pg_rows.numel() == batch && grad_kl_rows.numel() == batch,
              "r1core: grad_pg_rows and grad_kl_rows must be [B]=", batch);
  at::Tensor grad = at::empty({batch, length}, logp.options().dtype(dtype));
  if (grad.numel() == 0) return grad;
  const Prepared prepared = prepare(logp, old_logp, advantages, mask, ref_logp, rollout_logp, is_cap);
  const at::Tensor gpg = grad_pg_rows.to(dtype).contiguous(), gkl = grad_kl_rows.to(dtype).contiguous();
  const ClipParams params{clip_low, clip_high, dual_clip, kl_estimator, is_cap};
  AT_DISPATCH_FLOATING_TYPES(dtype, "r1core_grpo_row_backward_cuda", [&] {
    const int threads = 256;
    const dim3 grid(static_cast<unsigned>(batch), static_cast<unsigned>((length + threads - 1) / threads));
    row_backward_kernel<scalar_t><<<grid, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        pointers<scalar_t>(prepared), params, gpg.data_ptr<scalar_t>(), gkl.data_ptr<scalar_t>(),
        grad.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}

}  // namespace
}  // namespace cuda_kernels
}  // namespace r1core

TORCH_LIBRARY_IMPL(r1core, CUDA, m) {
  m.impl("grpo_row_stats", &r1core::cuda_kernels::grpo_row_stats_cuda);
  m.impl("grpo_row_backward", &r1core::cuda_kernels::grpo_row_backward_cuda);
}
