"""LightningModules: `GeometryPretraining` and `SpatialReasoning`."""
