"""Published numbers printed beside a run (reference g2vlm-official.md §6.1, data-and-benchmarks.md §8).

Sources: "G2-T1a" = G²VLM paper Table 1a; "Pi3-T#" = π³ paper table # (third-party transcription, see the
reference's source list). Where the G²VLM paper re-ran a baseline (7-Scenes stride 40), its numbers are used.
Keys are our dataset names; values map a model to its metrics under our metric names.
"""

from __future__ import annotations

# Monocular depth, per-frame IRLS-L1 scale (Pi3-T6; G²VLM from G2-T1a): abs_rel ↓, delta_1 ↑.
MONO_DEPTH: dict[str, dict[str, dict[str, float]]] = {
    "sintel": {"G²VLM-2B": {"abs_rel": 0.297, "delta_1": 0.589}, "π³": {"abs_rel": 0.277, "delta_1": 0.614},
               "VGGT": {"abs_rel": 0.335, "delta_1": 0.599}, "MoGe-v1": {"abs_rel": 0.273, "delta_1": 0.695},
               "MoGe-v2": {"abs_rel": 0.277, "delta_1": 0.687}},
    "bonn": {"π³": {"abs_rel": 0.044, "delta_1": 0.976}, "VGGT": {"abs_rel": 0.053, "delta_1": 0.970},
             "MoGe-v1": {"abs_rel": 0.050, "delta_1": 0.976}, "MoGe-v2": {"abs_rel": 0.063, "delta_1": 0.973}},
    "kitti": {"π³": {"abs_rel": 0.060, "delta_1": 0.971}, "VGGT": {"abs_rel": 0.082, "delta_1": 0.947},
              "MoGe-v1": {"abs_rel": 0.054, "delta_1": 0.977}, "MoGe-v2": {"abs_rel": 0.049, "delta_1": 0.979}},
    "nyu": {"G²VLM-2B": {"abs_rel": 0.062, "delta_1": 0.954}, "π³": {"abs_rel": 0.054, "delta_1": 0.956},
            "VGGT": {"abs_rel": 0.056, "delta_1": 0.951}, "MoGe-v1": {"abs_rel": 0.055, "delta_1": 0.952},
            "MoGe-v2": {"abs_rel": 0.060, "delta_1": 0.940}},
}

# Video depth, one scale-and-shift per sequence (Pi3-T5). G²VLM reports no video depth.
VIDEO_DEPTH: dict[str, dict[str, dict[str, float]]] = {
    "sintel": {"π³": {"abs_rel": 0.210, "delta_1": 0.726}, "VGGT": {"abs_rel": 0.230, "delta_1": 0.678}},
    "bonn": {"π³": {"abs_rel": 0.043, "delta_1": 0.975}, "VGGT": {"abs_rel": 0.052, "delta_1": 0.969}},
    "kitti": {"π³": {"abs_rel": 0.037, "delta_1": 0.985}, "VGGT": {"abs_rel": 0.052, "delta_1": 0.968}},
}

# Relative pose, 10 frames per sequence, all pairs pooled (Pi3-T1; G²VLM from G2-T1a): percent.
POSE: dict[str, dict[str, dict[str, float]]] = {
    "co3dv2": {"G²VLM-2B": {"RRA@30": 97.91, "RTA@30": 95.20, "AUC@30": 74.81},
               "π³": {"RRA@30": 99.05, "RTA@30": 97.33, "AUC@30": 88.41},
               "VGGT": {"RRA@30": 98.96, "RTA@30": 97.13, "AUC@30": 88.59}},
    "re10k": {"π³": {"RRA@30": 99.99, "RTA@30": 95.62, "AUC@30": 85.90},
              "VGGT": {"RRA@30": 99.97, "RTA@30": 93.13, "AUC@30": 77.62}},
}

# Multi-view point maps, means (G2-T1a for 7-Scenes stride 40 and ETH3D; Pi3-T3/T4 otherwise).
POINT_MAP: dict[str, dict[str, dict[str, float]]] = {
    "7scenes": {"G²VLM-2B": {"accuracy": 0.046, "completeness": 0.029},
                "π³": {"accuracy": 0.016, "completeness": 0.022}, "VGGT": {"accuracy": 0.022, "completeness": 0.026}},
    "7scenes-sparse": {"π³": {"accuracy": 0.048, "completeness": 0.072, "normal_consistency": 0.742},
                       "VGGT": {"accuracy": 0.046, "completeness": 0.057, "normal_consistency": 0.728}},
    "nrgbd": {"π³": {"accuracy": 0.015, "completeness": 0.013, "normal_consistency": 0.898},
              "VGGT": {"accuracy": 0.017, "completeness": 0.015, "normal_consistency": 0.893}},
    "nrgbd-sparse": {"π³": {"accuracy": 0.026, "completeness": 0.028, "normal_consistency": 0.916},
                     "VGGT": {"accuracy": 0.051, "completeness": 0.066, "normal_consistency": 0.890}},
    "dtu": {"π³": {"accuracy": 1.198, "completeness": 1.849, "normal_consistency": 0.678},
            "VGGT": {"accuracy": 1.338, "completeness": 1.896, "normal_consistency": 0.676}},
    "eth3d": {"G²VLM-2B": {"accuracy": 0.414, "completeness": 0.309},
              "π³": {"accuracy": 0.194, "completeness": 0.210, "normal_consistency": 0.883},
              "VGGT": {"accuracy": 0.280, "completeness": 0.305, "normal_consistency": 0.853}},
}
