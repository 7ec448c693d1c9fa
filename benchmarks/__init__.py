"""g2vlm.benchmarks: evaluation protocols and speed benchmarks (`make bench-*`)."""
