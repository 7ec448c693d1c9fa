"""The model: expert-router backbone, encoders, π³-style heads, presets and weight loading.

Modules (import them directly; this package imports nothing heavy on its own):
    config          ModelConfig and the presets `tiny`, `small`, `g2vlm-2b` (`model_config(name)`)
    g2vlm           G2VLM: `forward_geometry(images)` (fast path) and `forward(PackedBatch)` (joint path),
                    freezing by group, per-part parameter counts and groups
    expert_router   the two-expert trunk with one shared attention (SDPA / flex)
    packing         Text / VitImage / Geometry segments -> PackedBatch (positions, mask inputs, labels)
    rope            Qwen2-VL M-RoPE, geometric position layouts, RoPE2D of the heads
    dino_encoder    DINOv2-with-registers through timm, HF -> timm key conversion
    vision_tower    the Qwen2-VL vision tower (transformers) and its patch layout
    heads           local points, camera, global points, confidence
    outputs         GeometryOutput, ModelOutput
    generation      answer generation with a KV cache (greedy or sampled), `generate(model, segments, ...)`
    official_format the official input format of the geometry path (imported official weights) vs the clean one
    weights         offline strict loading (Qwen2-VL folder, DINOv2, our safetensors checkpoints)
    official_weights  the official G²VLM checkpoint's key map and streaming strict import
    import_weights  the `g2vlm import-weights` tool
"""
