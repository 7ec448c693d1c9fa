"""Speed benchmarks: the training step (`g2vlm bench train`: train.py, the LightningModules' own step), inference
(`g2vlm bench infer`: infer.py), data loading (`make bench-data`: data_throughput.py) and the depth / point-map
metrics (depth_metrics.py, pointmap_metrics.py)."""
