// Operator schemas of the r1core namespace, and the argument checks every device shares.
//
// One TORCH_LIBRARY owns the namespace. The Triton backend registers its own ops in the
// same namespace from Python with torch.library fragments (names ending in `_triton`), so
// Python code must only ever add FRAGMENTs to `r1core`, never a second DEF library.
// Shapes, dtypes and argument order are those of the reference primitives in r1core/ops/.
#include "r1core.h"

#include <torch/library.h>

namespace r1core {

void check_logprobs_inputs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2, "r1core: hidden must be [N, H] and weight [V, H], got ",
              hidden.sizes(), " and ", weight.sizes());
  TORCH_CHECK(hidden.size(1) == weight.size(1), "r1core: hidden size mismatch: hidden has H=", hidden.size(1),
              ", weight has H=", weight.size(1));
  TORCH_CHECK(hidden.scalar_type() == weight.scalar_type(), "r1core: hidden (", hidden.scalar_type(),
              ") and weight (", weight.scalar_type(), ") must share a dtype");
  TORCH_CHECK(at::isFloatingType(hidden.scalar_type()), "r1core: hidden must be floating point, got ",
              hidden.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == hidden.size(0), "r1core: labels must be [N]=", hidden.size(0),
              ", got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, "r1core: labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK(hidden.device() == weight.device() && labels.device() == hidden.device(),
              "r1core: hidden, weight and labels must be on the same device");
}

void check_row_inputs(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                      const at::Tensor& mask, const std::optional<at::Tensor>& ref_logp,
                      const std::optional<at::Tensor>& rollout_logp) {
  TORCH_CHECK(logp.dim() == 2, "r1core: logp must be [B, T], got ", logp.sizes());
  TORCH_CHECK(at::isFloatingType(logp.scalar_type()), "r1core: logp must be floating point, got ",
              logp.scalar_type());
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.sizes() == logp.sizes(), "r1core: ", name, " must have logp's shape ", logp.sizes(), ", got ",
                t.sizes());
    TORCH_CHECK(t.device() == logp.device(), "r1core: ", name, " is on ", t.device(), ", logp on ", logp.device());
  };
  same(old_logp, "old_logp");
  same(advantages, "advantages");
  same(mask, "mask");
  if (ref_logp.has_value()) same(*ref_logp, "ref_logp");
  if (rollout_logp.has_value()) same(*rollout_logp, "rollout_logp");
}

}  // namespace r1core

TORCH_LIBRARY(r1core, m) {
  m.def(
      "logprobs_stats(Tensor hidden, Tensor weight, Tensor labels, float inv_temperature, bool need_entropy)"
      " -> Tensor");
  m.def(
      "logprobs_backward(Tensor hidden, Tensor weight, Tensor labels, Tensor lse, Tensor entropy,"
      " Tensor grad_logp, Tensor grad_entropy, float inv_temperature) -> (Tensor, Tensor)");
  m.def(
      "grpo_row_stats(Tensor logp, Tensor old_logp, Tensor advantages, Tensor mask, Tensor? ref_logp,"
      " Tensor? rollout_logp, float clip_low, float clip_high, float dual_clip, int kl_estimator,"
      " float is_cap) -> Tensor");
  m.def(
      "grpo_row_backward(Tensor grad_pg_rows, Tensor grad_kl_rows, Tensor logp, Tensor old_logp,"
      " Tensor advantages, Tensor mask, Tensor? ref_logp, Tensor? rollout_logp, float clip_low,"
      " float clip_high, float dual_clip, int kl_estimator, float is_cap) -> Tensor");
  m.def("group_advantages(Tensor rewards, Tensor group_ids, str mode, float eps) -> (Tensor, Tensor)");
  m.def("group_advantages_fixed(Tensor rewards, int group_size, str mode, float eps) -> (Tensor, Tensor)");
}
