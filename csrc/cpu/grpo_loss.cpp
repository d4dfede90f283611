// CPU kernels of the GRPO loss: per-row statistics (forward) and per-token d/dlogp (backward).
//
// Rows are split across threads with at::parallel_for; inside a row the tokens are
// processed Vectorized<acc_t>::size() at a time (AVX2/AVX-512 where the build enables it)
// with ATen's vectorised exp. The tail of a row is loaded zero-padded: its mask lanes are
// 0, so it adds nothing to any sum. Advantages given as [B] expanded to [B, T] (stride 0
// along T) are read once per row instead of being materialised.
#include "../r1core.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>

namespace r1core {
namespace {

using at::vec::Vectorized;

constexpr int64_t kTokensPerTask = 4096;

// The token inputs of one call, converted to the accumulation dtype and made contiguous.
template <typename acc_t>
struct RowInputs {
  const acc_t* logp;
  const acc_t* old_logp;
  const acc_t* advantages;  // [B] when per_row_advantage, else [B, T]
  const acc_t* mask;
  const acc_t* ref_logp;      // null without a KL term
  const acc_t* rollout_logp;  // null without truncated importance sampling
  bool per_row_advantage;
  int64_t length;
};

struct Prepared {
  at::Tensor logp, old_logp, advantages, mask, ref_logp, rollout_logp;
  bool per_row_advantage;
};

Prepared prepare(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                 const at::Tensor& mask, const std::optional<at::Tensor>& ref_logp,
                 const std::optional<at::Tensor>& rollout_logp, const ClipParams& params) {
  const auto dtype = compute_dtype(logp);
  auto conv = [&](const at::Tensor& t) { return t.to(dtype).contiguous(); };
  Prepared p;
  p.logp = conv(logp);
  p.old_logp = conv(old_logp);
  p.per_row_advantage = advantages.size(1) <= 1 || advantages.stride(1) == 0;
  p.advantages = p.per_row_advantage ? conv(advantages.select(1, 0)) : conv(advantages);
  p.mask = conv(mask);
  if (ref_logp.has_value()) p.ref_logp = conv(*ref_logp);
  if (rollout_logp.has_value() && params.is_cap > 0) p.rollout_logp = conv(*rollout_logp);
  return p;
}

template <typename acc_t>
RowInputs<acc_t> pointers(const Prepared& p) {
  auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<acc_t>() : nullptr; };
  return {ptr(p.logp), ptr(p.old_logp), ptr(p.advantages), ptr(p.mask), ptr(p.ref_logp), ptr(p.rollout_logp),
          p.per_row_advantage, p.logp.size(1)};
}

// Per-token terms of one vector of tokens (see grpo_token_terms in grpo_loss.py).
template <typename acc_t>
struct TokenTerms {
  using Vec = Vectorized<acc_t>;
  Vec ratio, pg, grad_pg, kl, grad_kl;
  Vec clip_low, clip_high, dual;  // 1.0 where the token was clipped that way, else 0.0
};

template <typename acc_t>
TokenTerms<acc_t> token_terms(const RowInputs<acc_t>& in, int64_t row, int64_t j, int64_t count,
                              const ClipParams& params) {
  using Vec = Vectorized<acc_t>;
  const int64_t offset = row * in.length + j;
  auto load = [&](const acc_t* base) { return count == Vec::size() ? Vec::loadu(base + offset) : Vec::loadu(base + offset, count); };
  const Vec zero(0), one(1);
  const Vec logp = load(in.logp), old_logp = load(in.old_logp);
  const Vec adv = in.per_row_advantage ? Vec(in.advantages[row]) : load(in.advantages);
  TokenTerms<acc_t> t;
  t.ratio = (logp - old_logp).exp();
  const Vec neg_adv = zero - adv;
  const Vec lower(acc_t(1) - acc_t(params.clip_low)), upper(acc_t(1) + acc_t(params.clip_high));
  const Vec pg_unclipped = neg_adv * t.ratio;
  const Vec pg_clipped = neg_adv * at::vec::clamp(t.ratio, lower, upper);
  const Vec clipped = pg_clipped > pg_unclipped;  // lane mask
  t.pg = at::vec::maximum(pg_unclipped, pg_clipped);
  // Where the clipped branch wins the ratio lies outside the range: no gradient.
  t.grad_pg = Vec::blendv(pg_unclipped, zero, clipped);
  t.clip_low = clipped & (t.ratio < lower) & one;
  t.clip_high = clipped & (t.ratio > upper) & one;
  t.dual = zero;
  if (params.dual_clip > 0) {
    const Vec bound = neg_adv * Vec(acc_t(params.dual_clip));
    const Vec dual = (adv < zero) & (bound < t.pg);
    t.pg = Vec::blendv(t.pg, bound, dual);
    t.grad_pg = Vec::blendv(t.grad_pg, zero, dual);
    t.dual = dual & one;
  }
  if (in.rollout_logp != nullptr) {
    const Vec weight = at::vec::minimum((old_logp - load(in.rollout_logp)).exp(), Vec(acc_t(params.is_cap)));
    t.pg = t.pg * weight;
    t.grad_pg = t.grad_pg * weight;
  }
  if (in.ref_logp == nullptr) {
    t.kl = zero;
    t.grad_kl = zero;
  } else {
    const Vec diff = logp - load(in.ref_logp);
    if (params.kl_estimator == 0) {
      t.kl = diff;
      t.grad_kl = one;
    } else if (params.kl_estimator == 1) {
      t.kl = Vec(acc_t(0.5)) * diff * diff;
      t.grad_kl = diff;
    } else {
      const Vec e = (zero - diff).exp();
      t.kl = e + diff - one;
      t.grad_kl = one - e;
    }
  }
  return t;
}

template <typename acc_t>
acc_t lane_sum(const Vectorized<acc_t>& v) {
  __at_align__ acc_t lanes[Vectorized<acc_t>::size()];
  v.store(lanes);
  acc_t total = 0;
  for (int64_t i = 0; i < Vectorized<acc_t>::size(); ++i) total += lanes[i];
  return total;
}

template <typename acc_t>
acc_t lane_max(const Vectorized<acc_t>& v) {
  __at_align__ acc_t lanes[Vectorized<acc_t>::size()];
  v.store(lanes);
  return *std::max_element(lanes, lanes + Vectorized<acc_t>::size());
}

void check_params(const ClipParams& params) {
  TORCH_CHECK(params.kl_estimator >= 0 && params.kl_estimator <= 2,
              "r1core: kl_estimator must be 0 (k1), 1 (k2) or 2 (k3), got ", params.kl_estimator);
}

at::Tensor grpo_row_stats_cpu(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                              const at::Tensor& mask, const std::optional<at::Tensor>& ref_logp,
                              const std::optional<at::Tensor>& rollout_logp, double clip_low, double clip_high,
                              double dual_clip, int64_t kl_estimator, double is_cap) {
  check_row_inputs(logp, old_logp, advantages, mask, ref_logp, rollout_logp);
  const ClipParams params{clip_low, clip_high, dual_clip, kl_estimator, is_cap};
  check_params(params);
  const auto dtype = compute_dtype(logp);
  const int64_t batch = logp.size(0), length = logp.size(1);
  // Zeros are the right statistics of empty rows (no tokens, ratio_max 0).
  at::Tensor stats = at::zeros({batch, kNumRowStats}, logp.options().dtype(dtype));
  if (batch == 0 || length == 0) return stats;
  const Prepared prepared = prepare(logp, old_logp, advantages, mask, ref_logp, rollout_logp, params);
  AT_DISPATCH_FLOATING_TYPES(dtype, "r1core_grpo_row_stats_cpu", [&] {
    using acc_t = scalar_t;
    using Vec = Vectorized<acc_t>;
    const RowInputs<acc_t> in = pointers<acc_t>(prepared);
    acc_t* out = stats.data_ptr<acc_t>();
    const int64_t grain = std::max<int64_t>(1, kTokensPerTask / std::max<int64_t>(length, 1));
    at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        Vec pg(0), kl(0), tokens(0), low(0), high(0), dual(0), ratio_sum(0), ratio_max(0);
        for (int64_t j = 0; j < length; j += Vec::size()) {
          const int64_t count = std::min<int64_t>(Vec::size(), length - j);
          const Vec m = count == Vec::size() ? Vec::loadu(in.mask + b * length + j)
                                             : Vec::loadu(in.mask + b * length + j, count);
          const TokenTerms<acc_t> t = token_terms(in, b, j, count, params);
          pg = at::vec::fmadd(t.pg, m, pg);
          kl = at::vec::fmadd(t.kl, m, kl);
          tokens = tokens + m;
          low = at::vec::fmadd(t.clip_low, m, low);
          high = at::vec::fmadd(t.clip_high, m, high);
          dual = at::vec::fmadd(t.dual, m, dual);
          ratio_sum = at::vec::fmadd(t.ratio, m, ratio_sum);
          ratio_max = at::vec::maximum(ratio_max, Vec::blendv(Vec(0), t.ratio, m > Vec(0)));
        }
        acc_t* row = out + b * kNumRowStats;
        row[0] = lane_sum(pg);
        row[1] = lane_sum(kl);
        row[2] = lane_sum(tokens);
        row[3] = lane_sum(low);
        row[4] = lane_sum(high);
        row[5] = lane_sum(dual);
        row[6] = lane_sum(ratio_sum);
        row[7] = lane_max(ratio_max);
      }
    });
  });
  return stats;
}

at::Tensor grpo_row_backward_cpu(const at::Tensor& grad_pg_rows, const at::Tensor& grad_kl_rows,
                                 const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                                 const at::Tensor& mask, const std::optional<at::Tensor>& ref_logp,
                                 const std::optional<at::Tensor>& rollout_logp, double clip_low, double clip_high,
                                 double dual_clip, int64_t kl_estimator, double is_cap) {
  check_row_inputs(logp, old_logp, advantages, mask, ref_logp, rollout_logp);
  const ClipParams params{clip_low, clip_high, dual_clip, kl_estimator, is_cap};
  check_params(params);
  const int64_t batch = logp.size(0), length = logp.size(1);
  TORCH_CHECK(grad_pg_rows.numel() == batch && grad_kl_rows.numel() == batch,
              "r1core: grad_pg_rows and grad_kl_rows must be [B]=", batch);
  const auto dtype = compute_dtype(logp);
  at::Tensor grad = at::empty({batch, length}, logp.options().dtype(dtype));
  if (grad.numel() == 0) return grad;
  const Prepared prepared = prepare(logp, old_logp, advantages, mask, ref_logp, rollout_logp, params);
  const at::Tensor gpg = grad_pg_rows.to(dtype).contiguous(), gkl = grad_kl_rows.to(dtype).contiguous();
  AT_DISPATCH_FLOATING_TYPES(dtype, "r1core_grpo_row_backward_cpu", [&] {
    using acc_t = scalar_t;
    using Vec = Vectorized<acc_t>;
    const RowInputs<acc_t> in = pointers<acc_t>(prepared);
    const acc_t* gpg_ptr = gpg.data_ptr<acc_t>();
    const acc_t* gkl_ptr = gkl.data_ptr<acc_t>();
    acc_t* out = grad.data_ptr<acc_t>();
    const int64_t grain = std::max<int64_t>(1, kTokensPerTask / length);
    at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const Vec row_pg(gpg_ptr[b]), row_kl(gkl_ptr[b]);
        for (int64_t j = 0; j < length; j += Vec::size()) {
          const int64_t count = std::min<int64_t>(Vec::size(), length - j);
          const int64_t offset = b * length + j;
          const Vec m = count == Vec::size() ? Vec::loadu(in.mask + offset) : Vec::loadu(in.mask + offset, count);
          const TokenTerms<acc_t> t = token_terms(in, b, j, count, params);
          const Vec g = at::vec::fmadd(row_pg, t.grad_pg, row_kl * t.grad_kl) * m;
          g.store(out + offset, count);
        }
      }
    });
  });
  return grad;
}

}  // namespace
}  // namespace r1core

TORCH_LIBRARY_IMPL(r1core, CPU, m) {
  m.impl("grpo_row_stats", &r1core::grpo_row_stats_cpu);
  m.impl("grpo_row_backward", &r1core::grpo_row_backward_cpu);
}
