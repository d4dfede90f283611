"""Hugging Face checkpoint names of each family, per Megatron-Core parameter.

One table per family maps a Megatron parameter inside ``decoder.layers.{i}.`` to the Hugging
Face tensors inside ``model.layers.{i}.`` it is made of, and how (the *kind*). Import
(``weights.py``: checkpoint -> shards), export (``export.py``) and the weight sync into vLLM
(``Policy.iter_hf_weights``, which both go through) read these tables and nothing else, so a
family's names live in one place. Families differ, e.g. Mixtral's experts are
``block_sparse_moe.experts.{e}.w1/w3/w2`` where Qwen's are ``mlp.experts.{e}.gate_proj/up_proj/
down_proj``; Phi-3 stores q/k/v and gate/up fused.

Kinds: ``replicated`` (norms, routers, MLA down-projections), ``column`` / ``row`` (split along
dim 0 / 1 over tensor-parallel ranks), ``vocab`` (column, padded with zero rows), ``qkv`` (three
tensors merged per query group), ``qkv_fused`` (one tensor ``[q; k; v]`` merged the same way),
``glu`` (gate, up: each rank holds ``[gate_r; up_r]``) and ``glu_fused`` (one ``[gate; up]``).
Keys holding ``{e}`` are experts: ``{e}`` is the local expert slot on the Megatron side, the
global expert index on the Hugging Face side. Needs neither torch nor megatron-core.
"""

from __future__ import annotations

from dataclasses import dataclass

Entry = tuple[tuple[str, ...], str]


@dataclass(frozen=True)
class NameTable:
    """The checkpoint names of one family."""

    layer: dict[str, Entry]
    embedding: str = "model.embed_tokens.weight"
    final_norm: str = "model.norm.weight"
    output: str = "lm_head.weight"
    layer_prefix: str = "model.layers.{layer}."


def _norm(name: str) -> Entry:
    return ((name,), "replicated")


_ATTENTION: dict[str, Entry] = {
    "input_layernorm.weight": _norm("input_layernorm.weight"),
    # Transformer Engine fuses the pre-attention norm into the QKV linear.
    "self_attention.linear_qkv.layer_norm_weight": _norm("input_layernorm.weight"),
    "self_attention.linear_qkv.weight": (
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"), "qkv"),
    "self_attention.linear_qkv.bias": (
        ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"), "qkv"),
    "self_attention.q_layernorm.weight": _norm("self_attn.q_norm.weight"),
    "self_attention.k_layernorm.weight": _norm("self_attn.k_norm.weight"),
    "self_attention.linear_proj.weight": (("self_attn.o_proj.weight",), "row"),
}

_DENSE_MLP: dict[str, Entry] = {
    "pre_mlp_layernorm.weight": _norm("post_attention_layernorm.weight"),
    "mlp.linear_fc1.layer_norm_weight": _norm("post_attention_layernorm.weight"),
    "mlp.linear_fc1.weight": (("mlp.gate_proj.weight", "mlp.up_proj.weight"), "glu"),
    "mlp.linear_fc2.weight": (("mlp.down_proj.weight",), "row"),
}


def _moe(block: str = "mlp", gate: str = "gate_proj", up: str = "up_proj", down: str = "down_proj",
         shared: str | None = None, shared_gate: str | None = None) -> dict[str, Entry]:
    """MoE layer names; every expert layout Megatron-Core builds (one module per expert, or
    Transformer Engine's grouped GEMM with one weight per local expert) maps to the same
    per-expert checkpoint tensors."""
    fc1: Entry = ((f"{block}.experts.{{e}}.{gate}.weight", f"{block}.experts.{{e}}.{up}.weight"), "glu")
    fc2: Entry = ((f"{block}.experts.{{e}}.{down}.weight",), "row")
    table = {
        "mlp.router.weight": _norm(f"{block}.gate.weight"),
        "mlp.router.expert_bias": _norm(f"{block}.gate.e_score_correction_bias"),
        "mlp.experts.local_experts.{e}.linear_fc1.weight": fc1,
        "mlp.experts.local_experts.{e}.linear_fc2.weight": fc2,
        "mlp.experts.linear_fc1.weight{e}": fc1,
        "mlp.experts.linear_fc2.weight{e}": fc2,
    }
    if shared:
        table["mlp.shared_experts.linear_fc1.weight"] = (
            (f"{block}.{shared}.gate_proj.weight", f"{block}.{shared}.up_proj.weight"), "glu")
        table["mlp.shared_experts.linear_fc2.weight"] = ((f"{block}.{shared}.down_proj.weight",), "row")
    if shared_gate:
        table["mlp.shared_experts.gate_weight"] = _norm(f"{block}.{shared_gate}.weight")
    return table


_LATENT_ATTENTION: dict[str, Entry] = {
    "input_layernorm.weight": _norm("input_layernorm.weight"),
    "self_attention.linear_q_proj.weight": (("self_attn.q_proj.weight",), "column"),
    # The down-projections are small and replicated on every tensor-parallel rank.
    "self_attention.linear_q_down_proj.weight": _norm("self_attn.q_a_proj.weight"),
    "self_attention.q_layernorm.weight": _norm("self_attn.q_a_layernorm.weight"),
    "self_attention.linear_q_up_proj.layer_norm_weight": _norm("self_attn.q_a_layernorm.weight"),
    "self_attention.linear_q_up_proj.weight": (("self_attn.q_b_proj.weight",), "column"),
    "self_attention.linear_kv_down_proj.weight": _norm("self_attn.kv_a_proj_with_mqa.weight"),
    "self_attention.kv_layernorm.weight": _norm("self_attn.kv_a_layernorm.weight"),
    "self_attention.linear_kv_up_proj.layer_norm_weight": _norm("self_attn.kv_a_layernorm.weight"),
    "self_attention.linear_kv_up_proj.weight": (("self_attn.kv_b_proj.weight",), "column"),
    "self_attention.linear_proj.weight": (("self_attn.o_proj.weight",), "row"),
}

_LLAMA = NameTable({**_ATTENTION, **_DENSE_MLP})

TABLES: dict[str, NameTable] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "qwen3_moe": NameTable({**_ATTENTION, **_DENSE_MLP, **_moe()}),
    "qwen2_moe": NameTable({**_ATTENTION, **_DENSE_MLP,
                            **_moe(shared="shared_expert", shared_gate="shared_expert_gate")}),
    "mixtral": NameTable({**_ATTENTION, **_DENSE_MLP,
                          **_moe(block="block_sparse_moe", gate="w1", up="w3", down="w2")}),
    "deepseek_v3": NameTable({**_LATENT_ATTENTION, **_DENSE_MLP, **_moe(shared="shared_experts")}),
    "gemma3_text": NameTable({
        **_ATTENTION, **_DENSE_MLP,
        # Gemma's four norms per layer: post_attention_layernorm follows the attention output
        # (before the residual add); the pre-MLP norm is pre_feedforward_layernorm.
        "self_attention.linear_proj.post_layernorm.weight": _norm("post_attention_layernorm.weight"),
        "pre_mlp_layernorm.weight": _norm("pre_feedforward_layernorm.weight"),
        "mlp.linear_fc1.layer_norm_weight": _norm("pre_feedforward_layernorm.weight"),
        "mlp.linear_fc2.post_layernorm.weight": _norm("post_feedforward_layernorm.weight"),
    }),
    "phi3": NameTable({
        **_ATTENTION, **_DENSE_MLP,
        "self_attention.linear_qkv.weight": (("self_attn.qkv_proj.weight",), "qkv_fused"),
        "mlp.linear_fc1.weight": (("mlp.gate_up_proj.weight",), "glu_fused"),
    }),
}


def table_for(model_type: str) -> NameTable:
    """The :class:`NameTable` of ``model_type``; ``KeyError`` names the known families."""
    try:
        return TABLES[model_type]
    except KeyError:
        raise KeyError(f"no checkpoint names for model_type {model_type!r}; known: {sorted(TABLES)}") from None
