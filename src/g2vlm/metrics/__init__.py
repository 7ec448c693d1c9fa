"""Evaluation metrics as torchmetrics `Metric`s: depth, relative pose, point maps, spatial QA."""
