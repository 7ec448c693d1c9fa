"""The expert-router trunk (the paper's Mixture-of-Transformer-Experts), reference §1.2.

Each layer holds two complete sets of per-token weights, the semantic and the geometric expert: input
RMSNorm, Q/K/V (bias, grouped-query), per-head QK RMSNorm, O (no bias), post-attention RMSNorm and a
SwiGLU MLP; the geometric expert also has LayerScale (init 0.01) on both residual branches. Attention
is ONE operation over the tokens of both experts. The final RMSNorm is per expert.

Routing is hard, by token type, and costs nothing: the packed sequence stores all semantic tokens
first and all geometric tokens after them (`split` = number of semantic tokens), so each expert works
on a slice. Attention order is given by the mask and the position ids, not by the storage order.

Two paths:
- `forward_geometry`: geometric tokens only, a dense (B, L, D) batch, unmasked SDPA (flash on GPU);
- `forward_packed`: one packed sequence (T, D) of several samples, with a document mask built once
  per batch: SDPA with per-sample masks (the reference, CPU) or flex attention with a BlockMask (compiled
  on GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from torch.utils.checkpoint import checkpoint

from g2vlm.model.config import ModelConfig
from g2vlm.model.packing import SampleBlocks
from g2vlm.model.rope import apply_rotary


class RMSNorm(nn.Module):
    """Qwen2 RMSNorm: computed in fp32, cast back to the input dtype, then scaled.

    Not `torch.nn.RMSNorm`: under bf16 autocast the QK-norm gets bf16 projections and an fp32 weight; Qwen2's
    norm (the official model's) then returns fp32, so the rotary runs in fp32 (see `attention`), while
    `torch.nn.RMSNorm` returns bf16 and, with mixed dtypes, falls back from its fused kernel with a warning
    on every call."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, hidden, bias=False)
        self.up_proj = nn.Linear(width, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Expert(nn.Module):
    """One expert's weights in one layer. Works on any (..., L, D) token tensor.

    frozen: set by `G2VLM.freeze`; a frozen expert's inputs are detached, so autograd records none of
    its operations (no activations kept, no gradient reaches it even through the shared attention).
    """

    def __init__(self, config: ModelConfig, qk_norm: bool, layer_scale: bool) -> None:
        super().__init__()
        width, head_dim = config.width, config.head_dim
        self.heads, self.kv_heads, self.head_dim = config.heads, config.kv_heads, head_dim
        self.input_norm = RMSNorm(width, config.rms_eps)
        self.q_proj = nn.Linear(width, config.heads * head_dim, bias=True)
        self.k_proj = nn.Linear(width, config.kv_heads * head_dim, bias=True)
        self.v_proj = nn.Linear(width, config.kv_heads * head_dim, bias=True)
        self.q_norm = RMSNorm(head_dim, config.rms_eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim, config.rms_eps) if qk_norm else nn.Identity()
        self.o_proj = nn.Linear(config.heads * head_dim, width, bias=False)
        self.post_attention_norm = RMSNorm(width, config.rms_eps)
        self.mlp = SwiGLU(width, config.mlp_size)
        self.layer_scale_init = config.layer_scale_init
        if layer_scale:
            self.attention_scale = nn.Parameter(torch.full((width,), config.layer_scale_init))
            self.mlp_scale = nn.Parameter(torch.full((width,), config.layer_scale_init))
        else:
            self.attention_scale = self.mlp_scale = None
        self.frozen = False

    def reset_parameters(self) -> None:
        """Re-initialise this module's own parameters (the LayerScales), e.g. after meta-device init."""
        for scale in (self.attention_scale, self.mlp_scale):
            if scale is not None:
                nn.init.constant_(scale, self.layer_scale_init)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (*b, L, D) -> q (*b, L, heads, hd), k and v (*b, L, kv_heads, hd); QK-normed, not rotated."""
        h = self.input_norm(x)
        shape = h.shape[:-1]
        q = self.q_norm(self.q_proj(h).view(*shape, self.heads, self.head_dim))
        k = self.k_norm(self.k_proj(h).view(*shape, self.kv_heads, self.head_dim))
        v = self.v_proj(h).view(*shape, self.kv_heads, self.head_dim)
        return q, k, v

    def finish(self, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """Residual updates after attention. x (*b, L, D), attention (*b, L, heads·hd) -> (*b, L, D)."""
        update = self.o_proj(attention)
        x = x + (update if self.attention_scale is None else self.attention_scale * update)
        update = self.mlp(self.post_attention_norm(x))
        return x + (update if self.mlp_scale is None else self.mlp_scale * update)


def _expand_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, kv_heads, L, hd) -> (B, kv_heads·groups, L, hd), each KV head repeated for its query group."""
    if groups == 1:
        return x
    b, h, length, d = x.shape
    return x[:, :, None].expand(b, h, groups, length, d).reshape(b, h * groups, length, d)


_compiled_flex_attention = None


def _flex(q, k, v, block_mask: BlockMask) -> torch.Tensor:
    """flex attention, compiled once per process on CUDA (eager elsewhere: the unfused reference)."""
    global _compiled_flex_attention
    if q.device.type != "cuda":
        return flex_attention(q, k, v, block_mask=block_mask)
    if _compiled_flex_attention is None:
        _compiled_flex_attention = torch.compile(flex_attention, dynamic=True)
    return _compiled_flex_attention(q, k, v, block_mask=block_mask)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor | SampleBlocks | BlockMask | None,
) -> torch.Tensor:
    """Rotary + grouped-query attention. q (B, L, H, hd), k/v (B, L, Hkv, hd), cos/sin (B, L, hd);
    mask None (unmasked SDPA), bool (L, L) True = may attend (SDPA), SampleBlocks (SDPA per sample, B = 1) or a
    BlockMask (flex). -> (B, L, H·hd).

    Attention runs in the dtype of v (the projections' compute dtype: bf16 under autocast): q and k leave the
    QK-norm in fp32 when its weight is fp32, and are cast after the rotary. The unmasked path on CUDA in
    half precision (the geometry fast path) uses the flash kernel's native grouped-query attention; elsewhere
    the KV heads are repeated (the memory-efficient and math kernels, any dtype, any mask).
    """
    cos, sin = cos[:, None].to(q.dtype), sin[:, None].to(q.dtype)
    q = apply_rotary(q.transpose(1, 2), cos, sin).to(v.dtype)
    k = apply_rotary(k.transpose(1, 2), cos, sin).to(v.dtype)
    v = v.transpose(1, 2)
    if mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return out.transpose(1, 2).flatten(2)
    groups = q.shape[1] // k.shape[1]
    k, v = _expand_kv(k, groups), _expand_kv(v, groups)
    if mask is None:
        out = F.scaled_dot_product_attention(q, k, v)
    elif isinstance(mask, BlockMask):
        out = _flex(q, k, v, mask)
    elif isinstance(mask, SampleBlocks):
        q, k, v = (t.index_select(2, mask.rows).split(mask.sizes, dim=2) for t in (q, k, v))
        blocks = [F.scaled_dot_product_attention(*qkv, attn_mask=m) for *qkv, m in zip(q, k, v, mask.masks)]
        out = torch.cat(blocks, dim=2).index_select(2, mask.inverse)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).flatten(2)


class ExpertRouterLayer(nn.Module):
    """One trunk layer: a semantic expert (absent when `config.semantic` is False), a geometric expert
    and one shared attention."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.semantic = Expert(config, qk_norm=config.semantic_qk_norm, layer_scale=False) if config.semantic else None
        self.geometric = Expert(config, qk_norm=True, layer_scale=True)

    def forward_geometry(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Geometric tokens only. x (B, L, D), cos/sin (B or 1, L, hd) -> (B, L, D)."""
        expert = self.geometric
        if expert.frozen:
            x = x.detach()
        q, k, v = expert.qkv(x)
        cos, sin = cos.expand(x.shape[0], -1, -1), sin.expand(x.shape[0], -1, -1)
        return expert.finish(x, attention(q, k, v, cos, sin, mask=None))

    def forward_packed(
        self, x: torch.Tensor, split: int, cos: torch.Tensor, sin: torch.Tensor,
        mask: torch.Tensor | SampleBlocks | BlockMask,
    ) -> torch.Tensor:
        """A packed sequence: x (T, D) with the semantic tokens in x[:split] and the geometric tokens in
        x[split:]; cos/sin (T, hd); mask bool (T, T) True = may attend, SampleBlocks or a BlockMask. -> (T, D)."""
        parts = [(self.semantic, x[:split]), (self.geometric, x[split:])]
        if split > 0 and self.semantic is None:
            raise ValueError("ExpertRouterLayer.forward_packed: semantic tokens given to a model built without the semantic expert")
        parts = [(expert, xe.detach() if expert.frozen else xe) for expert, xe in parts if xe.shape[0] > 0]
        qkv = [expert.qkv(xe) for expert, xe in parts]
        q, k, v = (torch.cat([t[i] for t in qkv], dim=0).unsqueeze(0) for i in range(3))
        out = attention(q, k, v, cos[None], sin[None], mask)[0]
        outputs, offset = [], 0
        for expert, xe in parts:
            attended = out[offset : offset + xe.shape[0]]
            outputs.append(expert.finish(xe, attended.detach() if expert.frozen else attended))
            offset += xe.shape[0]
        return torch.cat(outputs, dim=0)


class ExpertRouterStack(nn.Module):
    """The trunk: `config.layers` layers and the per-expert final norms."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ExpertRouterLayer(config) for _ in range(config.layers))
        self.semantic_norm = RMSNorm(config.width, config.rms_eps) if config.semantic else None
        self.geometric_norm = RMSNorm(config.width, config.rms_eps)
        self.gradient_checkpointing = False  # set by G2VLM.set_gradient_checkpointing

    def _run(self, fn, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward_geometry(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) geometric tokens -> final-normed hidden states (B, L, D)."""
        for layer in self.layers:
            x = self._run(layer.forward_geometry, x, cos, sin)
        return self.geometric_norm(x)

    def forward_packed(
        self, x: torch.Tensor, split: int, cos: torch.Tensor, sin: torch.Tensor,
        mask: torch.Tensor | SampleBlocks | BlockMask,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (T, D) packed (semantic first) -> final-normed (semantic (split, D), geometric (T - split, D))."""
        for layer in self.layers:
            x = self._run(layer.forward_packed, x, split, cos, sin, mask)
        semantic = self.semantic_norm(x[:split]) if self.semantic_norm is not None else x[:0]
        return semantic, self.geometric_norm(x[split:])
