"""`python -m g2vlm.benchmarks.reconstruction.write_frame_maps`: write the frame-sampling maps (the rules and the
shipped maps: g2vlm.benchmarks.reconstruction.frame_maps).

    python -m g2vlm.benchmarks.reconstruction.write_frame_maps          # the shipped maps, from frame_maps' tables
    python -m g2vlm.benchmarks.reconstruction.write_frame_maps --dataset co3dv2 --root /data/co3dv2  # from a root

A command of its own, so that the map module (imported by the dataset readers) imports no reader.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from g2vlm.benchmarks.reconstruction.frame_maps import MAP_DIR, RULES, SHIPPED_LENGTHS, sample_frames, write_map
from g2vlm.benchmarks.reconstruction.pointmap_datasets import POINT_MAP_DATASET_NAMES
from g2vlm.benchmarks.reconstruction.pointmap_datasets import sequence_lengths as point_map_lengths
from g2vlm.benchmarks.reconstruction.pose_datasets import sequence_lengths as pose_lengths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(RULES), help="write this dataset's map from --root")
    parser.add_argument("--root", help="the dataset's prepared folder")
    parser.add_argument("--out", default=str(MAP_DIR), help=f"output folder (default {MAP_DIR})")
    args = parser.parse_args(argv)
    if args.dataset is None:
        for dataset, lengths in SHIPPED_LENGTHS.items():
            print(write_map(dataset, sample_frames(dataset, lengths), Path(args.out)))
        return 0
    if args.root is None:
        parser.error("--dataset needs --root")
    lengths = point_map_lengths(args.dataset, args.root) if args.dataset in POINT_MAP_DATASET_NAMES \
        else pose_lengths(args.dataset, args.root)
    print(write_map(args.dataset, sample_frames(args.dataset, lengths), Path(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
