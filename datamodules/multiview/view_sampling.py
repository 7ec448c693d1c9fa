"""Which stored frames of a clip a sample uses.

Training (reference g2vlm-official.md §4.3): a random reference frame, the other views drawn from a window of
±`window` frames around it (shifted to stay inside the clip; the whole clip when `window` is None), without
replacement when the window is large enough; then the order is shuffled. Validation: evenly spaced frames,
deterministic.
"""

from __future__ import annotations

import numpy as np


def sample_training_views(num_frames: int, num_views: int, rng: np.random.Generator, window: int | None) -> list[int]:
    """`num_views` frame indices of a clip with `num_frames` frames, in shuffled order."""
    if num_frames < 1 or num_views < 1:
        raise ValueError(f"sample_training_views: need num_frames and num_views >= 1, got {num_frames}, {num_views}")
    reference = int(rng.integers(num_frames))
    span = num_frames if window is None else min(num_frames, 2 * window + 1)
    start = min(max(reference - (span - 1) // 2, 0), num_frames - span)
    others = [i for i in range(start, start + span) if i != reference]
    if len(others) >= num_views - 1:  # choosing positions in `others` draws exactly as choosing from it
        picks = [others[i] for i in rng.choice(len(others), num_views - 1, replace=False).tolist()] if num_views > 1 else []
    else:  # a short clip: every frame once, then repeats
        picks = others + rng.choice(range(start, start + span), num_views - 1 - len(others), replace=True).tolist()
    views = [reference, *picks]
    rng.shuffle(views)
    return [int(i) for i in views]


def evenly_spaced_views(num_frames: int, num_views: int) -> list[int]:
    """`num_views` indices spread over [0, num_frames - 1] (repeats only if the clip is shorter)."""
    return np.round(np.linspace(0, num_frames - 1, num_views)).astype(int).tolist()
