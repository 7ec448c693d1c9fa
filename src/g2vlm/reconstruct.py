"""`g2vlm reconstruct`: depth maps, a coloured point cloud and cameras from a folder of images, in one forward.

    g2vlm reconstruct --ckpt runs/geometry-demo/checkpoints/last.ckpt --images photos/ --out runs/recon

All images go through the geometry path together (one sample of N frames), as in the official demo. Resize
rule (g2vlm.inference): every image is resized to the size the *first* image gets — LANCZOS to
the load width W (default: the width the checkpoint was trained at when it records one, else 512, the
evaluation protocol's) and height round(H·W/W₀/p)·p, then to the patch grid (multiples of the patch size p).
Outputs, all at that model resolution:
- OUT/depth/<stem>.png: 16-bit PNG depth in millimetres of the model's units (G²VLM-style models are
  scale-normalised, so this is depth up to one global scale), 0 = invalid, values clipped to 65535;
- OUT/depth/<stem>_colour.png: the depth colourised (near = yellow, far = dark blue);
- OUT/points.ply: world points (camera_to_world · local points) of every valid pixel of every image, coloured
  by the resized image; valid = finite with positive depth;
- OUT/cameras.json: per image its file, model-resolution width/height, K (focal fitted to the local points
  with the principal point at the centre, (W-1)/2 and (H-1)/2) and camera_to_world (OpenCV, frame 0's world).

The checkpoint is read as tensors and plain containers only (torch.load weights_only=True), so it runs no code;
--out is checked before the inference. 16-bit greyscale images are scaled to 8 bits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_LOAD_WIDTH = 512
MAX_DEPTH_MM = 65535


def add_to(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reconstruct", help="depth PNGs, a coloured PLY and cameras from images",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True,
                        help="GeometryPretraining checkpoint, or a model file from `g2vlm import-weights` (e.g. the "
                             "imported official G²VLM)")
    parser.add_argument("--images", required=True, nargs="+", metavar="DIR_OR_FILE",
                        help="image files and/or folders (their images in name order)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--width", type=int, default=None,
                        help="load width (default: the checkpoint's training width, else 512)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.set_defaults(run=run)


def collect_images(sources: list[str]) -> list[Path]:
    """Image files named directly or found (non-recursively, in name order) in the folders named."""
    images: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            images += found
        elif path.is_file():
            images.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    stems = [image.stem for image in images]
    duplicated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicated:
        raise ValueError(f"several images share the name {duplicated[0]!r}; outputs are named by image stem")
    return images


def fit_intrinsics(local_points, eps: float = 1e-6):
    """K (N, 3, 3) of a pinhole camera with the principal point at the image centre whose one focal length
    best explains local points (N, H, W, 3) in least squares: u - cx = f·x/z, v - cy = f·y/z."""
    import torch

    from g2vlm.geometry.camera import pixel_grid

    n, height, width, _ = local_points.shape
    z = local_points[..., 2]
    valid = torch.isfinite(local_points).all(-1) & (z > eps)
    safe_z = torch.where(valid, z, torch.ones_like(z))
    normalised = local_points[..., :2] / safe_z[..., None]  # (N, H, W, 2)
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=local_points.dtype)
    offsets = pixel_grid(height, width, dtype=local_points.dtype) - centre  # (H, W, 2)
    weight = valid.to(local_points.dtype)[..., None]
    focal = (weight * offsets * normalised).sum((1, 2, 3)) / (weight * normalised.square()).sum((1, 2, 3)).clamp(min=eps)
    K = torch.zeros(n, 3, 3, dtype=local_points.dtype)
    K[:, 0, 0] = K[:, 1, 1] = focal
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = centre[0], centre[1], 1.0
    return K


def run(args: argparse.Namespace) -> int:
    from g2vlm.inference import CheckpointError, FrameError

    try:
        return _run(args)
    except (CheckpointError, FrameError, ValueError) as error:
        print(f"g2vlm reconstruct: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from g2vlm.inference import GeometryPredictor, load_geometry_model, read_rgb, training_image_size
    from g2vlm.output_paths import check_writable_folder
    from g2vlm.visual_io import colourise, save_png, write_ply

    check_writable_folder(args.out)  # before the inference, not after it
    paths = collect_images(args.images)
    rgbs = [read_rgb(path) for path in paths]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, record = load_geometry_model(args.ckpt, device)
    trained_size = training_image_size(record)
    width = args.width or (trained_size[1] if trained_size else DEFAULT_LOAD_WIDTH)
    predictor = GeometryPredictor(model, device, width)
    images = predictor.prepare(rgbs)  # (N, 3, H, W)
    output = predictor.predict(images[None])
    height, width = images.shape[-2:]
    print(f"[reconstruct] {len(paths)} images at {width}×{height} (patch {predictor.patch_size}) in "
          f"{predictor.seconds:.2f} s on {device}", file=sys.stderr)

    out = Path(args.out)
    depth = output.depth[0].numpy()  # (N, H, W)
    points = output.world_points[0].numpy()  # (N, H, W, 3)
    valid = np.isfinite(points).all(-1) & np.isfinite(depth) & (depth > 0)
    colours = np.clip(images.permute(0, 2, 3, 1).numpy() * 255, 0, 255).round().astype(np.uint8)
    K = fit_intrinsics(output.local_points[0])
    cameras = []
    for index, path in enumerate(paths):
        millimetres = np.where(valid[index], np.clip(np.round(depth[index] * 1000), 1, MAX_DEPTH_MM), 0)
        (out / "depth").mkdir(parents=True, exist_ok=True)
        Image.fromarray(millimetres.astype(np.uint16)).save(out / "depth" / f"{path.stem}.png")
        save_png(out / "depth" / f"{path.stem}_colour.png", colourise(depth[index], valid[index]))
        cameras.append({"image": str(path), "width": int(width), "height": int(height),
                        "original_width": int(rgbs[index].shape[1]), "original_height": int(rgbs[index].shape[0]),
                        "K": K[index].tolist(), "camera_to_world": output.camera_to_world[0, index].tolist()})
    ply = write_ply(out / "points.ply", points[valid], colours[valid])
    (out / "cameras.json").write_text(json.dumps({"convention": "OpenCV camera_to_world; K in pixels of the model "
                                                                "resolution, pixel centres at integer coordinates",
                                                  "cameras": cameras}, indent=2) + "\n")
    print(f"[reconstruct] {int(valid.sum()):,} points -> {ply}\n[reconstruct] depth maps -> {out / 'depth'}\n"
          f"[reconstruct] cameras -> {out / 'cameras.json'}", file=sys.stderr)
    return 0
