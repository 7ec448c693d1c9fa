"""The shard format: clip schema, codecs, tar reading and writing, shard selection per rank and worker."""
