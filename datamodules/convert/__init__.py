"""Raw datasets -> shards (ScanNet, Co3Dv2, DL3DV, SPAR-7M, SPAR-Bench) and the `g2vlm shard` command."""
