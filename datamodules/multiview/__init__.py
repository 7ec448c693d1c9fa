"""Multi-view clip batches for geometry training: view sampling, batch assembly, streams, the DataModule."""
