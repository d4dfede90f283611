// CPU kernels of the fused log-prob op: statistics (forward) and gradients (backward).
//
// Never materialises [N, V]. The vocabulary is streamed in chunks of kVocabChunk rows of the
// weight; each chunk meets the tokens in blocks of kTokenBlock, so one logit tile
// (kTokenBlock x kVocabChunk fp32 = 1 MiB) is produced by an MKL/oneDNN GEMM and consumed
// by a vectorised epilogue while it is still in cache:
//   forward : online max / sum-exp / sum-exp*z / target logit per token;
//   backward: the tile is overwritten with dL/dz and fed to two more GEMMs
//             (grad_hidden += G W_chunk, grad_weight_chunk += G^T H).
// The GEMMs use all threads; the epilogues split the tile's rows with at::parallel_for.
#include "../r1core.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace r1core {
namespace {

using at::vec::Vectorized;

constexpr int64_t kTokenBlock = 256;
constexpr int64_t kVocabChunk = 1024;
constexpr int64_t kRowGrain = 8;  // rows of a tile per parallel task

template <typename acc_t>
acc_t lane_max(const Vectorized<acc_t>& v) {
  __at_align__ acc_t lanes[Vectorized<acc_t>::size()];
  v.store(lanes);
  acc_t best = lanes[0];
  for (int64_t i = 1; i < Vectorized<acc_t>::size(); ++i) best = std::max(best, lanes[i]);
  return best;
}

template <typename acc_t>
acc_t lane_sum(const Vectorized<acc_t>& v) {
  __at_align__ acc_t lanes[Vectorized<acc_t>::size()];
  v.store(lanes);
  acc_t total = 0;
  for (int64_t i = 0; i < Vectorized<acc_t>::size(); ++i) total += lanes[i];
  return total;
}

// The hidden states with the temperature folded in (N*H multiplies instead of N*V), in the
// accumulation dtype. Shares storage with `hidden` when nothing needs converting.
at::Tensor scaled_hidden(const at::Tensor& hidden, double inv_temperature) {
  auto dtype = compute_dtype(hidden);
  if (inv_temperature == 1.0) return hidden.to(dtype).contiguous();
  return hidden.to(dtype).mul(inv_temperature).contiguous();
}

// One token's online update over one logit row z[0, width).
template <typename acc_t>
void stats_row(const acc_t* z, int64_t width, int64_t label_local, bool need_entropy, acc_t* running_max,
               acc_t* sum_exp, acc_t* sum_exp_z, acc_t* target) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t kLanes = Vec::size();
  const int64_t body = width - width % kLanes;
  Vec vmax(-std::numeric_limits<acc_t>::infinity());
  for (int64_t j = 0; j < body; j += kLanes) vmax = at::vec::maximum(vmax, Vec::loadu(z + j));
  acc_t chunk_max = lane_max(vmax);
  for (int64_t j = body; j < width; ++j) chunk_max = std::max(chunk_max, z[j]);
  const acc_t new_max = std::max(*running_max, chunk_max);
  const acc_t rescale = std::exp(*running_max - new_max);  // exp(-inf) = 0 on the first chunk
  const Vec shift(new_max);
  Vec vsum(0), vsum_z(0);
  if (need_entropy) {
    for (int64_t j = 0; j < body; j += kLanes) {
      Vec zj = Vec::loadu(z + j);
      Vec e = (zj - shift).exp();
      vsum = vsum + e;
      vsum_z = at::vec::fmadd(e, zj, vsum_z);
    }
  } else {
    for (int64_t j = 0; j < body; j += kLanes) vsum = vsum + (Vec::loadu(z + j) - shift).exp();
  }
  acc_t s = lane_sum(vsum), t = lane_sum(vsum_z);
  for (int64_t j = body; j < width; ++j) {
    acc_t e = std::exp(z[j] - new_max);
    s += e;
    t += e * z[j];
  }
  *sum_exp = *sum_exp * rescale + s;
  if (need_entropy) *sum_exp_z = *sum_exp_z * rescale + t;
  *running_max = new_max;
  if (label_local >= 0 && label_local < width) *target = z[label_local];
}

// One token's dL/dz over one logit row, written over z in place:
//   g_j = -g_logp p_j - g_ent p_j (z_j - lse + ent) (+ g_logp at the label),  p_j = exp(z_j - lse)
template <typename acc_t>
void grad_row(acc_t* z, int64_t width, int64_t label_local, acc_t lse, acc_t entropy, acc_t grad_logp,
              acc_t grad_entropy, bool has_entropy) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t kLanes = Vec::size();
  const int64_t body = width - width % kLanes;
  const Vec vlse(lse), vneg_gl(-grad_logp);
  if (has_entropy) {
    // -g_ent p (z - lse + ent) - g_logp p = p * (-(g_ent) (z - (lse - ent)) - g_logp)
    const Vec vneg_ge(-grad_entropy), vshift(lse - entropy);
    for (int64_t j = 0; j < body; j += kLanes) {
      Vec zj = Vec::loadu(z + j);
      Vec p = (zj - vlse).exp();
      (p * at::vec::fmadd(vneg_ge, zj - vshift, vneg_gl)).store(z + j);
    }
    for (int64_t j = body; j < width; ++j) {
      acc_t p = std::exp(z[j] - lse);
      z[j] = p * (-grad_entropy * (z[j] - (lse - entropy)) - grad_logp);
    }
  } else {
    for (int64_t j = 0; j < body; j += kLanes) ((Vec::loadu(z + j) - vlse).exp() * vneg_gl).store(z + j);
    for (int64_t j = body; j < width; ++j) z[j] = -grad_logp * std::exp(z[j] - lse);
  }
  if (label_local >= 0 && label_local < width) z[label_local] += grad_logp;
}

// A contiguous [rows, cols] view at the start of a flat scratch buffer.
at::Tensor tile(const at::Tensor& scratch, int64_t rows, int64_t cols) {
  return scratch.narrow(0, 0, rows * cols).view({rows, cols});
}

at::Tensor logprobs_stats_cpu(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                              double inv_temperature, bool need_entropy) {
  check_logprobs_inputs(hidden, weight, labels);
  const auto dtype = compute_dtype(hidden);
  const int64_t num_tokens = hidden.size(0), vocab = weight.size(0);
  at::Tensor stats = at::zeros({kNumStats, num_tokens}, hidden.options().dtype(dtype));
  stats[0].fill_(-std::numeric_limits<double>::infinity());
  if (num_tokens == 0 || vocab == 0) return stats;
  const at::Tensor h = scaled_hidden(hidden, inv_temperature);
  const at::Tensor label = labels.contiguous();
  const int64_t token_block = std::min(kTokenBlock, num_tokens), vocab_chunk = std::min(kVocabChunk, vocab);
  at::Tensor scratch = at::empty({token_block * vocab_chunk}, h.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "r1core_logprobs_stats_cpu", [&] {
    using acc_t = scalar_t;
    acc_t* out = stats.data_ptr<acc_t>();
    const int64_t* label_ptr = label.data_ptr<int64_t>();
    for (int64_t v0 = 0; v0 < vocab; v0 += vocab_chunk) {
      const int64_t width = std::min(vocab_chunk, vocab - v0);
      const at::Tensor w = weight.narrow(0, v0, width).to(dtype);
      for (int64_t n0 = 0; n0 < num_tokens; n0 += token_block) {
        const int64_t rows = std::min(token_block, num_tokens - n0);
        at::Tensor z = tile(scratch, rows, width);
        at::mm_out(z, h.narrow(0, n0, rows), w.t());
        const acc_t* z_ptr = z.data_ptr<acc_t>();
        at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t i = n0 + r;
            stats_row<acc_t>(z_ptr + r * width, width, label_ptr[i] - v0, need_entropy, out + i,
                             out + num_tokens + i, out + 2 * num_tokens + i, out + 3 * num_tokens + i);
          }
        });
      }
    }
  });
  return stats;
}

std::tuple<at::Tensor, at::Tensor> logprobs_backward_cpu(const at::Tensor& hidden, const at::Tensor& weight,
                                                         const at::Tensor& labels, const at::Tensor& lse,
                                                         const at::Tensor& entropy, const at::Tensor& grad_logp,
                                                         const at::Tensor& grad_entropy, double inv_temperature) {
  check_logprobs_inputs(hidden, weight, labels);
  const auto dtype = compute_dtype(hidden);
  const int64_t num_tokens = hidden.size(0), vocab = weight.size(0), hidden_size = hidden.size(1);
  const bool has_entropy = grad_entropy.numel() > 0;
  TORCH_CHECK(lse.numel() == num_tokens && grad_logp.numel() == num_tokens,
              "r1core: lse and grad_logp must be [N]=", num_tokens);
  TORCH_CHECK(!has_entropy || (entropy.numel() == num_tokens && grad_entropy.numel() == num_tokens),
              "r1core: entropy and grad_entropy must be [N]=", num_tokens, " or grad_entropy empty");
  at::Tensor grad_weight = at::empty(weight.sizes(), weight.options());
  at::Tensor grad_hidden_acc = at::zeros({num_tokens, hidden_size}, hidden.options().dtype(dtype));
  if (num_tokens == 0 || vocab == 0) {
    grad_weight.zero_();
    return {grad_hidden_acc.to(hidden.scalar_type()), grad_weight};
  }
  const at::Tensor h = scaled_hidden(hidden, inv_temperature);
  const at::Tensor label = labels.contiguous();
  const at::Tensor lse_c = lse.to(dtype).contiguous(), grad_logp_c = grad_logp.to(dtype).contiguous();
  const at::Tensor entropy_c = has_entropy ? entropy.to(dtype).contiguous() : lse_c;
  const at::Tensor grad_entropy_c = has_entropy ? grad_entropy.to(dtype).contiguous() : lse_c;
  const int64_t token_block = std::min(kTokenBlock, num_tokens), vocab_chunk = std::min(kVocabChunk, vocab);
  at::Tensor scratch = at::empty({token_block * vocab_chunk}, h.options());
  at::Tensor weight_grad_scratch = at::empty({vocab_chunk * hidden_size}, h.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "r1core_logprobs_backward_cpu", [&] {
    using acc_t = scalar_t;
    const int64_t* label_ptr = label.data_ptr<int64_t>();
    const acc_t* lse_ptr = lse_c.data_ptr<acc_t>();
    const acc_t* entropy_ptr = entropy_c.data_ptr<acc_t>();
    const acc_t* grad_logp_ptr = grad_logp_c.data_ptr<acc_t>();
    const acc_t* grad_entropy_ptr = grad_entropy_c.data_ptr<acc_t>();
    for (int64_t v0 = 0; v0 < vocab; v0 += vocab_chunk) {
      const int64_t width = std::min(vocab_chunk, vocab - v0);
      const at::Tensor w = weight.narrow(0, v0, width).to(dtype);
      at::Tensor grad_w = tile(weight_grad_scratch, width, hidden_size);
      for (int64_t n0 = 0; n0 < num_tokens; n0 += token_block) {
        const int64_t rows = std::min(token_block, num_tokens - n0);
        const at::Tensor h_block = h.narrow(0, n0, rows);
        at::Tensor g = tile(scratch, rows, width);
        at::mm_out(g, h_block, w.t());
        acc_t* g_ptr = g.data_ptr<acc_t>();
        at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t i = n0 + r;
            grad_row<acc_t>(g_ptr + r * width, width, label_ptr[i] - v0, lse_ptr[i],
                            has_entropy ? entropy_ptr[i] : acc_t(0), grad_logp_ptr[i],
                            has_entropy ? grad_entropy_ptr[i] : acc_t(0), has_entropy);
          }
        });
        // dL/dh = inv_t * G W (inv_t applied once at the end); dL/dW = inv_t * G^T h = G^T h_scaled.
        at::Tensor grad_h_block = grad_hidden_acc.narrow(0, n0, rows);
        grad_h_block.addmm_(g, w);
        if (n0 == 0) {
          at::mm_out(grad_w, g.t(), h_block);
        } else {
          grad_w.addmm_(g.t(), h_block);
        }
      }
      grad_weight.narrow(0, v0, width).copy_(grad_w);
    }
  });
  if (inv_temperature != 1.0) grad_hidden_acc.mul_(inv_temperature);
  return {grad_hidden_acc.to(hidden.scalar_type()), grad_weight};
}

}  // namespace
}  // namespace r1core

TORCH_LIBRARY_IMPL(r1core, CPU, m) {
  m.impl("logprobs_stats", &r1core::logprobs_stats_cpu);
  m.impl("logprobs_backward", &r1core::logprobs_backward_cpu);
}
