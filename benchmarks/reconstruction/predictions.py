"""Saved predictions of any model, one float32 `.npy` per GT frame, scored as if the model had just run.

Layout: `DIR/[<seq>/]<stem>.npy` (float32, or float64 kept as such, as the official code keeps it), where `<seq>` is the sequence name (none for NYU-v2) and `<stem>` the GT
frame's image stem. The official evaluation scripts' naming `<stem>depth.npy` is accepted too, so π³ / VGGT /
G²VLM outputs score as they are. When DIR holds a folder named after the dataset (`DIR/sintel/...`, as the
official `output_dir/<model>/<dataset>/` does), that folder is used. Contents per benchmark:
- depth: (h, w) depth at any resolution (resized bicubically to the GT);
- point maps: (h, w, 3) world points (any common frame per sequence; resized bilinearly to the GT);
- pose: (4, 4) camera_to_world, OpenCV axes (any common world frame per sequence).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from g2vlm.inference import FrameError

SUFFIXES = ("", "depth")


class PredictionFolder:
    def __init__(self, root: str | Path, dataset_names: tuple[str, ...]) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"PredictionFolder: predictions folder {root} does not exist")
        self.candidates = [root / name for name in dataset_names if (root / name).is_dir()] + [root]
        self.root = self.candidates[0]

    def path(self, sequence: str | None, stem: str) -> Path | None:
        folder = self.root / sequence if sequence else self.root
        for suffix in SUFFIXES:
            candidate = folder / f"{stem}{suffix}.npy"
            if candidate.is_file():
                return candidate
        return None

    def require(self, frames: list[tuple[str | None, str]]) -> None:
        """Pick the folder (DIR/<dataset> or DIR) that holds every frame's prediction; fail before any work
        when none does, naming the first missing frames."""
        shortfalls = []
        for candidate in self.candidates:
            self.root = candidate
            missing = [f"{sequence}/{stem}" if sequence else stem for sequence, stem in frames
                       if self.path(sequence, stem) is None]
            if not missing:
                return
            shortfalls.append((len(missing), candidate, missing))
        count, self.root, missing = min(shortfalls, key=lambda item: item[0])
        shown = ", ".join(missing[:5]) + (", ..." if count > 5 else "")
        raise ValueError(f"PredictionFolder.require: {count} of {len(frames)} frames have no prediction "
                         f"[<seq>/]<stem>.npy (or <stem>depth.npy) in {self.root}: {shown}")

    def load(self, sequence: str | None, stem: str, kind: str) -> np.ndarray:
        """The prediction of one frame (float64 stays float64, anything else becomes float32): kind `depth` ->
        (h, w); `points` -> (h, w, 3);
        `pose` -> (4, 4) (a (3, 4) matrix gets the row 0 0 0 1). Singleton dims are squeezed."""
        path = self.path(sequence, stem)
        if path is None:
            raise FrameError(f"{self.root}: no prediction for {sequence + '/' if sequence else ''}{stem}")
        try:
            values = np.squeeze(np.load(path, allow_pickle=False))
            values = values.astype(np.float64 if values.dtype == np.float64 else np.float32)
        except (OSError, ValueError, EOFError, TypeError) as error:
            raise FrameError(f"{path}: not a readable numeric .npy array ({type(error).__name__}: {error})") from None
        if kind == "pose" and values.shape == (3, 4):
            values = np.concatenate([values, np.array([[0, 0, 0, 1]], dtype=values.dtype)])
        valid = {"depth": values.ndim == 2, "points": values.ndim == 3 and values.shape[-1] == 3,
                 "pose": values.shape == (4, 4)}[kind]
        if not valid:
            expected = {"depth": "(h, w)", "points": "(h, w, 3)", "pose": "(4, 4)"}[kind]
            raise FrameError(f"{path}: expected a {expected} {kind} array, got shape {values.shape}")
        return values
