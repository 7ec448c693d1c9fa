"""The official input format of the geometric path, which imported official G²VLM weights need.

Two formats feed the same trunk and heads (`ModelConfig.official_input` chooses; model/config.py):

clean (ours, the default; `G2VLM.forward_geometry`): the trunk sees only the N·h·w DINO tokens of a sample,
    all through the geometric expert, in one unmasked attention; positions `shared` (every frame the same, so
    the model is permutation-equivariant) or `sequential`. DINO runs as a batched ViT, one frame per sequence.
    It is what our own training uses: nothing in it depends on a tokenizer or a prompt.

official (`recon_for_eval` of the official `modeling/g2vlm/g2vlm.py`, which every published number ran):
    1. a text prefix: `<|im_start|>` (the official "BOS") and the tokens of "Reconstruct the 3D scene.",
       run causally through the SEMANTIC expert (the official code caches its K/V first);
    2. per frame f: `<|vision_start|>`, the frame's h·w DINO tokens (GEOMETRIC expert), `<|vision_end|>`; the
       delimiters are text tokens and go through the SEMANTIC expert in the same attention call;
    3. every token of step 2 attends to the prefix and to all tokens of step 2 (bidirectional, all frames);
       the prefix does not see the frames;
    4. M-RoPE positions in reading order: the prefix 0 ... L-1 (text: one id on all three axes); frame f's
       `<|vision_start|>` at s_f = L + f·(E + 2) with E = max(h, w), its DINO tokens t = s_f + 1,
       h = s_f + 1 + row, w = s_f + 1 + col, its `<|vision_end|>` at s_f + 1 + E: the `sequential` layout with
       its gaps filled by the delimiters;
    5. DINO with the official varlen windows (model/dino_encoder.py; `dino_windows="frame"` turns it off);
    6. only the geometric tokens' final-normed states go to the heads.
    Why it matters: the released weights were trained with this sequence, and their geometric tokens attend to
    the prefix (a fixed text context and attention sink) and to the delimiters; fed the clean sequence, the same
    weights give different geometry (measured 3-13 % relative on points/depth with random weights).

Precision. On a GPU the official `recon_for_eval` runs under bf16 autocast and casts explicitly: DINO attention
in bf16, the trunk's residual stream in bf16, the three head decoders (point, camera, global point) under bf16
autocast, and only the pixel-shuffle heads, the camera head and the point transform in fp32. Our predictor
(g2vlm.inference) runs DINO and the trunk under bf16 autocast on a GPU (residual stream fp32, a
rounding difference) and keeps all heads in fp32 in both formats (the suite's rule). In fp32 on a CPU both
implementations compute the same function (tests/unit/test_model_official_parity.py: within 1e-4 relative).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from g2vlm.model.config import OfficialInputConfig
from g2vlm.model.expert_router import ExpertRouterLayer, attention
from g2vlm.model.rope import geometry_positions, text_positions

GEOMETRIC_TOKEN = -1  # `token_ids` entry of a DINO token in an OfficialLayout


@dataclass
class OfficialLayout:
    """One sample's official sequence in reading order (T = L + N·(h·w + 2) tokens).

    token_ids (T,): the text token id, or GEOMETRIC_TOKEN (-1) for a DINO token;
    positions (3, T): M-RoPE position ids (t, h, w);
    prompt_length: L, the causal text prefix at the start.
    """

    token_ids: torch.Tensor
    positions: torch.Tensor
    prompt_length: int

    def storage_order(self) -> torch.Tensor:
        """Reading-order indices in the order the model stores tokens: prefix, delimiters, DINO tokens. (T,)"""
        rest = torch.arange(self.prompt_length, self.token_ids.numel(), device=self.token_ids.device)
        geometric = self.token_ids[rest] == GEOMETRIC_TOKEN
        return torch.cat([torch.arange(self.prompt_length, device=rest.device), rest[~geometric], rest[geometric]])


def official_layout(official: OfficialInputConfig, num_frames: int, grid_h: int, grid_w: int,
                    device: torch.device | str = "cpu") -> OfficialLayout:
    """The official sequence of `num_frames` frames of grid_h × grid_w DINO tokens (module docstring)."""
    prompt = torch.tensor(official.prompt_ids, dtype=torch.long, device=device)
    length = prompt.numel()
    frame_tokens = grid_h * grid_w
    geometric, _ = geometry_positions(num_frames, grid_h, grid_w, length, "sequential", device=device)
    stride = max(grid_h, grid_w) + 2
    ids, positions = [prompt], [text_positions(length, 0, device)]
    for frame in range(num_frames):
        start = length + frame * stride
        ids += [torch.tensor([official.vision_start_id], device=device),
                torch.full((frame_tokens,), GEOMETRIC_TOKEN, device=device),
                torch.tensor([official.vision_end_id], device=device)]
        positions += [text_positions(1, start, device), geometric[:, frame * frame_tokens:(frame + 1) * frame_tokens],
                      text_positions(1, start + stride - 1, device)]
    return OfficialLayout(torch.cat(ids), torch.cat(positions, dim=1), length)


def _layer(layer: ExpertRouterLayer, prompt: torch.Tensor, delimiters: torch.Tensor, geometric: torch.Tensor,
           cos: torch.Tensor, sin: torch.Tensor, causal: torch.Tensor):
    """One trunk layer on the official sequence, stored as prompt (B, L, D), delimiters (B, 2N, D) and geometric
    tokens (B, N·P, D); cos/sin (B, T, hd) in that storage order; causal (L, L) bool."""
    semantic, geometric_expert = layer.semantic, layer.geometric
    parts = [(semantic, prompt), (semantic, delimiters), (geometric_expert, geometric)]
    parts = [(expert, x.detach() if expert.frozen else x) for expert, x in parts]
    qkv = [expert.qkv(x) for expert, x in parts]
    length, delimiter_count = prompt.shape[1], delimiters.shape[1]
    q, k, v = (torch.cat([t[i] for t in qkv], dim=1) for i in range(3))
    # rows after the prefix attend to everything (prefix, delimiters, all frames); the prefix rows of this call
    # are discarded and recomputed causally below (they are L of T rows)
    everything = attention(q, k, v, cos, sin, mask=None)
    prefix = attention(*qkv[0], cos[:, :length], sin[:, :length], mask=causal)
    attended = [prefix, everything[:, length:length + delimiter_count], everything[:, length + delimiter_count:]]
    return tuple(expert.finish(x, out.detach() if expert.frozen else out)
                 for (expert, x), out in zip(parts, attended))


def official_geometric_hidden(model, images: torch.Tensor) -> torch.Tensor:
    """images (B, N, 3, H, W) in [0, 1] -> final-normed geometric hidden states (B, N·h·w, D) of the official
    format. `model` is a G2VLM whose config has `official_input` set."""
    config = model.config
    official = config.official_input
    b, n, _, height, width = images.shape
    patch = config.dino.patch_size
    gh, gw = height // patch, width // patch
    if official.dino_windows == "official":
        dino = model.dino.forward_official_windows(images)  # (B, N, P, C)
    else:
        dino = model.dino(images.flatten(0, 1))
    geometric = model.dino_projector(dino).reshape(b, n * gh * gw, -1)
    # the layout is a few hundred host-side integers: built on the CPU (also when the model is on the meta device
    # for FLOP counting), then copied
    layout = official_layout(official, n, gh, gw, "cpu")
    order = layout.storage_order()
    ids = layout.token_ids[order]
    length = layout.prompt_length
    text = model.embed_tokens(ids[ids != GEOMETRIC_TOKEN].to(images.device))  # (L + 2N, D): prefix, delimiters
    text = text[None].expand(b, -1, -1).to(geometric.dtype)
    prompt, delimiters = text[:, :length], text[:, length:]
    cos, sin = model._rope(layout.positions[:, order].to(images.device))
    cos, sin = cos[None].expand(b, -1, -1), sin[None].expand(b, -1, -1)
    causal = torch.ones(length, length, dtype=torch.bool, device=images.device).tril()
    for layer in model.trunk.layers:
        args = (layer, prompt, delimiters, geometric, cos, sin, causal)
        if model.trunk.gradient_checkpointing and torch.is_grad_enabled():
            prompt, delimiters, geometric = checkpoint(_layer, *args, use_reentrant=False)
        else:
            prompt, delimiters, geometric = _layer(*args)
    return model.trunk.geometric_norm(geometric)
