"""Frame-sampling maps: which frames of each sequence the multi-view benchmarks use, fixed so runs compare.

Rules (reference g2vlm-official.md §5.3–5.4, data-and-benchmarks.md §6–7):
- `stride k` (point maps): frames 0, k, 2k, ... < n (numpy `arange(0, n, k)`): 7-Scenes k = 40 (the
  paper's dense setting) or 200 (sparse), NRGBD 100 (dense) or 500 (sparse), ETH3D 5, DTU 5.
- `random 10, seed 42` (pose): `numpy.random.seed(42)` once per dataset, then, for every sequence in the
  reader's order, `numpy.random.choice(n, 10, replace=False)` (legacy global RandomState, draw order kept);
  sequences with fewer than 10 frames are left out. Co3Dv2 order: the 41 training categories then the 10
  test categories (each alphabetical), sequences in the annotation file's order; RealEstate10K: the order
  of the official list `frame_maps/re10k_test_1719.txt` (shipped; 1,719 sequences, sorted).
- The synthetic set uses every view of every scene (no map).

Shipped maps (benchmarks/reconstruction/frame_maps/<dataset>_<rule>.json, {"dataset", "rule", "sequences": {name: [ids]}})
exist where the sequence lengths are facts independent of a local copy: 7-Scenes (18 test sequences, 1000
frames each, the stairs sequences 500) and DTU (22 test scans of 49 images). Regenerate them with

    python -m g2vlm.benchmarks.reconstruction.write_frame_maps          # the shipped maps, from the tables below
    python -m g2vlm.benchmarks.reconstruction.write_frame_maps --dataset co3dv2 --root /data/co3dv2  # from a root

The second form writes the map of a dataset whose lengths are only known from the data (NRGBD, ETH3D,
Co3Dv2, RealEstate10K); a benchmark run derives the same map from its --root when no map is shipped and
checks a shipped map against the root (a sequence that is missing or too short is an error).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MAP_DIR = Path(__file__).resolve().parent / "frame_maps"
POSE_FRAMES = 10
POSE_SEED = 42

SEVEN_SCENES_TEST = {"chess": ("seq-03", "seq-05"), "fire": ("seq-03", "seq-04"), "heads": ("seq-01",),
                     "office": ("seq-02", "seq-06", "seq-07", "seq-09"), "pumpkin": ("seq-01", "seq-07"),
                     "redkitchen": ("seq-03", "seq-04", "seq-06", "seq-12", "seq-14"), "stairs": ("seq-01", "seq-04")}
SEVEN_SCENES_LENGTHS = {f"{scene}/{seq}": 500 if scene == "stairs" else 1000
                        for scene, seqs in SEVEN_SCENES_TEST.items() for seq in seqs}
DTU_TEST_SCANS = (1, 4, 9, 10, 11, 12, 13, 15, 23, 24, 29, 32, 33, 34, 48, 49, 62, 75, 77, 110, 114, 118)
DTU_LENGTHS = {f"scan{scan}": 49 for scan in DTU_TEST_SCANS}
# dataset -> rule; the rule names the map file.
RULES = {"7scenes": "stride40", "7scenes-sparse": "stride200", "nrgbd": "stride100", "nrgbd-sparse": "stride500",
         "eth3d": "stride5", "dtu": "stride5", "co3dv2": "random10_seed42", "re10k": "random10_seed42"}
SHIPPED_LENGTHS = {"7scenes": SEVEN_SCENES_LENGTHS, "7scenes-sparse": SEVEN_SCENES_LENGTHS, "dtu": DTU_LENGTHS}


def map_path(dataset: str) -> Path:
    return MAP_DIR / f"{dataset}_{RULES[dataset]}.json"


def sample_frames(dataset: str, lengths: dict[str, int]) -> dict[str, list[int]]:
    """The rule of `dataset` applied to sequences {name: frame count} (in the reader's order)."""
    rule = RULES[dataset]
    if rule.startswith("stride"):
        stride = int(rule.removeprefix("stride"))
        return {name: list(range(0, n, stride)) for name, n in lengths.items()}
    state = np.random.RandomState(POSE_SEED)  # == numpy.random.seed(42) followed by numpy.random.choice
    return {name: [int(i) for i in state.choice(n, POSE_FRAMES, replace=False)]
            for name, n in lengths.items() if n >= POSE_FRAMES}


def frame_map(dataset: str, lengths: dict[str, int]) -> tuple[dict[str, list[int]], str]:
    """(the frames of each sequence, where the map came from) for sequences {name: frame count} on disk.

    A shipped map is used when there is one (checked against `lengths`); otherwise the rule is applied."""
    path = map_path(dataset)
    if not path.is_file():
        return sample_frames(dataset, lengths), f"generated: {RULES[dataset]}"
    shipped = json.loads(path.read_text())["sequences"]
    missing = [name for name in shipped if name not in lengths]
    short = [name for name, ids in shipped.items() if name in lengths and max(ids) >= lengths[name]]
    if missing or short:
        raise ValueError(f"frame_map: {path.name} names sequences the root lacks "
                         f"({', '.join(missing[:5])}) or frames beyond their length ({', '.join(short[:5])})")
    return shipped, f"shipped: benchmarks/reconstruction/frame_maps/{path.name}"


def write_map(dataset: str, sequences: dict[str, list[int]], out_dir: Path = MAP_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{dataset}_{RULES[dataset]}.json"
    lines = ",\n".join(f"    {json.dumps(name)}: {json.dumps(ids)}" for name, ids in sequences.items())
    path.write_text(f'{{\n  "dataset": "{dataset}",\n  "rule": "{RULES[dataset]}",\n  "sequences": {{\n{lines}\n  }}\n}}\n')
    return path
