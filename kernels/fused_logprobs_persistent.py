"""Triton kernels of the fused log-prob op, second design: persistent programs over flattened
(work item, vocabulary tile, K step) loops, tensor descriptors, base-2 softmax, and the
target logit taken once per row. Selected with ``backend="triton-persistent"``; the default
``triton`` backend (``fused_logprobs.py`` beside this file) stays the default until a GPU
measurement shows this one faster (``make bench-gpu`` times both side by side).

What changes against the first design, and why:

* Persistent programs: the grid is a fixed number of programs (a few per SM) that walk the
  work items ``(token block, vocabulary split)`` in L2-grouped order. There is no tail wave
  of half-empty blocks, and one launch covers any N.
* Flattened loop: each program runs ONE loop over (work item, tile, K step) and does a
  tile's softmax epilogue on the iteration that finishes its last K step. Triton's software
  pipeliner then issues the next tile's loads (and, on Hopper, its asynchronous wgmma)
  while the epilogue of the previous tile runs, instead of draining at every tile boundary.
* Tensor descriptors (``tl.make_tensor_descriptor``, TMA on Hopper) for the hidden and
  weight tiles when the rows are 16-byte aligned; out-of-range rows and columns read as 0,
  so no masks are computed per load. Other strides fall back to pointer loads.
* exp2 with the scale folded in: ``z2 = acc * (log2(e) / T)``; the statistics are kept in
  base-2 units and converted once at the store (one multiply per logit saved, and exp2 is
  the hardware instruction).
* The target logit ``z[label]`` is not picked out of every tile (a compare, select and row
  sum per logit): one small gather kernel computes ``h . w[label] / T`` per row, and the
  backward adds ``g_logp / T`` at the label column with one scatter per vocabulary chunk.

The backward keeps the first design's structure (per vocabulary chunk: recompute the
logits, write dL/dlogits, then cuBLAS ``dlogits^T @ hidden`` for the chunk's weight gradient
and ``dlogits @ W_chunk`` into an fp32 ``grad_hidden``): three GEMM-equivalents, the forward
a fourth. The three-GEMM forward+backward of Liger and QuACK needs the loss gradient during
the forward and an fp32 ``[V, H]`` weight-gradient accumulator (2.4 GiB at V=151936,
H=4096), over the 512 MiB budget for 16-bit weights; it is not implemented here.

Contracts are those of ``r1core.ops.fused_logprobs``'s reference primitives.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from r1core.kernels.fused_logprobs import (
    STATS_ROWS,
    _accumulate_matmul,
    _configs,
    _input_precision,
    _interpreting,
    check_dtype,
    choose_vocab_chunk,
    merge_partial_stats,
)

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
# The same, as compile-time constants the kernels can read.
LOG2E_C = tl.constexpr(LOG2E)
LN2_C = tl.constexpr(LN2)
STATS_ROWS_C = tl.constexpr(STATS_ROWS)

# (BLOCK_N, BLOCK_V, BLOCK_K, GROUP_N, num_warps, num_stages)
_PERSISTENT_CONFIGS = [
    (128, 256, 64, 8, 8, 3),
    (128, 128, 64, 8, 8, 4),
    (64, 256, 64, 8, 8, 4),
]


@triton.jit
def _load_tile(ptr, desc, row0, k0, n_rows, n_k, stride_row, stride_k,
               BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, USE_TMA: tl.constexpr, UPCAST: tl.constexpr):
    """A ``[BLOCK_R, BLOCK_K]`` tile at (row0, k0), zeros outside ``[n_rows, n_k]``."""
    if USE_TMA:
        tile = desc.load([row0, k0])
    else:
        rows = row0 + tl.arange(0, BLOCK_R)
        ks = k0 + tl.arange(0, BLOCK_K)
        tile = tl.load(ptr + rows.to(tl.int64)[:, None] * stride_row + ks[None, :] * stride_k,
                       mask=(rows < n_rows)[:, None] & (ks < n_k)[None, :], other=0.0)
    if UPCAST:  # the interpreter's dot mishandles bfloat16 operands
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _stats_persistent_kernel(
    hidden_ptr, weight_ptr, partial_ptr,
    N, H, V, num_splits, tiles_per_split, num_programs,
    stride_hn, stride_hk, stride_wv, stride_wk,
    scale2,
    NEED_ENTROPY: tl.constexpr, USE_TMA: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_N: tl.constexpr,
):
    """Writes per-split ``[max, sum exp(z - max), sum exp(z - max) z]`` (natural units) of
    ``z = hidden @ weight.T / T``; ``scale2 = log2(e) / T``. The target row is the caller's."""
    pid = tl.program_id(0)
    if USE_TMA:
        h_desc = tl.make_tensor_descriptor(hidden_ptr, shape=[N, H], strides=[stride_hn, 1], block_shape=[BLOCK_N, BLOCK_K])
        w_desc = tl.make_tensor_descriptor(weight_ptr, shape=[V, H], strides=[stride_wv, 1], block_shape=[BLOCK_V, BLOCK_K])
    else:
        h_desc = hidden_ptr
        w_desc = weight_ptr
    num_token_blocks = tl.cdiv(N, BLOCK_N)
    num_work = num_token_blocks * num_splits
    num_tiles = tl.cdiv(V, BLOCK_V)
    k_steps = tl.cdiv(H, BLOCK_K)
    my_items = tl.cdiv(num_work - pid, num_programs)
    steps_per_item = tiles_per_split * k_steps
    acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
    run_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
    sum_exp = tl.zeros([BLOCK_N], tl.float32)
    sum_exp_z = tl.zeros([BLOCK_N], tl.float32)
    for it in range(0, my_items * steps_per_item):
        item = it // steps_per_item
        step = it % steps_per_item
        tile_in_split = step // k_steps
        k = step % k_steps
        # Work item -> (token block, split), grouped: GROUP_N token blocks x every split.
        work = pid + item * num_programs
        group_size = GROUP_N * num_splits
        first_block = (work // group_size) * GROUP_N
        blocks_in_group = tl.minimum(num_token_blocks - first_block, GROUP_N)
        pid_n = first_block + (work % group_size) % blocks_in_group
        split = (work % group_size) // blocks_in_group
        tile = split * tiles_per_split + tile_in_split
        h = _load_tile(hidden_ptr, h_desc, pid_n * BLOCK_N, k * BLOCK_K, N, H, stride_hn, stride_hk,
                       BLOCK_N, BLOCK_K, USE_TMA, UPCAST)
        w = _load_tile(weight_ptr, w_desc, tile * BLOCK_V, k * BLOCK_K, V, H, stride_wv, stride_wk,
                       BLOCK_V, BLOCK_K, USE_TMA, UPCAST)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=INPUT_PRECISION)
        if k == k_steps - 1:
            # Epilogue of one tile, base 2. Tiles past the vocabulary (in the last split) are
            # all -inf and change nothing; every split's first tile is a real one, so the
            # running max is finite from then on.
            cols = tile * BLOCK_V + tl.arange(0, BLOCK_V)
            col_mask = (cols < V) & (tile < num_tiles)
            z2 = tl.where(col_mask[None, :], acc * scale2, float("-inf"))
            new_max = tl.maximum(run_max, tl.max(z2, axis=1))
            rescale = tl.exp2(run_max - new_max)
            e = tl.exp2(z2 - new_max[:, None])
            sum_exp = sum_exp * rescale + tl.sum(e, axis=1)
            if NEED_ENTROPY:
                sum_exp_z = sum_exp_z * rescale + tl.sum(e * tl.where(col_mask[None, :], z2, 0.0), axis=1)
            run_max = new_max
            acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
            if tile_in_split == tiles_per_split - 1:
                rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
                row_mask = rows < N
                out = partial_ptr + split * (STATS_ROWS_C * N) + rows
                tl.store(out, run_max * LN2_C, mask=row_mask)
                tl.store(out + N, sum_exp, mask=row_mask)
                tl.store(out + 2 * N, sum_exp_z * LN2_C, mask=row_mask)
                run_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
                sum_exp = tl.zeros([BLOCK_N], tl.float32)
                sum_exp_z = tl.zeros([BLOCK_N], tl.float32)


@triton.jit
def _target_logit_kernel(
    hidden_ptr, weight_ptr, labels_ptr, out_ptr, N, H, V,
    stride_hn, stride_hk, stride_wv, stride_wk, inv_temperature,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """``out[i] = hidden[i] . weight[labels[i]] / T`` for labels in ``[0, V)``, else 0:
    the target logit, once per row (fp32 products and sums)."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    labels = tl.load(labels_ptr + rows, mask=row_mask, other=-1)
    inside = row_mask & (labels >= 0) & (labels < V)
    safe = tl.where(inside, labels, 0).to(tl.int64)
    total = tl.zeros([BLOCK_N], tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        mask = inside[:, None] & (ks < H)[None, :]
        h = tl.load(hidden_ptr + rows.to(tl.int64)[:, None] * stride_hn + ks[None, :] * stride_hk, mask=mask, other=0.0)
        w = tl.load(weight_ptr + safe[:, None] * stride_wv + ks[None, :] * stride_wk, mask=mask, other=0.0)
        total += tl.sum(h.to(tl.float32) * w.to(tl.float32), axis=1)
    tl.store(out_ptr + rows, total * inv_temperature, mask=row_mask)


@triton.jit
def _dlogits_persistent_kernel(
    hidden_ptr, weight_ptr, lse_ptr, entropy_ptr, grad_logp_ptr, grad_entropy_ptr, dlogits_ptr,
    N, H, V_CHUNK, num_programs,
    stride_hn, stride_hk, stride_wv, stride_wk, stride_dn,
    scale2, inv_temperature,
    HAS_ENTROPY: tl.constexpr, USE_TMA: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_N: tl.constexpr,
):
    """dL/dlogits of one vocabulary chunk without the label term (added by the caller):
    ``(-g_logp p - g_ent p (z - lse + ent)) / T`` with ``p = exp2(z2 - lse2)``."""
    pid = tl.program_id(0)
    if USE_TMA:
        h_desc = tl.make_tensor_descriptor(hidden_ptr, shape=[N, H], strides=[stride_hn, 1], block_shape=[BLOCK_N, BLOCK_K])
        w_desc = tl.make_tensor_descriptor(weight_ptr, shape=[V_CHUNK, H], strides=[stride_wv, 1], block_shape=[BLOCK_V, BLOCK_K])
    else:
        h_desc = hidden_ptr
        w_desc = weight_ptr
    num_token_blocks = tl.cdiv(N, BLOCK_N)
    num_vocab_tiles = tl.cdiv(V_CHUNK, BLOCK_V)
    num_work = num_token_blocks * num_vocab_tiles
    k_steps = tl.cdiv(H, BLOCK_K)
    my_items = tl.cdiv(num_work - pid, num_programs)
    acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
    for it in range(0, my_items * k_steps):
        item = it // k_steps
        k = it % k_steps
        work = pid + item * num_programs
        group_size = GROUP_N * num_vocab_tiles
        first_block = (work // group_size) * GROUP_N
        blocks_in_group = tl.minimum(num_token_blocks - first_block, GROUP_N)
        pid_n = first_block + (work % group_size) % blocks_in_group
        pid_v = (work % group_size) // blocks_in_group
        h = _load_tile(hidden_ptr, h_desc, pid_n * BLOCK_N, k * BLOCK_K, N, H, stride_hn, stride_hk,
                       BLOCK_N, BLOCK_K, USE_TMA, UPCAST)
        w = _load_tile(weight_ptr, w_desc, pid_v * BLOCK_V, k * BLOCK_K, V_CHUNK, H, stride_wv, stride_wk,
                       BLOCK_V, BLOCK_K, USE_TMA, UPCAST)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=INPUT_PRECISION)
        if k == k_steps - 1:
            rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            row_mask = rows < N
            cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
            col_mask = cols < V_CHUNK
            lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
            grad_logp = tl.load(grad_logp_ptr + rows, mask=row_mask, other=0.0)
            z2 = acc * scale2
            p = tl.exp2(z2 - (lse * LOG2E_C)[:, None])
            grad_z = -grad_logp[:, None] * p
            if HAS_ENTROPY:
                entropy = tl.load(entropy_ptr + rows, mask=row_mask, other=0.0)
                grad_entropy = tl.load(grad_entropy_ptr + rows, mask=row_mask, other=0.0)
                z = z2 * LN2_C
                grad_z -= grad_entropy[:, None] * p * (z - lse[:, None] + entropy[:, None])
            tl.store(dlogits_ptr + rows.to(tl.int64)[:, None] * stride_dn + cols[None, :],
                     (grad_z * inv_temperature).to(dlogits_ptr.dtype.element_ty),
                     mask=row_mask[:, None] & col_mask[None, :])
            acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)


# --- launch helpers -------------------------------------------------------------------------

_STATS_CONFIG = {"BLOCK_N": 32, "BLOCK_V": 128, "BLOCK_K": 32, "GROUP_N": 2, "num_warps": 4, "num_stages": 1}


def _launch_config() -> dict:
    """One configuration (the persistent grid is sized from it, so it is chosen, not tuned:
    the first of :data:`_PERSISTENT_CONFIGS` on the GPU, a small one in the interpreter)."""
    if _interpreting():
        return dict(_STATS_CONFIG)
    (config,) = _configs(_PERSISTENT_CONFIGS[:1])
    return dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def _num_programs(device: torch.device, work: int) -> int:
    if device.type == "cuda":
        return max(1, min(work, 2 * torch.cuda.get_device_properties(device).multi_processor_count))
    return max(1, min(work, 4))  # interpreter: several items per program exercise the loop


def _tma_ok(*tensors: torch.Tensor) -> bool:
    """Tensor descriptors need a unit last stride and 16-byte aligned bases and row strides."""
    for t in tensors:
        if t.stride(1) != 1 or (t.stride(0) * t.element_size()) % 16 or t.data_ptr() % 16:
            return False
    return True


def _ensure_allocator(device: torch.device) -> None:
    """Device-side tensor descriptors need a scratch allocator; install torch's caching one
    unless the caller has set an allocator of their own."""
    if device.type != "cuda":
        return
    try:
        from triton.runtime import _allocation

        if _allocation._allocator.get() is not _allocation._NULL_ALLOCATOR:
            return
    except AttributeError:  # another triton layout: set ours
        pass
    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device=device))


def target_logits(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, inv_temperature: float) -> torch.Tensor:
    """float32 ``[N]``: ``z[label]`` for labels in this shard, 0 for the others."""
    num_tokens, hidden_size = hidden.shape
    out = torch.empty(num_tokens, dtype=torch.float32, device=hidden.device)
    block_n = 16 if _interpreting() else 32
    _target_logit_kernel[(triton.cdiv(num_tokens, block_n),)](
        hidden, weight, labels, out, num_tokens, hidden_size, weight.shape[0],
        hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1), float(inv_temperature),
        BLOCK_N=block_n, BLOCK_K=64,
    )
    return out


def logprobs_stats(hidden, weight, labels, inv_temperature: float, need_entropy: bool) -> torch.Tensor:
    """float32 ``[4, N]``, the contract of ``logprobs_stats_reference``."""
    check_dtype(hidden)
    num_tokens, hidden_size = hidden.shape
    vocab = weight.shape[0]
    if num_tokens == 0 or vocab == 0:
        stats = torch.zeros(STATS_ROWS, num_tokens, dtype=torch.float32, device=hidden.device)
        stats[0] = float("-inf")
        return stats
    labels = labels.contiguous()
    config = _launch_config()
    block_n, block_v = config["BLOCK_N"], config["BLOCK_V"]
    num_tiles = triton.cdiv(vocab, block_v)
    token_blocks = triton.cdiv(num_tokens, block_n)
    wanted = max(1, triton.cdiv(_num_programs(hidden.device, 1 << 30), token_blocks))
    tiles_per_split = triton.cdiv(num_tiles, min(wanted, num_tiles))
    num_splits = triton.cdiv(num_tiles, tiles_per_split)  # every split starts on a real tile
    partial = torch.empty(num_splits, STATS_ROWS, num_tokens, dtype=torch.float32, device=hidden.device)
    partial[:, 3] = 0.0
    programs = _num_programs(hidden.device, token_blocks * num_splits)
    use_tma = _tma_ok(hidden, weight)
    if use_tma:
        _ensure_allocator(hidden.device)
    _stats_persistent_kernel[(programs,)](
        hidden, weight, partial,
        num_tokens, hidden_size, vocab, num_splits, tiles_per_split, programs,
        hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
        float(inv_temperature) * LOG2E,
        NEED_ENTROPY=bool(need_entropy), USE_TMA=use_tma, INPUT_PRECISION=_input_precision(hidden.dtype),
        UPCAST=_interpreting(), **config,
    )
    stats = merge_partial_stats(partial)
    # The gathered dot and the tiles' matrix multiply sum in different orders, so the target
    # can exceed this shard's log-sum-exp by an ulp of the logits: cap it there, which keeps
    # log p <= 0 exact, as it is mathematically (labels of other shards stay 0).
    target = target_logits(hidden, weight, labels, inv_temperature)
    inside = (labels >= 0) & (labels < vocab)
    stats[3] = torch.where(inside, torch.minimum(target, stats[0] + stats[1].log()), 0.0)
    return stats


def logprobs_backward(hidden, weight, labels, lse, entropy, grad_logp, grad_entropy, inv_temperature: float,
                      chunk_budget_bytes: int | None = None):
    """``(grad_hidden [N, H], grad_weight [V, H])``, the contract of
    ``logprobs_backward_reference``; memory as the first design's backward."""
    from r1core.kernels import fused_logprobs as first

    check_dtype(hidden)
    num_tokens, hidden_size = hidden.shape
    vocab = weight.shape[0]
    if num_tokens == 0 or vocab == 0:
        return torch.zeros_like(hidden), torch.zeros_like(weight)
    grad_weight = torch.empty_like(weight)
    has_entropy = grad_entropy.numel() > 0
    grad_hidden = torch.zeros(num_tokens, hidden_size, dtype=torch.float32, device=hidden.device)
    budget = first.DEFAULT_CHUNK_BUDGET_BYTES if chunk_budget_bytes is None else chunk_budget_bytes
    chunk = choose_vocab_chunk(num_tokens, vocab, hidden.element_size(), budget)
    dlogits = torch.empty(num_tokens, chunk, dtype=hidden.dtype, device=hidden.device)
    lse, grad_logp, labels = lse.contiguous(), grad_logp.contiguous(), labels.contiguous()
    entropy_arg = entropy.contiguous() if has_entropy else lse
    grad_entropy_arg = grad_entropy.contiguous() if has_entropy else lse
    config = _launch_config()
    # The label term g_logp / T, added once per row by a scatter into the chunk it falls in.
    label_term = (grad_logp * inv_temperature).to(torch.float32)
    row_offsets = torch.arange(num_tokens, device=hidden.device) * chunk
    for start in range(0, vocab, chunk):
        width = min(chunk, vocab - start)
        block = dlogits[:, :width]
        weight_chunk = weight[start : start + width]
        work = triton.cdiv(num_tokens, config["BLOCK_N"]) * triton.cdiv(width, config["BLOCK_V"])
        programs = _num_programs(hidden.device, work)
        use_tma = _tma_ok(hidden, weight_chunk)
        if use_tma:
            _ensure_allocator(hidden.device)
        _dlogits_persistent_kernel[(programs,)](
            hidden, weight_chunk, lse, entropy_arg, grad_logp, grad_entropy_arg, block,
            num_tokens, hidden_size, width, programs,
            hidden.stride(0), hidden.stride(1), weight_chunk.stride(0), weight_chunk.stride(1), block.stride(0),
            float(inv_temperature) * LOG2E, float(inv_temperature),
            HAS_ENTROPY=has_entropy, USE_TMA=use_tma, INPUT_PRECISION=_input_precision(hidden.dtype),
            UPCAST=_interpreting(), **config,
        )
        local = labels - start
        inside = (local >= 0) & (local < width)
        # Rows of other chunks add 0 at their own first column: no host sync, no compaction.
        index = row_offsets + torch.where(inside, local, 0)
        values = torch.where(inside, label_term, 0.0)
        flat = dlogits.view(-1)
        flat.index_put_((index,), (flat[index].float() + values).to(flat.dtype))
        torch.mm(block.T, hidden, out=grad_weight[start : start + width])
        _accumulate_matmul(grad_hidden, block, weight_chunk)
    return grad_hidden.to(hidden.dtype), grad_weight

