"""Spatial-QA samples: schema, markers, chat template, tokenizer, shards, batches, the DataModule."""
