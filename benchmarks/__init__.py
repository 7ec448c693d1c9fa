"""g2vlm.benchmarks (`g2vlm bench ...`, `make bench-*`): evaluation protocols and speed benchmarks.

- reconstruction/: depth, relative pose and point maps with the literature's protocols (datasets, readers, frame
  maps, published numbers);
- spatial_qa/: SPAR-Bench, MindCube and OmniSpatial scoring of a checkpoint's or saved answers;
- speed/: training step, inference, data loading and metric speed;
- cli.py: the `g2vlm bench` command; report.py: tables and JSON with the environment, shared by all.
Results measured so far: RESULTS.md.
"""
