"""Time the point-map metrics (Umeyama + ICP + Acc/Comp + normals + NC) on a synthetic room scan.

The GT is an analytic box room seen by N cameras (every pixel valid). The prediction is either
- `noisy` (default): the GT under a random similarity transform plus Gaussian noise and a few outliers, so the
  run exercises alignment, ICP and all nearest-neighbour queries the way a real evaluation does; or
- `collapsed`: what an untrained model gives — every frame the same near-constant depth plane in its own camera
  frame (identity poses); after the Sim(3) alignment it is a small blob far from the GT walls, the slow case
  of nearest-neighbour search.

    python benchmarks/speed/pointmap_metrics.py --points 200000 [--prediction collapsed]

Measured on the project's shared 2-core CPU (load average 5–7, so wall time is about twice the CPU time):
200,976 points, noisy: 7.4–7.8 s of CPU with --threads 1 (15–16 s wall), 9–10 s of CPU with 2 threads;
collapsed: 41k points 6 s of CPU, 200k points 132 s of CPU — queries far from a surface are the slow case
of kd-tree search (see g2vlm.geometry.nearest_neighbors).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from g2vlm.geometry.camera import se3_from_rotation_translation, unproject_depth
from g2vlm.geometry.rotation import rotation_from_9d
from g2vlm.metrics.point_map import PointMapMetrics

ROOM_SIZE_M = (4.0, 3.0, 2.5)  # x, y, z extents of the box room


def room_depth(camera_to_world: torch.Tensor, K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """z-depth (N, H, W) of the box room's walls seen by cameras (N, 4, 4) with intrinsics K (3, 3)."""
    rays_camera = unproject_depth(torch.ones(height, width), K)  # (H, W, 3), z = 1
    rotation, centre = camera_to_world[:, :3, :3], camera_to_world[:, :3, 3]
    rays = torch.einsum("nij,hwj->nhwi", rotation, rays_camera)  # world directions, camera z = 1
    best = torch.full(rays.shape[:-1], float("inf"))
    for axis, size in enumerate(ROOM_SIZE_M):
        for wall in (0.0, size):
            t = (wall - centre[:, axis, None, None]) / rays[..., axis]
            best = torch.where((t > 1e-6) & (t < best), t, best)
    return best  # the ray parameter with camera z = 1 is the z-depth


def make_scan(
    points: int, frames: int, noise_m: float, seed: int, prediction: str = "noisy"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    side = max(int(math.sqrt(points / frames)), 4)
    height, width = side, math.ceil(points / frames / side)
    K = torch.tensor([[0.8 * width, 0.0, (width - 1) / 2], [0.0, 0.8 * width, (height - 1) / 2], [0.0, 0.0, 1.0]])
    yaw = torch.linspace(0, 2 * math.pi, frames + 1)[:-1]
    poses = []
    for angle in yaw.tolist():
        # camera z (forward) horizontal at `angle`, y down (-world z), x = y × z
        forward = torch.tensor([math.cos(angle), math.sin(angle), 0.0])
        down = torch.tensor([0.0, 0.0, -1.0])
        right = torch.linalg.cross(down, forward)
        rotation = torch.stack([right, down, forward], dim=-1)
        centre = torch.tensor([2.0, 1.5, 1.2]) + 0.3 * torch.randn(3, generator=generator)
        poses.append(se3_from_rotation_translation(rotation, centre))
    camera_to_world = torch.stack(poses)
    depth = room_depth(camera_to_world, K, height, width)
    gt = unproject_depth(depth, K.expand(frames, 3, 3), camera_to_world)
    valid = torch.isfinite(depth)
    if prediction == "collapsed":
        flat = 1.0 + 0.01 * torch.randn(height, width, generator=generator)
        return unproject_depth(flat, K).expand(frames, height, width, 3).clone(), gt, valid
    rotation = rotation_from_9d(torch.randn(9, generator=generator))
    pred = 1.7 * gt @ rotation.T + torch.tensor([0.5, -1.0, 2.0])
    pred = pred + noise_m * 1.7 * torch.randn(pred.shape, generator=generator)
    outliers = torch.rand(pred.shape[:-1], generator=generator) < 0.01
    pred[outliers] += torch.randn(int(outliers.sum()), 3, generator=generator)
    return pred, gt, valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=200_000, help="approximate number of valid points (default 200000)")
    parser.add_argument("--frames", type=int, default=8, help="views in the sequence (default 8)")
    parser.add_argument("--prediction", choices=("noisy", "collapsed"), default="noisy",
                        help="noisy: GT under a similarity plus noise and outliers (default); collapsed: an untrained model's")
    parser.add_argument("--noise-m", type=float, default=0.01, help="Gaussian noise of the noisy prediction, metres (default 0.01)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs; the best is reported (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    pred, gt, valid = make_scan(args.points, args.frames, args.noise_m, args.seed, args.prediction)
    times, cpu_times = [], []
    for _ in range(args.repeats):
        metric = PointMapMetrics()
        start, cpu_start = time.perf_counter(), time.process_time()
        metric.update(pred, gt, valid)
        scores = metric.compute()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    report = {
        "points": int(valid.sum()),
        "frames": args.frames,
        "prediction": args.prediction,
        "threads": torch.get_num_threads(),
        "seconds_best": round(min(times), 3),
        "seconds_all": [round(t, 3) for t in times],
        "cpu_seconds_all": [round(t, 3) for t in cpu_times],  # process CPU time: robust to a shared machine
        "load_average_1min": round(os.getloadavg()[0], 2),
        "scores": {name: round(float(value), 5) for name, value in scores.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
