"""The model: expert-router backbone, encoders, π³-style heads, presets and weight loading."""
