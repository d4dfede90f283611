// The allocation plan of the CUDA log-prob backward (cuda/fused_logprobs.cu), kept in a
// host-only header so that the CPU build can report it too (r1core._C.logprobs_backward_plan)
// and a test can compute the backward's peak extra memory at any shape without a GPU.
//
// Beyond its inputs and the two gradients it returns, the backward holds:
//   accumulator  fp32 [N, H]   grad_hidden summed over the vocabulary chunks (16-bit inputs;
//                              for fp32/fp64 inputs the returned gradient is the accumulator)
//   grad_logits  e * N * C     dL/dlogits of one vocabulary chunk of C columns, input dtype
//   temporary    fp32 [R, H]   only where cuBLAS cannot add a 16-bit product into an fp32
//                              output in place (addmm with out_dtype): the product of R rows
// The chunk width C keeps grad_logits within a budget (128 MiB by default): at N=16384,
// H=4096, V=151936, bf16 that is 256 + 128 (+ 32) MiB, within the 512 MiB target. The
// weight gradient is written chunk by chunk by one GEMM each and needs no zero fill.
#pragma once

#include <algorithm>
#include <cstdint>

namespace r1core {

// Vocabulary columns of one logit tile of the CUDA gradient kernel per input width:
// TileShape<T>::V in cuda/logit_tile.cuh, where static_asserts keep the two in step.
constexpr int64_t kTileColumns16Bit = 128;
constexpr int64_t kTileColumnsFloat = 64;
constexpr int64_t kTileColumnsDouble = 64;

inline int64_t tile_columns_for(int64_t element_size) {
  return element_size == 2 ? kTileColumns16Bit : element_size == 4 ? kTileColumnsFloat : kTileColumnsDouble;
}

constexpr int64_t kBackwardChunkBudgetBytes = int64_t{128} << 20;
constexpr int64_t kBackwardTemporaryBudgetBytes = int64_t{32} << 20;

struct LogprobsBackwardPlan {
  int64_t chunk_columns = 0;      // vocabulary columns per chunk (whole logit tiles)
  int64_t num_chunks = 0;
  int64_t grad_logits_bytes = 0;  // the dL/dlogits buffer, reused by every chunk
  int64_t accumulator_bytes = 0;  // fp32 grad_hidden beside the returned gradient
  int64_t temporary_rows = 0;     // rows per GEMM on the path with a temporary
  int64_t temporary_bytes = 0;    // its fp32 product

  // Peak bytes above inputs and returned gradients; `in_place` when cuBLAS accumulates
  // into the fp32 output directly (no temporary).
  int64_t peak_extra_bytes(bool in_place) const {
    return accumulator_bytes + grad_logits_bytes + (in_place ? 0 : temporary_bytes);
  }
};

// element_size: bytes of the input dtype; tile_columns: vocabulary columns of one logit tile
// of the gradient kernel; accumulates_in_output: fp32/fp64 inputs (no separate accumulator).
inline LogprobsBackwardPlan plan_logprobs_backward(int64_t num_tokens, int64_t vocab, int64_t hidden_size,
                                                   int64_t element_size, int64_t tile_columns,
                                                   bool accumulates_in_output,
                                                   int64_t budget_bytes = kBackwardChunkBudgetBytes) {
  LogprobsBackwardPlan plan;
  if (num_tokens <= 0 || vocab <= 0) return plan;
  const int64_t columns = budget_bytes / std::max<int64_t>(1, num_tokens * element_size);
  int64_t chunk = std::max<int64_t>(tile_columns, columns / tile_columns * tile_columns);
  chunk = std::min(chunk, vocab);
  plan.chunk_columns = chunk;
  plan.num_chunks = (vocab + chunk - 1) / chunk;
  plan.grad_logits_bytes = num_tokens * chunk * element_size;
  plan.accumulator_bytes = accumulates_in_output ? 0 : num_tokens * hidden_size * int64_t{4};
  if (!accumulates_in_output) {
    const int64_t rows = kBackwardTemporaryBudgetBytes / std::max<int64_t>(1, hidden_size * int64_t{4});
    plan.temporary_rows = std::max<int64_t>(1, std::min(rows, num_tokens));
    plan.temporary_bytes = plan.temporary_rows * hidden_size * int64_t{4};
  }
  return plan;
}

}  // namespace r1core
