// Declarations shared by the CPU and CUDA implementations of r1core's operators.
//
// The operator schemas live in r1core.cpp (TORCH_LIBRARY(r1core, m)); each device file
// registers its kernels with TORCH_LIBRARY_IMPL(r1core, <key>, m). The Python side
// (r1core/ops/_cpp.py) wraps torch.ops.r1core.* as the "cpp" and "cuda" backends; the
// reference functions in r1core/ops/{logprobs,grpo_loss,advantages}.py specify every op.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>

namespace r1core {

// Rows of the log-prob statistics tensor [4, N].
constexpr int64_t kNumStats = 4;
// Columns of the GRPO row statistics [B, 8] (see ROW_STATS in grpo_loss.py).
constexpr int64_t kNumRowStats = 8;

// Statistics and gradients are accumulated in float32, or float64 for float64 input (the
// reference does the same, so the float64 path can be checked to ~1e-12).
inline at::ScalarType compute_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Scalars of the per-token GRPO loss (ClipParams in grpo_loss.py).
struct ClipParams {
  double clip_low;
  double clip_high;
  double dual_clip;     // 0 = off
  int64_t kl_estimator; // 0 k1, 1 k2, 2 k3
  double is_cap;        // 0 = off
};

enum class AdvantageMode { kGRPO = 0, kDrGRPO = 1, kRLOO = 2, kNone = 3 };

inline AdvantageMode parse_mode(const std::string& mode) {
  if (mode == "grpo") return AdvantageMode::kGRPO;
  if (mode == "drgrpo") return AdvantageMode::kDrGRPO;
  if (mode == "rloo") return AdvantageMode::kRLOO;
  if (mode == "none") return AdvantageMode::kNone;
  TORCH_CHECK(false, "r1core: unknown advantage mode '", mode, "'; valid: grpo, drgrpo, rloo, none");
}

// Argument checks shared by the devices: shapes, dtypes, devices. They raise the same
// ValueError-like RuntimeErrors on every backend.
void check_logprobs_inputs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels);
void check_row_inputs(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                      const at::Tensor& mask, const std::optional<at::Tensor>& ref_logp,
                      const std::optional<at::Tensor>& rollout_logp);

}  // namespace r1core
