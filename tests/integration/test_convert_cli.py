"""`g2vlm shard scannet` as a user runs it: converts, reports the skips, resumes, refuses a wrong root."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from g2vlm.datamodules.shards.decoding import encode_depth_png


def write_exported_scannet(root, frames: int = 4) -> None:
    """One exported scene with random content (the converters' geometry is tested in the unit tests)."""
    rng = np.random.default_rng(0)
    folder = root / "scene0707_00"
    for sub in ("color", "depth", "pose", "intrinsic"):
        (folder / sub).mkdir(parents=True)
    for frame in range(frames):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(folder / "color" / f"{frame}.jpg")
        (folder / "depth" / f"{frame}.png").write_bytes(encode_depth_png(rng.integers(500, 4000, (15, 20), dtype=np.uint16)))
        pose = np.eye(4)
        pose[:3, 3] = (0.1 * frame, 0.0, 0.0)
        np.savetxt(folder / "pose" / f"{frame}.txt", pose)
    (folder / "pose" / "2.txt").write_text("\n".join(["nan nan nan nan"] * 4))
    np.savetxt(folder / "intrinsic" / "intrinsic_depth.txt", [[20, 0, 9.5, 0], [0, 20, 7, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


@pytest.mark.integration
def test_g2vlm_shard_scannet(tmp_path, console_script):
    write_exported_scannet(tmp_path / "raw")
    args = ["shard", "scannet", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
            "--frame-stride", "1", "--clip-frames", "3", "--no-progress"]
    first = console_script("g2vlm", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "1 found, 1 converted now" in first.stdout and "clips: 1, keyframes: 3" in first.stdout
    assert "skipped 1 frames with a non-finite" in first.stdout and "scene0707_00/pose/2.txt" in first.stdout
    assert (tmp_path / "out" / "scannet-train-000000.tar").is_file()
    second = console_script("g2vlm", *args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "0 converted now, 1 already done" in second.stdout and "(0 written now)" in second.stdout
    wrong = console_script("g2vlm", "shard", "scannet", "--root", str(tmp_path), "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert wrong.returncode == 2 and "does not look like an exported ScanNet" in wrong.stderr
    assert "intrinsic/intrinsic_depth.txt" in wrong.stderr
