// CPU kernels of group-relative advantages (GRPO, Dr. GRPO, RLOO).
//
// Sums are taken in float64 whatever the reward dtype: a group's mean and unbiased std
// from B <= ~1e6 rewards cost microseconds, and the extra precision makes the result at
// least as accurate as the float32 reference. Ragged groups (dense ids) need a scatter,
// done in one serial pass; every per-sample pass and every fixed-size group runs in
// parallel.
#include "../r1core.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace r1core {
namespace {

constexpr int64_t kSampleGrain = 2048;

// Per-group moments and range, in float64.
struct GroupMoments {
  double count = 0, mean = 0, sq_dev = 0;
  double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
};

// The advantage of one sample from its group's moments (see group_advantages_reference).
inline double advantage(double reward, const GroupMoments& g, AdvantageMode mode, double eps, bool* zero_variance) {
  *zero_variance = g.max == g.min;
  if (mode == AdvantageMode::kNone) return reward;
  if (g.count < 2 || *zero_variance) return 0.0;
  const double centred = reward - g.mean;
  switch (mode) {
    case AdvantageMode::kGRPO:
      return centred / (std::sqrt(g.sq_dev / (g.count - 1)) + eps);
    case AdvantageMode::kDrGRPO:
      return centred;
    case AdvantageMode::kRLOO:  // r_i - mean of the others = n / (n - 1) (r_i - mean)
      return centred * g.count / (g.count - 1);
    default:
      return reward;
  }
}

std::tuple<at::Tensor, at::Tensor> make_outputs(const at::Tensor& rewards) {
  return {at::empty(rewards.sizes(), rewards.options().dtype(compute_dtype(rewards))),
          at::empty(rewards.sizes(), rewards.options().dtype(at::kBool))};
}

std::tuple<at::Tensor, at::Tensor> group_advantages_cpu(const at::Tensor& rewards, const at::Tensor& group_ids,
                                                        c10::string_view mode_name, double eps) {
  TORCH_CHECK(rewards.dim() == 1, "r1core: rewards must be [B], got ", rewards.sizes());
  TORCH_CHECK(group_ids.sizes() == rewards.sizes() && group_ids.scalar_type() == at::kLong,
              "r1core: group_ids must be int64 [B] like rewards, got ", group_ids.scalar_type(), " ",
              group_ids.sizes());
  const AdvantageMode mode = parse_mode(std::string(mode_name));
  auto [adv, zero_variance] = make_outputs(rewards);
  const int64_t num_samples = rewards.size(0);
  if (num_samples == 0) return {adv, zero_variance};
  const at::Tensor r = rewards.to(at::kDouble).contiguous();
  const at::Tensor ids = group_ids.contiguous();
  const double* r_ptr = r.data_ptr<double>();
  const int64_t* id_ptr = ids.data_ptr<int64_t>();
  std::vector<GroupMoments> groups(num_samples);
  // Scatter pass: counts, sums and ranges (serial: a scatter over B samples).
  for (int64_t i = 0; i < num_samples; ++i) {
    const int64_t g = id_ptr[i];
    TORCH_CHECK(g >= 0 && g < num_samples, "r1core: group id ", g, " at index ", i, " is outside [0, ", num_samples,
                "); pass dense ids (see dense_group_index)");
    GroupMoments& m = groups[g];
    m.count += 1;
    m.mean += r_ptr[i];
    m.min = std::min(m.min, r_ptr[i]);
    m.max = std::max(m.max, r_ptr[i]);
  }
  for (GroupMoments& m : groups) m.mean = m.count > 0 ? m.mean / m.count : 0.0;
  for (int64_t i = 0; i < num_samples; ++i) {
    GroupMoments& m = groups[id_ptr[i]];
    const double centred = r_ptr[i] - m.mean;
    m.sq_dev += centred * centred;
  }
  bool* zv_ptr = zero_variance.data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES(adv.scalar_type(), "r1core_group_advantages_cpu", [&] {
    scalar_t* out = adv.data_ptr<scalar_t>();
    at::parallel_for(0, num_samples, kSampleGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        out[i] = static_cast<scalar_t>(advantage(r_ptr[i], groups[id_ptr[i]], mode, eps, zv_ptr + i));
      }
    });
  });
  return {adv, zero_variance};
}

std::tuple<at::Tensor, at::Tensor> group_advantages_fixed_cpu(const at::Tensor& rewards, int64_t group_size,
                                                              c10::string_view mode_name, double eps) {
  TORCH_CHECK(rewards.dim() == 1, "r1core: rewards must be [B], got ", rewards.sizes());
  const int64_t num_samples = rewards.size(0);
  TORCH_CHECK(group_size >= 1 && num_samples % group_size == 0, "r1core: group_size=", group_size,
              " does not divide the batch of ", num_samples, " rewards");
  const AdvantageMode mode = parse_mode(std::string(mode_name));
  auto [adv, zero_variance] = make_outputs(rewards);
  if (num_samples == 0) return {adv, zero_variance};
  const at::Tensor r = rewards.to(at::kDouble).contiguous();
  const double* r_ptr = r.data_ptr<double>();
  bool* zv_ptr = zero_variance.data_ptr<bool>();
  const int64_t num_groups = num_samples / group_size;
  const int64_t grain = std::max<int64_t>(1, kSampleGrain / group_size);
  AT_DISPATCH_FLOATING_TYPES(adv.scalar_type(), "r1core_group_advantages_fixed_cpu", [&] {
    scalar_t* out = adv.data_ptr<scalar_t>();
    at::parallel_for(0, num_groups, grain, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        const double* x = r_ptr + g * group_size;
        GroupMoments m;
        m.count = static_cast<double>(group_size);
        for (int64_t k = 0; k < group_size; ++k) {
          m.mean += x[k];
          m.min = std::min(m.min, x[k]);
          m.max = std::max(m.max, x[k]);
        }
        m.mean /= m.count;
        for (int64_t k = 0; k < group_size; ++k) m.sq_dev += (x[k] - m.mean) * (x[k] - m.mean);
        for (int64_t k = 0; k < group_size; ++k) {
          const int64_t i = g * group_size + k;
          out[i] = static_cast<scalar_t>(advantage(x[k], m, mode, eps, zv_ptr + i));
        }
      }
    });
  });
  return {adv, zero_variance};
}

}  // namespace
}  // namespace r1core

TORCH_LIBRARY_IMPL(r1core, CPU, m) {
  m.impl("group_advantages", &r1core::group_advantages_cpu);
  m.impl("group_advantages_fixed", &r1core::group_advantages_fixed_cpu);
}
