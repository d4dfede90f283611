// CUDA kernels of group-relative advantages, each in one launch.
//
// NaN rewards trip a device assertion inside the kernels (no extra launch, no host sync):
// the next synchronising call raises "device-side assert triggered".
// Fixed-size contiguous groups: one warp per group (count, mean, unbiased std, range by
// warp shuffles; two passes over the group's rewards, which stay in L1).
// Ragged groups (dense ids): a single CTA of 1024 threads runs the three phases (scatter
// sums and ranges, scatter squared deviations, write) over a float64 workspace in global
// memory, separated by __syncthreads(), which also orders the CTA's global writes. RL
// batches are thousands of samples, so one CTA is not the bottleneck and no second launch
// or grid-wide barrier is needed. Sums are float64 like the CPU kernels.
#include "../r1core.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>

namespace r1core {
namespace cuda_kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kRaggedThreads = 1024;

__device__ __forceinline__ double advantage(double reward, double count, double mean, double sq_dev, bool zero_variance,
                                            int mode, double eps) {
  if (mode == static_cast<int>(AdvantageMode::kNone)) return reward;
  if (count < 2 || zero_variance) return 0.0;
  const double centred = reward - mean;
  if (mode == static_cast<int>(AdvantageMode::kGRPO)) return centred / (sqrt(sq_dev / (count - 1)) + eps);
  if (mode == static_cast<int>(AdvantageMode::kRLOO)) return centred * count / (count - 1);
  return centred;  // Dr. GRPO
}

template <typename scalar_t>
__global__ void fixed_groups_kernel(const scalar_t* __restrict__ rewards, scalar_t* __restrict__ out,
                                    bool* __restrict__ zero_variance, int64_t num_groups, int64_t group_size, int mode,
                                    double eps) {
  const int64_t group = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (group >= num_groups) return;  // whole warps leave together
  const scalar_t* r = rewards + group * group_size;
  double sum = 0, low = INFINITY, high = -INFINITY;
  for (int64_t k = lane; k < group_size; k += 32) {
    const double x = static_cast<double>(r[k]);
    CUDA_KERNEL_ASSERT(!isnan(x) && "r1core.ops.group_advantages: rewards contain NaN");
    sum += x;
    low = fmin(low, x);
    high = fmax(high, x);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    low = fmin(low, __shfl_xor_sync(0xffffffffu, low, offset));
    high = fmax(high, __shfl_xor_sync(0xffffffffu, high, offset));
  }
  const double count = static_cast<double>(group_size), mean = sum / count;
  double sq_dev = 0;
  for (int64_t k = lane; k < group_size; k += 32) {
    const double centred = static_cast<double>(r[k]) - mean;
    sq_dev += centred * centred;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) sq_dev += __shfl_xor_sync(0xffffffffu, sq_dev, offset);
  const bool flat = high == low;
  for (int64_t k = lane; k < group_size; k += 32) {
    const int64_t i = group * group_size + k;
    out[i] = static_cast<scalar_t>(advantage(static_cast<double>(r[k]), count, mean, sq_dev, flat, mode, eps));
    zero_variance[i] = flat;
  }
}

// atomicMin/atomicMax for doubles (no hardware instruction): compare-and-swap loops.
__device__ __forceinline__ void atomic_min_double(double* address, double value) {
  unsigned long long* bits = reinterpret_cast<unsigned long long*>(address);
  unsigned long long old = *bits;
  while (value < __longlong_as_double(old)) {
    const unsigned long long seen = atomicCAS(bits, old, __double_as_longlong(value));
    if (seen == old) break;
    old = seen;
  }
}

__device__ __forceinline__ void atomic_max_double(double* address, double value) {
  unsigned long long* bits = reinterpret_cast<unsigned long long*>(address);
  unsigned long long old = *bits;
  while (value > __longlong_as_double(old)) {
    const unsigned long long seen = atomicCAS(bits, old, __double_as_longlong(value));
    if (seen == old) break;
    old = seen;
  }
}

// workspace: float64 [5, B] = count, sum (then mean), squared deviations, min, max.
template <typename scalar_t>
__global__ void __launch_bounds__(kRaggedThreads)
    ragged_groups_kernel(const scalar_t* __restrict__ rewards, const int64_t* __restrict__ group_ids,
                         double* __restrict__ workspace, scalar_t* __restrict__ out, bool* __restrict__ zero_variance,
                         int64_t num_samples, int mode, double eps) {
  double* count = workspace;
  double* sum = workspace + num_samples;
  double* sq_dev = workspace + 2 * num_samples;
  double* low = workspace + 3 * num_samples;
  double* high = workspace + 4 * num_samples;
  for (int64_t g = threadIdx.x; g < num_samples; g += kRaggedThreads) {
    count[g] = 0;
    sum[g] = 0;
    sq_dev[g] = 0;
    low[g] = INFINITY;
    high[g] = -INFINITY;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < num_samples; i += kRaggedThreads) {
    const int64_t g = group_ids[i];
    CUDA_KERNEL_ASSERT(g >= 0 && g < num_samples && "r1core: group ids must be dense in [0, B)");
    const double x = static_cast<double>(rewards[i]);
    CUDA_KERNEL_ASSERT(!isnan(x) && "r1core.ops.group_advantages: rewards contain NaN");
    atomicAdd(count + g, 1.0);
    atomicAdd(sum + g, x);
    atomic_min_double(low + g, x);
    atomic_max_double(high + g, x);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < num_samples; i += kRaggedThreads) {
    const int64_t g = group_ids[i];
    const double centred = static_cast<double>(rewards[i]) - sum[g] / count[g];
    atomicAdd(sq_dev + g, centred * centred);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < num_samples; i += kRaggedThreads) {
    const int64_t g = group_ids[i];
    const bool flat = high[g] == low[g];
    out[i] = static_cast<scalar_t>(
        advantage(static_cast<double>(rewards[i]), count[g], sum[g] / count[g], sq_dev[g], flat, mode, eps));
    zero_variance[i] = flat;
  }
}

std::tuple<at::Tensor, at::Tensor> make_outputs(const at::Tensor& rewards) {
  return {at::empty(rewards.sizes(), rewards.options().dtype(compute_dtype(rewards))),
          at::empty(rewards.sizes(), rewards.options().dtype(at::kBool))};
}

std::tuple<at::Tensor, at::Tensor> group_advantages_cuda(const at::Tensor& rewards_in, const at::Tensor& group_ids_in,
                                                         c10::string_view mode_name, double eps) {
  TORCH_CHECK(rewards_in.dim() == 1, "r1core: rewards must be [B], got ", rewards_in.sizes());
  TORCH_CHECK(group_ids_in.sizes() == rewards_in.sizes() && group_ids_in.scalar_type() == at::kLong,
              "r1core: group_ids must be int64 [B] like rewards");
  const int mode = static_cast<int>(parse_mode(std::string(mode_name)));
  const c10::cuda::CUDAGuard guard(rewards_in.device());
  auto [adv, zero_variance] = make_outputs(rewards_in);
  const int64_t num_samples = rewards_in.size(0);
  if (num_samples == 0) return {adv, zero_variance};
  const at::Tensor rewards = rewards_in.to(adv.scalar_type()).contiguous(), group_ids = group_ids_in.contiguous();
  at::Tensor workspace = at::empty({5, num_samples}, rewards.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(adv.scalar_type(), "r1core_group_advantages_cuda", [&] {
    ragged_groups_kernel<scalar_t><<<1, kRaggedThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        rewards.data_ptr<scalar_t>(), group_ids.data_ptr<int64_t>(), workspace.data_ptr<double>(),
        adv.data_ptr<scalar_t>(), zero_variance.data_ptr<bool>(), num_samples, mode, eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {adv, zero_variance};
}

std::tuple<at::Tensor, at::Tensor> group_advantages_fixed_cuda(const at::Tensor& rewards_in, int64_t group_size,
                                                               c10::string_view mode_name, double eps) {
  TORCH_CHECK(rewards_in.dim() == 1, "r1core: rewards must be [B], got ", rewards_in.sizes());
  const int64_t num_samples = rewards_in.size(0);
  TORCH_CHECK(group_size >= 1 && num_samples % group_size == 0, "r1core: group_size=", group_size,
              " does not divide the batch of ", num_samples, " rewards");
  const int mode = static_cast<int>(parse_mode(std::string(mode_name)));
  const c10::cuda::CUDAGuard guard(rewards_in.device());
  auto [adv, zero_variance] = make_outputs(rewards_in);
  if (num_samples == 0) return {adv, zero_variance};
  const at::Tensor rewards = rewards_in.to(adv.scalar_type()).contiguous();
  const int64_t num_groups = num_samples / group_size;
  AT_DISPATCH_FLOATING_TYPES(adv.scalar_type(), "r1core_group_advantages_fixed_cuda", [&] {
    const unsigned blocks = static_cast<unsigned>((num_groups + kWarpsPerBlock - 1) / kWarpsPerBlock);
    fixed_groups_kernel<scalar_t><<<blocks, kWarpsPerBlock * 32, 0, c10::cuda::getCurrentCUDAStream()>>>(
        rewards.data_ptr<scalar_t>(), adv.data_ptr<scalar_t>(), zero_variance.data_ptr<bool>(), num_groups, group_size,
        mode, eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {adv, zero_variance};
}

}  // namespace
}  // namespace cuda_kernels
}  // namespace r1core

TORCH_LIBRARY_IMPL(r1core, CUDA, m) {
  m.impl("group_advantages", &r1core::cuda_kernels::group_advantages_cuda);
  m.impl("group_advantages_fixed", &r1core::cuda_kernels::group_advantages_fixed_cuda);
}
