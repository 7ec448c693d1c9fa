"""g2vlm: a PyTorch Lightning experiment suite for geometry-grounded vision-language models."""

__version__ = "0.1.0"
