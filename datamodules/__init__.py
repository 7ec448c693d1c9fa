"""g2vlm.datamodules: WebDataset DataModules, the sample schema, transforms, shard writers and converters."""
