"""Triton kernels of the fused log-prob op: statistics forward, recompute-backward.

Both kernels compute a ``[BLOCK_N, BLOCK_V]`` logits tile with ``tl.dot`` over the hidden
size in ``BLOCK_K`` steps (fp32 accumulation) and consume it in registers:

* ``_logprobs_stats_kernel`` streams the vocabulary tiles of one *vocabulary split* for one
  token block and keeps, per token, the online max ``m``, ``sum exp(z - m)``,
  ``sum exp(z - m) z`` and the target logit. Logits never reach memory. The per-split
  partial statistics ``[num_splits, 4, N]`` are merged by :func:`merge_partial_stats`.
* ``_logprobs_dlogits_kernel`` recomputes one logits tile of a (all tokens x vocabulary
  chunk) block and writes ``dL/dlogits`` for it; two GEMMs then give the gradients.

Memory traffic, the part that decides H100 throughput: a logits tile has arithmetic
intensity ``BN*BV/(BN+BV)`` flop/byte (85 for 128x256): enough from L2, not from HBM. Both
kernels therefore order their programs in groups of ``GROUP_N`` token blocks x all
vocabulary splits (or tiles), so the programs resident at one time share a few MiB of
``hidden`` rows and read each weight tile once per group from HBM.

Extra memory of the backward (beyond the returned gradients), for ``N`` tokens, hidden
size ``H``, a vocabulary chunk of ``V_c`` columns and element size ``e`` bytes:

    4 * N * H             fp32 accumulator of grad_hidden (absent for fp32 inputs)
  + e * N * V_c           dL/dlogits of one vocabulary chunk
  + 16 * N                the per-token scalars

``V_c`` is chosen so that the dlogits buffer stays within ``chunk_budget_bytes``
(128 MiB by default): at N=16384, H=4096, bf16 that is 256 + 128 MiB = 384 MiB.
The weight gradient of each vocabulary chunk is ONE GEMM ``dlogits^T @ hidden`` whose
reduction over all N tokens accumulates in fp32 inside the GEMM; only its final result is
rounded to the weight's dtype, so no fp32 copy of the ``[V, H]`` weight gradient is needed.
``dlogits @ W_chunk`` is added into the fp32 ``grad_hidden`` in place, by cuBLAS where torch
has ``addmm(..., out_dtype=torch.float32)`` and otherwise by ``_accumulate_matmul_kernel``
below (:func:`fp32_accumulation_path` says which; the benchmarks report it): the sum over
chunks is never rounded to 16 bits, whatever the torch version.

Why not one backward kernel with atomics (cut-cross-entropy's design)? Accumulating the
weight gradient atomically needs an fp32 ``[V, H]`` buffer (2.4 GiB at V=151936, H=4096) or
lossy 16-bit atomics, and register-resident accumulators over H=4096 do not fit. The chunked
design pays instead for writing and reading ``dlogits`` (``3 e N V`` bytes, ~15 GB at the
target shape, ~4.5 ms of HBM time that overlaps the GEMMs) and for read-modify-writing the
fp32 ``grad_hidden`` once per chunk (``8 N H V / V_c`` bytes).

The fused GRPO loss reuses both primitives unchanged: its per-token ``dL/dlogp`` is an
``[N]`` vector computed between the two launches, so folding it into this epilogue would
save nothing measurable.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

STATS_ROWS = 4  # max, sum-exp, sum-exp * z, target logit
DEFAULT_CHUNK_BUDGET_BYTES = 128 * 2**20


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def autotune_mode() -> str:
    """``R1CORE_AUTOTUNE``: ``full`` (default: every configuration below is tried once per
    key) or ``fixed`` (the first one only: no tuning runs, as ``make bench-gpu``'s test step
    uses to stay within its time budget). Read when this module is imported."""
    mode = os.environ.get("R1CORE_AUTOTUNE", "full")
    if mode not in ("full", "fixed"):
        raise ValueError(f"R1CORE_AUTOTUNE must be 'full' or 'fixed', got {mode!r}")
    return mode


def _configs(h100: list[tuple[int, int, int, int, int, int]], names=("BLOCK_N", "BLOCK_V", "BLOCK_K", "GROUP_N")) -> list[triton.Config]:
    if _interpreting():
        # Autotuning under the interpreter re-runs every config in Python: one small fixed
        # config keeps CPU tests fast and still exercises masking (tiles smaller than V).
        return [triton.Config(dict(zip(names, (32, 128, 32, 2))), num_warps=4, num_stages=1)]
    if autotune_mode() == "fixed":
        h100 = h100[:1]
    return [
        triton.Config(dict(zip(names, (bn, bv, bk, g))), num_warps=w, num_stages=s)
        for bn, bv, bk, g, w, s in h100
    ]


# (BLOCK_N, BLOCK_V, BLOCK_K, GROUP_N, num_warps, num_stages): Hopper wgmma-friendly tiles.
_H100_CONFIGS = [
    (128, 256, 64, 16, 8, 3),
    (128, 256, 64, 8, 8, 4),
    (128, 128, 64, 16, 8, 4),
    (128, 128, 64, 8, 4, 4),
    (64, 256, 64, 16, 8, 4),
    (256, 128, 64, 8, 8, 3),
    (64, 128, 64, 16, 4, 4),
]


@triton.jit
def _logit_tile(
    hidden_ptr, weight_ptr, rows64, row_mask, cols64, col_mask, H,
    stride_hn, stride_hk, stride_wv, stride_wk,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """float32 ``[BLOCK_N, BLOCK_V]``: hidden[rows] @ weight[cols].T, K-loop over ``H``;
    masked rows and columns read zeros."""
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + offs_k
        k_mask = ks < H
        h = tl.load(
            hidden_ptr + rows64[:, None] * stride_hn + ks[None, :] * stride_hk,
            mask=row_mask[:, None] & k_mask[None, :], other=0.0,
        )
        w = tl.load(
            weight_ptr + cols64[None, :] * stride_wv + ks[:, None] * stride_wk,
            mask=col_mask[None, :] & k_mask[:, None], other=0.0,
        )
        if UPCAST:  # the interpreter's dot mishandles bfloat16 operands
            h, w = h.to(tl.float32), w.to(tl.float32)
        acc = tl.dot(h, w, acc, input_precision=INPUT_PRECISION)
    return acc


# Keyed on the shard's vocabulary (fixed per model), not on N (changes every step).
@triton.autotune(configs=_configs(_H100_CONFIGS), key=["H", "V", "IS_FP32"])
@triton.jit
def _logprobs_stats_kernel(
    hidden_ptr, weight_ptr, labels_ptr, partial_ptr,
    N, H, V, num_splits,
    stride_hn, stride_hk, stride_wv, stride_wk,
    inv_temperature,
    NEED_ENTROPY: tl.constexpr, IS_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_N: tl.constexpr,
):
    # Program order: groups of GROUP_N token blocks x every split, token block fastest, so
    # co-resident programs share their hidden rows and each weight tile in L2.
    pid = tl.program_id(0)
    num_token_blocks = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_N * num_splits
    group = pid // group_size
    first_block = group * GROUP_N
    blocks_in_group = tl.minimum(num_token_blocks - first_block, GROUP_N)
    pid_n = first_block + (pid % group_size) % blocks_in_group
    split = (pid % group_size) // blocks_in_group

    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    # 64-bit element offsets: V * H (e.g. 262144 x 8192) can exceed 2^31.
    rows64 = rows.to(tl.int64)
    labels = tl.load(labels_ptr + rows, mask=row_mask, other=-1)

    num_tiles = tl.cdiv(V, BLOCK_V)
    tiles_per_split = tl.cdiv(num_tiles, num_splits)
    tile_begin = split * tiles_per_split
    tile_end = tl.minimum(tile_begin + tiles_per_split, num_tiles)

    run_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
    sum_exp = tl.zeros([BLOCK_N], tl.float32)
    sum_exp_z = tl.zeros([BLOCK_N], tl.float32)
    target = tl.zeros([BLOCK_N], tl.float32)
    for tile in range(tile_begin, tile_end):
        cols = tile * BLOCK_V + tl.arange(0, BLOCK_V)
        col_mask = cols < V
        cols64 = cols.to(tl.int64)
        acc = _logit_tile(hidden_ptr, weight_ptr, rows64, row_mask, cols64, col_mask, H,
                          stride_hn, stride_hk, stride_wv, stride_wk,
                          INPUT_PRECISION, UPCAST, BLOCK_N, BLOCK_V, BLOCK_K)
        # Tail columns must be -inf *before* the max and the exp; every tile has at least
        # one real column, so the new max is finite and exp(-inf - max) is a clean 0.
        z = tl.where(col_mask[None, :], acc * inv_temperature, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(z, axis=1))
        rescale = tl.exp(run_max - new_max)
        e = tl.exp(z - new_max[:, None])
        sum_exp = sum_exp * rescale + tl.sum(e, axis=1)
        if NEED_ENTROPY:
            # e is 0 on the tail columns but z is -inf there: zero z first (0 * -inf = NaN).
            sum_exp_z = sum_exp_z * rescale + tl.sum(e * tl.where(col_mask[None, :], z, 0.0), axis=1)
        run_max = new_max
        # Labels of other shards (negative or >= V) never match a real column.
        hit = (cols[None, :] == labels[:, None]) & col_mask[None, :]
        target += tl.sum(tl.where(hit, z, 0.0), axis=1)

    # A split without tiles stores the neutral element (-inf, 0, 0, 0).
    out = partial_ptr + split * (4 * N) + rows
    tl.store(out, run_max, mask=row_mask)
    tl.store(out + N, sum_exp, mask=row_mask)
    tl.store(out + 2 * N, sum_exp_z, mask=row_mask)
    tl.store(out + 3 * N, target, mask=row_mask)


# Not keyed on N or the chunk width (which follows N): token counts change every step, and
# re-tuning for each would cost more than it gains.
@triton.autotune(configs=_configs(_H100_CONFIGS), key=["H", "IS_FP32", "HAS_ENTROPY"])
@triton.jit
def _logprobs_dlogits_kernel(
    hidden_ptr, weight_ptr, labels_ptr, lse_ptr, entropy_ptr, grad_logp_ptr, grad_entropy_ptr, dlogits_ptr,
    N, H, V_CHUNK, vocab_offset,
    stride_hn, stride_hk, stride_wv, stride_wk, stride_dn, stride_dv,
    inv_temperature,
    HAS_ENTROPY: tl.constexpr, IS_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_N: tl.constexpr,
):
    """dL/dlogits of one [BLOCK_N, BLOCK_V] tile of a vocabulary chunk.

    ``weight_ptr`` points at the chunk's first row; ``vocab_offset`` is that row's index in
    the shard (labels are shard-local). With p = exp(z - lse):
        dL/dz = g_logp (1[j = y] - p) - g_entropy p (z - lse + entropy),  dL/dlogit = dL/dz / T
    """
    pid = tl.program_id(0)
    num_token_blocks = tl.cdiv(N, BLOCK_N)
    num_vocab_tiles = tl.cdiv(V_CHUNK, BLOCK_V)
    group_size = GROUP_N * num_vocab_tiles
    group = pid // group_size
    first_block = group * GROUP_N
    blocks_in_group = tl.minimum(num_token_blocks - first_block, GROUP_N)
    pid_n = first_block + (pid % group_size) % blocks_in_group
    pid_v = (pid % group_size) // blocks_in_group

    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    col_mask = cols < V_CHUNK
    rows64, cols64 = rows.to(tl.int64), cols.to(tl.int64)  # 64-bit offsets, as above
    acc = _logit_tile(hidden_ptr, weight_ptr, rows64, row_mask, cols64, col_mask, H,
                      stride_hn, stride_hk, stride_wv, stride_wk,
                      INPUT_PRECISION, UPCAST, BLOCK_N, BLOCK_V, BLOCK_K)
    z = acc * inv_temperature
    # Padding rows read lse = 0 and finite z; they are never stored.
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    grad_logp = tl.load(grad_logp_ptr + rows, mask=row_mask, other=0.0)
    labels = tl.load(labels_ptr + rows, mask=row_mask, other=-1)
    p = tl.exp(z - lse[:, None])
    grad_z = -grad_logp[:, None] * p
    if HAS_ENTROPY:
        entropy = tl.load(entropy_ptr + rows, mask=row_mask, other=0.0)
        grad_entropy = tl.load(grad_entropy_ptr + rows, mask=row_mask, other=0.0)
        grad_z -= grad_entropy[:, None] * p * (z - lse[:, None] + entropy[:, None])
    hit = (cols[None, :] + vocab_offset) == labels[:, None]
    grad_z += tl.where(hit, grad_logp[:, None], 0.0)
    grad_logits = grad_z * inv_temperature
    tl.store(
        dlogits_ptr + rows64[:, None] * stride_dn + cols[None, :] * stride_dv,
        grad_logits.to(dlogits_ptr.dtype.element_ty),
        mask=row_mask[:, None] & col_mask[None, :],
    )


# --- launch helpers ---------------------------------------------------------------------

_SUPPORTED = (torch.float32, torch.bfloat16, torch.float16)


def check_dtype(tensor: torch.Tensor) -> None:
    if tensor.dtype not in _SUPPORTED:
        raise TypeError(
            f"the triton log-prob kernels take float32, bfloat16 or float16, got {tensor.dtype} "
            "(use backend='reference' for float64)"
        )


def _input_precision(dtype: torch.dtype) -> str:
    # fp32 inputs follow torch's own matmul setting, so triton and torch agree in precision;
    # 16-bit inputs have no reduced-precision mode to choose.
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _num_programs_target(device: torch.device) -> int:
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 16  # interpreter: enough splits to exercise the merge of partial statistics


def choose_num_splits(num_tokens: int, vocab: int, device: torch.device, nominal_block_n: int = 128) -> int:
    """Vocabulary splits of the statistics kernel: enough programs to fill the GPU when few
    tokens give few token blocks, never more splits than 128-wide vocabulary tiles."""
    token_blocks = max(1, triton.cdiv(num_tokens, nominal_block_n))
    min_splits = 8 if device.type == "cuda" else 1  # L2 grouping wants several splits per group
    splits = max(min_splits, triton.cdiv(_num_programs_target(device), token_blocks))
    return max(1, min(splits, triton.cdiv(vocab, 128)))


def merge_partial_stats(partial: torch.Tensor) -> torch.Tensor:
    """``[S, 4, N]`` per-split statistics -> ``[4, N]`` (same rule as across TP shards)."""
    run_max = partial[:, 0]
    global_max = run_max.amax(dim=0)
    # Empty splits hold m = -inf: their weight exp(-inf - M) is exactly 0.
    weight = torch.exp(run_max - global_max)
    sum_exp = (partial[:, 1] * weight).sum(0)
    sum_exp_z = (partial[:, 2] * weight).sum(0)
    target = partial[:, 3].sum(0)
    return torch.stack([global_max, sum_exp, sum_exp_z, target])


def logprobs_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    inv_temperature: float,
    need_entropy: bool,
    num_splits: int | None = None,
) -> torch.Tensor:
    """float32 ``[4, N]`` statistics of this vocabulary shard; see
    ``r1core.ops.fused_logprobs.logprobs_stats_reference`` for the exact contract."""
    check_dtype(hidden)
    num_tokens, hidden_size = hidden.shape
    vocab = weight.shape[0]
    if num_tokens == 0 or vocab == 0:
        stats = torch.zeros(STATS_ROWS, num_tokens, dtype=torch.float32, device=hidden.device)
        stats[0] = float("-inf")
        return stats
    if num_splits is None:
        num_splits = choose_num_splits(num_tokens, vocab, hidden.device)
    partial = torch.empty(num_splits, STATS_ROWS, num_tokens, dtype=torch.float32, device=hidden.device)
    labels = labels.contiguous()  # per-token vectors are read with unit stride

    def grid(meta):
        return (triton.cdiv(num_tokens, meta["BLOCK_N"]) * num_splits,)

    _logprobs_stats_kernel[grid](
        hidden, weight, labels, partial,
        num_tokens, hidden_size, vocab, num_splits,
        hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
        float(inv_temperature),
        NEED_ENTROPY=bool(need_entropy), IS_FP32=hidden.dtype == torch.float32,
        INPUT_PRECISION=_input_precision(hidden.dtype), UPCAST=_interpreting(),
    )
    return partial[0].clone() if num_splits == 1 else merge_partial_stats(partial)


def choose_vocab_chunk(num_tokens: int, vocab: int, element_size: int, budget_bytes: int) -> int:
    """Columns per backward chunk: the dlogits buffer ``[N, V_c]`` stays within the budget;
    a multiple of 256 (whole tiles), at least 256, at most the vocabulary."""
    columns = budget_bytes // max(1, num_tokens * element_size)
    columns = max(256, columns // 256 * 256)
    return min(columns, vocab)


# grad_hidden += dlogits @ weight_chunk with an fp32 grad_hidden and 16-bit operands.
@triton.autotune(configs=_configs(_H100_CONFIGS[:4], names=("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")), key=["N", "K"])
@triton.jit
def _accumulate_matmul_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """``C[M, N] += A[M, K] @ B[K, N]``, C float32 (unit column stride): the fp32 partial sum is
    loaded into the MMA accumulator, so the sum over vocabulary chunks is never rounded."""
    pid = tl.program_id(0)
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * num_n)
    first_m = group * GROUP_M
    rows_in_group = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % rows_in_group
    pid_n = (pid % (GROUP_M * num_n)) // rows_in_group
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows64 = rows.to(tl.int64)
    tile_mask = (rows < M)[:, None] & (cols < N)[None, :]
    c_ptrs = c_ptr + rows64[:, None] * stride_cm + cols[None, :]
    acc = tl.load(c_ptrs, mask=tile_mask, other=0.0)
    offs_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + offs_k
        a = tl.load(a_ptr + rows64[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rows < M)[:, None] & (ks < K)[None, :], other=0.0)
        b = tl.load(b_ptr + ks.to(tl.int64)[:, None] * stride_bk + cols[None, :] * stride_bn,
                    mask=(ks < K)[:, None] & (cols < N)[None, :], other=0.0)
        if UPCAST:
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    tl.store(c_ptrs, acc, mask=tile_mask)


def accumulate_matmul_triton(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` in place with the Triton kernel above (``acc`` float32 ``[M, N]``,
    unit column stride; ``a [M, K]``, ``b [K, N]`` of one dtype)."""
    M, K = a.shape
    N = b.shape[1]
    if acc.dtype != torch.float32 or acc.stride(1) != 1 or acc.shape != (M, N) or b.shape[0] != K:
        raise ValueError(f"accumulate_matmul_triton: acc {acc.dtype} {tuple(acc.shape)}, a {tuple(a.shape)}, b {tuple(b.shape)}")

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    _accumulate_matmul_kernel[grid](
        a, b, acc, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), acc.stride(0),
        INPUT_PRECISION=_input_precision(a.dtype), UPCAST=_interpreting(),
    )


_FP32_ACCUMULATION: dict[str, str] = {}


def fp32_accumulation_path(device: torch.device) -> str:
    """How the backward adds a 16-bit product into its fp32 ``grad_hidden`` on ``device``:
    ``"torch addmm(out_dtype=float32)"`` (cuBLAS, in place) where this torch has it on CUDA,
    else ``"triton accumulate kernel"``; on the CPU ``"fp32 upcast"``. Probed once per device
    type and reported by the benchmarks. There is no path that rounds per chunk."""
    if device.type != "cuda":
        return "fp32 upcast"
    if "cuda" not in _FP32_ACCUMULATION:
        acc = torch.zeros(16, 16, device=device)
        a = torch.ones(16, 16, device=device, dtype=torch.bfloat16)
        try:
            torch.addmm(acc, a, a, out_dtype=torch.float32, out=acc)
            ok = bool(torch.all(acc == 16))
        except (RuntimeError, TypeError, NotImplementedError):
            ok = False
        _FP32_ACCUMULATION["cuda"] = "torch addmm(out_dtype=float32)" if ok else "triton accumulate kernel"
    return _FP32_ACCUMULATION["cuda"]


def _accumulate_matmul(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` with ``acc`` float32 and ``a``, ``b`` possibly 16-bit, never rounded to
    16 bits in between (see :func:`fp32_accumulation_path`)."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    elif not acc.is_cuda:  # CPU (the interpreter): exact fp32 products, speed does not matter
        acc.addmm_(a.float(), b.float())
    elif fp32_accumulation_path(acc.device) == "torch addmm(out_dtype=float32)":
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        accumulate_matmul_triton(acc, a, b)


def logprobs_backward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: torch.Tensor,
    grad_entropy: torch.Tensor,
    inv_temperature: float,
    chunk_budget_bytes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_hidden [N, H], grad_weight [V, H])`` of this shard, in the inputs' dtype; the
    contract of ``r1core.ops.fused_logprobs.logprobs_backward_reference``. Extra memory: see the
    module docstring; ``chunk_budget_bytes`` defaults to :data:`DEFAULT_CHUNK_BUDGET_BYTES`."""
    check_dtype(hidden)
    num_tokens, hidden_size = hidden.shape
    vocab = weight.shape[0]
    grad_weight = torch.empty_like(weight)
    if num_tokens == 0 or vocab == 0:
        return torch.zeros_like(hidden), grad_weight.zero_()
    has_entropy = grad_entropy.numel() > 0
    grad_hidden = torch.zeros(num_tokens, hidden_size, dtype=torch.float32, device=hidden.device)
    if chunk_budget_bytes is None:  # read at call time, so that it can be tuned globally
        chunk_budget_bytes = DEFAULT_CHUNK_BUDGET_BYTES
    chunk = choose_vocab_chunk(num_tokens, vocab, hidden.element_size(), chunk_budget_bytes)
    dlogits = torch.empty(num_tokens, chunk, dtype=hidden.dtype, device=hidden.device)
    # Unused pointers must still be valid tensors for the launcher.
    lse, grad_logp, labels = lse.contiguous(), grad_logp.contiguous(), labels.contiguous()
    entropy_arg = entropy.contiguous() if has_entropy else lse
    grad_entropy_arg = grad_entropy.contiguous() if has_entropy else lse
    for start in range(0, vocab, chunk):
        width = min(chunk, vocab - start)
        block = dlogits[:, :width]
        weight_chunk = weight[start : start + width]

        def grid(meta, width=width):
            return (triton.cdiv(num_tokens, meta["BLOCK_N"]) * triton.cdiv(width, meta["BLOCK_V"]),)

        _logprobs_dlogits_kernel[grid](
            hidden, weight_chunk, labels, lse, entropy_arg, grad_logp, grad_entropy_arg, block,
            num_tokens, hidden_size, width, start,
            hidden.stride(0), hidden.stride(1), weight_chunk.stride(0), weight_chunk.stride(1),
            block.stride(0), block.stride(1),
            float(inv_temperature),
            HAS_ENTROPY=has_entropy, IS_FP32=hidden.dtype == torch.float32,
            INPUT_PRECISION=_input_precision(hidden.dtype), UPCAST=_interpreting(),
        )
        # One GEMM over all N tokens: fp32 accumulation inside, one rounding at the end.
        torch.mm(block.T, hidden, out=grad_weight[start : start + width])
        _accumulate_matmul(grad_hidden, block, weight_chunk)
    return grad_hidden.to(hidden.dtype), grad_weight
