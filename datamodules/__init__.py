"""g2vlm.datamodules: WebDataset DataModules, the sample schema, transforms, shard writers and converters.

Multi-view clips (one WebDataset sample = one clip of one scene):
- `schema`: the KEY.meta.json record (`ClipMeta`), member names, validation (`SampleError` with a skip reason).
- `decoding`: JPEG, bit-exact 16-bit depth PNG, float .npy depth and mask codecs.
- `shard_writer`: `ShardWriter` (encoded bytes in, validated, size-rolled shards, index JSON).
- `clip_reader`: tolerant tar reading into validated `ClipRecord`s and decoded `Clip`s; `SkipLog` counters.
- `view_sampling`, `augmentation`: which frames a sample uses; crops/resizes with exact K updates, colour jitter.
- `clip_streams`: training (resampled, mixed, budget-batched) and validation (exact split) iterable datasets.
- `batch`: `MultiViewBatch`, the typed batch. `multiview`: `MultiViewDataModule`.
- `synthetic/`: procedural textured rooms with exact depth, cameras and object annotations.
- `shard_cli`: `g2vlm shard <dataset>` (synthetic now; one sub-command per converter).
"""
