"""Answer generation with a KV cache (reference g2vlm-official.md §1.7, `chat_with_recon`).

    tokens = generate(model, segments, stop_token=tokens.im_end, max_new_tokens=100)        # greedy
    tokens = generate(model, segments, stop_token, 100, temperature=0.7, top_k=20, generator=g)

`segments` is one sample's prompt in reading order (model/packing.py), ending with `<|im_start|>assistant\\n`.
Prefill runs the packed prompt once — geometry frames through DINO and the geometric expert, images through the
ViT, text — with the joint path's mask (each image and the geometry span bidirectional, text causal), and
keeps every layer's rotated keys and values. Each new token is one semantic-expert step that attends to the
whole cache (everything before it in reading order) at the next running position. Decoding stops at
`stop_token` (not returned) or after `max_new_tokens`. Geometry heads do not run (as in the official chat).

`generate_uncached` re-runs the full packed forward for every new token: the reference the cached path is
tested against, token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.packing import Segment, Text, pack
from g2vlm.model.rope import apply_rotary


@dataclass
class KVCache:
    """Per layer: rotated keys and values (1, kv_heads, T, head_dim); `position`: the next token's running index."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    position: int


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q (1, H, L, hd), k/v (1, Hkv, T, hd) already rotated -> (L, H·hd)."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out[0].transpose(0, 1).flatten(1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (L, heads, hd), cos/sin (L, hd) -> rotated (1, heads, L, hd)."""
    x = x.transpose(0, 1)[None]
    return apply_rotary(x, cos[None, None].to(x.dtype), sin[None, None].to(x.dtype))


@torch.no_grad()
def prefill(model: G2VLM, segments: list[Segment]) -> tuple[torch.Tensor, KVCache]:
    """Run one sample's prompt -> (logits of its last text token (vocab,), the KV cache)."""
    if not segments or not isinstance(segments[-1], Text) or not segments[-1].ids.numel():
        raise ValueError("prefill: the prompt must end with text (the assistant turn's opening)")
    batch = pack([segments], model.config).to(model.dino_projector.weight.device)
    x = model.embed(batch)
    cos, sin = model._rope(batch.position_ids)
    mask = batch.dense_mask()
    split = batch.num_semantic
    keys, values = [], []
    for layer in model.trunk.layers:
        parts = [(expert, xe) for expert, xe in ((layer.semantic, x[:split]), (layer.geometric, x[split:]))
                 if xe.shape[0] > 0]
        qkv = [expert.qkv(xe) for expert, xe in parts]
        q, k, v = (torch.cat([t[i] for t in qkv], dim=0) for i in range(3))
        q, k, v = _rotate(q, cos, sin), _rotate(k, cos, sin), v.transpose(0, 1)[None]
        keys.append(k)
        values.append(v)
        out = _attend(q, k, v, mask)
        outputs, offset = [], 0
        for expert, xe in parts:
            outputs.append(expert.finish(xe, out[offset : offset + xe.shape[0]]))
            offset += xe.shape[0]
        x = torch.cat(outputs, dim=0)
    last_text = batch.text_index[-1]
    logits = model.lm_head(model.trunk.semantic_norm(x[last_text]))
    return logits, KVCache(keys, values, int(batch.position_ids[0, last_text]) + 1)


@torch.no_grad()
def decode_step(model: G2VLM, token: int, cache: KVCache) -> torch.Tensor:
    """Feed one text token at the cache's next position; extend the cache -> next-token logits (vocab,)."""
    device = model.embed_tokens.weight.device
    x = model.embed_tokens(torch.tensor([token], device=device))  # (1, D)
    cos, sin = model._rope(torch.full((3, 1), cache.position, device=device))
    for index, layer in enumerate(model.trunk.layers):
        q, k, v = layer.semantic.qkv(x)
        k = torch.cat([cache.keys[index], _rotate(k, cos, sin)], dim=2)
        v = torch.cat([cache.values[index], v.transpose(0, 1)[None]], dim=2)
        cache.keys[index], cache.values[index] = k, v
        x = layer.semantic.finish(x, _attend(_rotate(q, cos, sin), k, v, None))
    cache.position += 1
    return model.lm_head(model.trunk.semantic_norm(x[0]))


def next_token(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> int:
    """Greedy (temperature 0) or sampled from softmax(logits / temperature), optionally among the top k."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None:
        threshold = logits.topk(min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    probabilities = logits.softmax(-1)
    return int(torch.multinomial(probabilities.cpu(), 1, generator=generator))


def generate(model: G2VLM, segments: list[Segment], stop_token: int, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, generator: torch.Generator | None = None) -> list[int]:
    """New token ids after the prompt (without the stop token), with the KV cache."""
    logits, cache = prefill(model, segments)
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        token = next_token(logits, temperature, top_k, generator)
        if token == stop_token:
            break
        tokens.append(token)
        if len(tokens) < max_new_tokens:
            logits = decode_step(model, token, cache)
    return tokens


@torch.no_grad()
def generate_uncached(model: G2VLM, segments: list[Segment], stop_token: int, max_new_tokens: int,
                      temperature: float = 0.0, top_k: int | None = None,
                      generator: torch.Generator | None = None) -> list[int]:
    """The same as `generate`, recomputing the whole packed forward for every token (the reference)."""
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        extra = [Text(torch.tensor(tokens, dtype=torch.long))] if tokens else []
        logits = model(pack([list(segments) + extra], model.config)).logits[-1]
        token = next_token(logits, temperature, top_k, generator)
        if token == stop_token:
            break
        tokens.append(token)
    return tokens
