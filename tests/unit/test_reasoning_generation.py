"""Generation: the KV-cached path equals the full recomputation token for token (greedy and sampled)."""

from __future__ import annotations

import pytest
import torch

from g2vlm.model.config import model_config
from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.generation import generate, generate_uncached, prefill
from g2vlm.model.packing import Geometry, Text, VitImage, pack


@pytest.fixture(scope="module")
def model() -> G2VLM:
    torch.manual_seed(0)
    model = G2VLM(model_config("tiny")).eval()
    with torch.no_grad():  # LayerScale and the zero-init projector away from 0: the geometry tokens matter
        for layer in model.trunk.layers:
            layer.geometric.attention_scale.fill_(1.0)
            layer.geometric.mlp_scale.fill_(1.0)
        model.dino_projector.weight.normal_(0, 0.2)
    return model


def _prompt(seed: int = 0, frames: torch.Tensor | None = None) -> list:
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(2, 3, 16, 16, generator=g) if frames is None else frames
    return [Text(torch.randint(0, 100, (6,), generator=g)), Geometry(frames), Text(torch.randint(0, 100, (2,), generator=g)),
            VitImage(torch.rand(3, 16, 24, generator=g)), Text(torch.randint(0, 100, (5,), generator=g))]


def test_prefill_logits_equal_the_packed_forward(model):
    segments = _prompt()
    logits, cache = prefill(model, segments)
    with torch.no_grad():
        expected = model(pack([segments], model.config)).logits[-1]
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # 6 + 1 + 2 + 2x3 merged ViT (+ max(2, 3) positions) ... the next position follows the last text token
    batch = pack([segments], model.config)
    assert cache.position == int(batch.position_ids[0, batch.text_index[-1]]) + 1
    assert cache.keys[0].shape[2] == batch.num_tokens


def test_cached_greedy_generation_equals_uncached(model):
    for seed in range(2):
        segments = _prompt(seed)
        cached = generate(model, segments, stop_token=-1, max_new_tokens=12)
        assert cached == generate_uncached(model, segments, stop_token=-1, max_new_tokens=12)
        assert len(cached) == 12
    # the geometry frames reach the answer through the cache: other frames, other logits
    other = _prompt(0, frames=torch.zeros(2, 3, 16, 16))
    assert (prefill(model, other)[0] - prefill(model, _prompt(0))[0]).abs().max() > 1e-3


def test_cached_sampling_equals_uncached_and_stops_at_the_stop_token(model):
    segments = _prompt(1)
    sampled = generate(model, segments, -1, 10, temperature=1.5, top_k=20, generator=torch.Generator().manual_seed(5))
    again = generate_uncached(model, segments, -1, 10, temperature=1.5, top_k=20,
                              generator=torch.Generator().manual_seed(5))
    assert sampled == again
    greedy = generate(model, segments, -1, 10)
    assert sampled != greedy  # sampling is not greedy decoding in disguise
    stop = greedy[3]
    first_stop = greedy.index(stop)
    assert generate(model, segments, stop_token=stop, max_new_tokens=10) == greedy[:first_stop]
