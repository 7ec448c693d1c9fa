"""g2vlm.datamodules: the data side, one sub-package per concept.

- `shards/`: the shard format every reader and writer shares: the clip schema (`schema.ClipMeta`, member names,
  `SampleError` skip reasons), codecs (`decoding`), tar reading (`reader`), tar and clip-shard writing
  (`tar_writer`, `writer`), and which shards each rank and worker reads (`streams`).
- `multiview/`: multi-view clip batches for geometry training (`datamodule.MultiViewDataModule`).
- `qa/`: spatial-QA samples and batches for the reasoning stage (`datamodule.QADataModule`).
- `convert/`: raw datasets -> shards, and `cli`, the `g2vlm shard <dataset>` command.
- `synthetic/`: procedural textured rooms with exact depth, cameras, objects and spatial QA.
- `augmentation`: crops and resizes with exact intrinsics updates, colour jitter (used by all of the above).

`multiview/` and `qa/` use `shards/`, never each other.
"""
