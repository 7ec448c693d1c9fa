"""Time the depth metrics (`DepthMetrics.update`) of `g2vlm bench depth` without a checkpoint.

The GT is the synthetic benchmark's (20 held-out rooms × 10 views, 64×64, every pixel valid); the prediction is
model-like: the GT at an arbitrary scale and shift with 20 % multiplicative noise and 2 % gross outliers. Both
protocols run on the whole set in one update, as the benchmark groups them:
- `mono`: 200 images, one IRLS-L1 scale each (the official 10 Weiszfeld steps);
- `video`: 20 sequences, one exact L1 scale-and-shift each.
`--holes` marks a quarter of the GT invalid (the masked path real datasets take). Process CPU time, the first
(cold: fresh buffers, first kernel calls) and the best of the repeats, in milliseconds:

    python benchmarks/speed/depth_metrics.py --threads 1 [--holes] [--repeats 5]

Measured 2026-11-21 on the project's shared 2-core CPU (load average 4–5), 1 thread: mono first 15–16 ms, best
14–15 ms (with --holes 19 / 16 ms); video 92–125 ms — the gross outliers here are far out in pred, points of high
leverage for an L1 line, so the exact fit needs more steps than on the demo model's own predictions (47–50 ms
there, via `g2vlm bench depth --mode video`). Before the 2026-11-21 rewrite the same updates on the demo model's
predictions took 48–94 ms (mono) and 190–420 ms (video). The model's forward on the 200 images takes 320–420 ms
of CPU; see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from g2vlm.benchmarks.reconstruction.synthetic_set import synthetic_clips
from g2vlm.metrics.depth import DepthMetrics


def model_like_prediction(gt: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pred = 0.37 * gt * (1 + 0.2 * torch.randn(gt.shape, generator=generator)).clamp(min=0.05) + 0.4
    outliers = torch.rand(gt.shape, generator=generator) < 0.02
    return torch.where(outliers, 10 * torch.rand(gt.shape, generator=generator), pred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holes", action="store_true", help="a quarter of the GT pixels invalid (the masked path)")
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per mode (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    gt = torch.from_numpy(np.stack([clip.depth_m for clip in synthetic_clips()]))  # (scenes, views, H, W)
    if args.holes:
        gt = torch.where(torch.rand(gt.shape, generator=torch.Generator().manual_seed(args.seed)) < 0.25, 0.0, gt)
    pred = model_like_prediction(gt, args.seed)
    report = {"threads": torch.get_num_threads(), "holes": args.holes, "valid_pixels": int((gt > 0).sum())}
    for mode, alignment, units in (("mono", "scale", (-1, *gt.shape[-2:])), ("video", "scale_shift", gt.shape)):
        cpu_ms, scores = [], {}
        for _ in range(args.repeats):
            metric = DepthMetrics(alignment=alignment)
            start = time.process_time()
            metric.update(pred.reshape(units), gt.reshape(units))
            cpu_ms.append(1e3 * (time.process_time() - start))
            scores = metric.compute()
        report[mode] = {"units": int(pred.reshape(units).shape[0]), "cpu_ms_first": round(cpu_ms[0], 2),
                        "cpu_ms_best": round(min(cpu_ms), 2), "cpu_ms_all": [round(t, 2) for t in cpu_ms],
                        "abs_rel": round(float(scores["abs_rel"]), 6), "delta_1": round(float(scores["delta_1"]), 6)}
    report["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
