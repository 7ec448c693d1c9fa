"""Figures a person reads at a glance: labelled depth comparisons with colour bars in metres, and rendered
point clouds with their cameras.

    depth, clouds = clip_figures(images, depth_m, valid, K, camera_to_world,       # one clip, from tensors
                                 pred_depth, pred_world_points, pred_camera_to_world)
    figure = depth_comparison_figure(rgb, depth_m, valid, pred_depth_m)           # the parts, from arrays
    figure = point_cloud_figure(gt_points, gt_cameras, pred_points, pred_cameras, colours)

Both return RGB uint8 arrays (write them with `g2vlm.visual_io.save_png`, or log them to TensorBoard).
Depth colours use `visual_io.colourise`'s ramp (near = yellow, far = dark blue); errors their own ramp (white = none,
dark red = large), so the two are never confused.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from g2vlm.visual_io import colourise

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
GAP = 6  # pixels between panels
GT_CAMERA = (30, 30, 30)
PRED_CAMERA = (220, 40, 40)


_ERROR_RAMP = np.array([[255, 255, 255], [253, 204, 138], [252, 141, 89], [215, 48, 31], [127, 0, 0]], dtype=np.float64)


def colourise_error(error: np.ndarray, valid: np.ndarray | None, high: float) -> np.ndarray:
    """error (H, W) >= 0 -> (H, W, 3) uint8 on the error ramp from 0 (white) to `high` (dark red); invalid black."""
    error = np.asarray(error, dtype=np.float64)
    valid = np.isfinite(error) if valid is None else (np.asarray(valid, bool) & np.isfinite(error))
    t = np.clip(np.nan_to_num(error) / max(high, 1e-12), 0.0, 1.0) * (len(_ERROR_RAMP) - 1)
    index = np.minimum(t.astype(int), len(_ERROR_RAMP) - 2)
    fraction = (t - index)[..., None]
    rgb = _ERROR_RAMP[index] * (1 - fraction) + _ERROR_RAMP[index + 1] * fraction
    rgb[~valid] = 0
    return rgb.round().astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_panel(width: int, height: int, text: str, size: int = 16) -> np.ndarray:
    """A white strip with `text` centred in it."""
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - (right - left)) / 2 - left, (height - (bottom - top)) / 2 - top), text, fill=TEXT, font=font)
    return np.asarray(canvas)


def _upsample(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upsampling (every pixel becomes a factor x factor square: what was predicted, unblurred)."""
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1)


def _pad(rgb: np.ndarray, top: int = 0, bottom: int = 0, left: int = 0, right: int = 0) -> np.ndarray:
    return np.pad(rgb, ((top, bottom), (left, right), (0, 0)), constant_values=255)


def _stack(panels: list[np.ndarray], axis: int, gap: int = GAP) -> np.ndarray:
    """Panels side by side (axis 1) or one above the other (axis 0), padded white to a common size, `gap` px apart."""
    across = 1 - axis
    size = max(p.shape[across] for p in panels)
    panels = [_pad(p, bottom=size - p.shape[0]) if axis == 1 else _pad(p, right=size - p.shape[1]) for p in panels]
    gap_shape = (size, gap, 3) if axis == 1 else (gap, size, 3)
    out = [panels[0]]
    for panel in panels[1:]:
        out += [np.full(gap_shape, 255, np.uint8), panel]
    return np.concatenate(out, axis=axis)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values inside [low, high] (steps of 1, 2 or 5 x 10^k)."""
    span = max(high - low, 1e-9)
    raw = span / max(count - 1, 1)
    magnitude = 10 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = np.ceil(low / step) * step
    return [float(v) for v in np.arange(first, high + 1e-9 * span, step)]


def colour_bar(height: int, low: float, high: float, title: str, error: bool = False, width: int = 18) -> np.ndarray:
    """A vertical colour bar from `low` (top) to `high` (bottom), in metres, with tick labels and a title above
    it: the depth ramp, or with `error` the error ramp (which starts at 0). -> (height + title, bar + labels, 3)."""
    values = np.linspace(low, high, height)[:, None].repeat(width, axis=1)
    bar = colourise_error(values, None, high) if error else colourise(values, None, low, high)
    label_width = 62
    canvas = Image.new("RGB", (width + label_width, height), BACKGROUND)
    canvas.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font(13)
    decimals = 2 if high - low < 1 else 1
    for tick in _nice_ticks(low, high):
        y = int(round((tick - low) / max(high - low, 1e-9) * (height - 1)))
        draw.line([(width, y), (width + 4, y)], fill=TEXT)
        _, top, _, bottom = draw.textbbox((0, 0), "0", font=font)
        text_y = min(max(y - (bottom + top) / 2, 0), height - bottom)
        draw.text((width + 6, text_y), f"{tick:.{decimals}f} m", fill=TEXT, font=font)
    return _stack(axis=0, panels=[_text_panel(width + label_width, 22, title, size=13), np.asarray(canvas)], gap=2)


def depth_comparison_figure(rgb: np.ndarray, depth_m: np.ndarray, valid: np.ndarray, pred_depth_m: np.ndarray,
                            scale: int = 3, title: str | None = None) -> np.ndarray:
    """One row per view: image | ground truth | prediction | |error|, each upsampled `scale` times (nearest), under
    labelled columns, with colour bars in metres for depth (ground truth and prediction share one) and error.

    rgb (N, H, W, 3) uint8; depth_m, pred_depth_m (N, H, W) metres (the prediction already aligned to the GT
    scale); valid (N, H, W) bool (invalid GT pixels are black). -> (H', W', 3) uint8.
    """
    depth_m, pred_depth_m = np.asarray(depth_m, np.float64), np.asarray(pred_depth_m, np.float64)
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("figures.depth_comparison_figure: no valid ground-truth depth")
    low, high = np.percentile(depth_m[valid], [1, 99])
    error = np.abs(pred_depth_m - depth_m)
    error_high = max(float(np.percentile(error[valid], 95)), 1e-3)
    rows = []
    for view in range(len(rgb)):
        panels = [rgb[view], colourise(depth_m[view], valid[view], low, high),
                  colourise(pred_depth_m[view], None, low, high),
                  colourise_error(error[view], valid[view], error_high)]
        rows.append(_stack(axis=1, panels=[_upsample(np.asarray(p, np.uint8), scale) for p in panels]))
    panel_width = rgb.shape[2] * scale
    header = _stack(axis=1, panels=[_text_panel(panel_width, 26, name) for name in
                      ("image", "ground truth", "prediction", "|error|")])
    grid = _stack(axis=0, panels=[header, *rows])
    bar_height = grid.shape[0] - 26 - 26
    bars = _stack(axis=1, panels=[_pad(colour_bar(bar_height, low, high, "depth"), top=26),
                    _pad(colour_bar(bar_height, 0.0, error_high, "|error|", error=True), top=26)], gap=10)
    figure = _stack(axis=1, panels=[grid, bars], gap=14)
    if title:
        figure = _stack(axis=0, panels=[_text_panel(figure.shape[1], 30, title, size=16), figure], gap=0)
    return _pad(figure, top=4, bottom=8, left=8, right=8)


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenCV world_to_camera (4, 4) of a camera at `eye` looking at `target` with `up` pointing up in the image."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking along `up`: any right will do
        right = np.cross(forward, np.array([1.0, 0.0, 0.0]) if abs(forward[0]) < 0.9 else np.array([0.0, 1.0, 0.0]))
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = rotation
    world_to_camera[:3, 3] = -rotation @ eye
    return world_to_camera


def render_points(points: np.ndarray, colours: np.ndarray, world_to_camera: np.ndarray, focal: float, size: int,
                  radius: int = 1, principal: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffered splat rendering of a coloured point cloud. points (M, 3), colours (M, 3) uint8; a pinhole camera
    (OpenCV axes) with its principal point at `principal` (u, v) (default: the image centre). Every point is a
    (2·radius+1)² square; the nearest point wins each pixel.
    -> (rgb (size, size, 3) uint8 on white, depth (size, size), inf where empty)."""
    cu, cv = principal if principal is not None else ((size - 1) / 2, (size - 1) / 2)
    camera = points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    z = camera[:, 2]
    front = z > 1e-6
    u = np.round(focal * camera[front, 0] / z[front] + cu).astype(np.int64)
    v = np.round(focal * camera[front, 1] / z[front] + cv).astype(np.int64)
    z, colours = z[front], np.asarray(colours, np.uint8)[front]
    depth = np.full(size * size, np.inf)
    rgb = np.full((size * size, 3), 255, np.uint8)
    order = np.argsort(-z)  # far to near: nearer points overwrite
    for dv in range(-radius, radius + 1):
        for du in range(-radius, radius + 1):
            uu, vv = u + du, v + dv
            inside = (uu >= 0) & (uu < size) & (vv >= 0) & (vv < size)
            index = (vv * size + uu)[order][inside[order]]
            zz = z[order][inside[order]]
            cc = colours[order][inside[order]]
            nearer = zz < depth[index]
            # within one draw the last write to a pixel wins, and the points are sorted far to near
            depth[index[nearer]] = zz[nearer]
            rgb[index[nearer]] = cc[nearer]
    return rgb.reshape(size, size, 3), depth.reshape(size, size)


def _draw_cameras(rgb: np.ndarray, camera_to_world: np.ndarray, world_to_camera: np.ndarray, focal: float,
                  principal: tuple[float, float], frustum_m: float, colour: tuple[int, int, int]) -> np.ndarray:
    """Camera frusta (centre -> four image corners at `frustum_m` along the optical axis) drawn as lines."""
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)

    def project(point: np.ndarray) -> tuple[float, float] | None:
        camera = world_to_camera[:3, :3] @ point + world_to_camera[:3, 3]
        if camera[2] <= 1e-6:
            return None
        return (focal * camera[0] / camera[2] + principal[0], focal * camera[1] / camera[2] + principal[1])

    half = 0.6 * frustum_m
    corners_camera = np.array([[-half, -half, frustum_m], [half, -half, frustum_m], [half, half, frustum_m],
                               [-half, half, frustum_m]])
    for pose in camera_to_world:
        centre = project(pose[:3, 3])
        corners = [project(pose[:3, :3] @ c + pose[:3, 3]) for c in corners_camera]
        if centre is None or any(c is None for c in corners):
            continue
        for corner in corners:
            draw.line([centre, corner], fill=colour, width=2)
        draw.line([*corners, corners[0]], fill=colour, width=2)
    return np.asarray(canvas)


def point_cloud_view(points: np.ndarray, camera_to_world: np.ndarray, size: int,
                     ) -> tuple[np.ndarray, float, tuple[float, float], float]:
    """A viewpoint that shows the whole cloud: behind and above the first camera, looking at the cloud's centre, with
    the focal length and principal point that make the central 96 % of the points fill 90 % of a size x size image.
    points (M, 3); camera_to_world (N, 4, 4) OpenCV. -> (world_to_camera (4, 4), focal, principal (u, v), radius)."""
    centre = np.median(points, axis=0)
    radius = float(np.percentile(np.linalg.norm(points - centre, axis=1), 90))
    first = camera_to_world[0]
    forward, up = first[:3, 2], -first[:3, 1]
    eye = first[:3, 3] - 1.2 * radius * forward + 1.0 * radius * up
    world_to_camera = _look_at(eye, centre, up)
    camera = points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    camera = camera[camera[:, 2] > 1e-6]
    low, high = np.percentile(camera[:, :2] / camera[:, 2:], [2, 98], axis=0)  # (2,) each: x/z and y/z
    focal = 0.9 * size / max(float((high - low).max()), 1e-6)
    principal = (size / 2 - focal * (low[0] + high[0]) / 2, size / 2 - focal * (low[1] + high[1]) / 2)
    return world_to_camera, focal, principal, radius


def point_cloud_figure(gt_points: np.ndarray, gt_camera_to_world: np.ndarray, pred_points: np.ndarray,
                       pred_camera_to_world: np.ndarray, colours: np.ndarray, size: int = 384,
                       title: str | None = None) -> np.ndarray:
    """Ground-truth and predicted point clouds of one clip side by side, rendered from one viewpoint, with their
    cameras drawn as frusta. The prediction must already be in the ground truth's frame (see
    `align_prediction`). gt_points, pred_points (M, 3) metres; colours (M, 3) uint8; camera_to_world (N, 4, 4).
    -> (H', W', 3) uint8."""
    world_to_camera, focal, principal, radius = point_cloud_view(gt_points, gt_camera_to_world, size)
    panels = []
    for name, points, cameras, colour in (("ground truth (cameras in black)", gt_points, gt_camera_to_world, GT_CAMERA),
                                          ("prediction (cameras in red)", pred_points, pred_camera_to_world, PRED_CAMERA)):
        rgb, _ = render_points(points, colours, world_to_camera, focal, size, principal=principal)
        rgb = _draw_cameras(rgb, cameras, world_to_camera, focal, principal, 0.15 * radius, colour)
        framed = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), constant_values=180)
        panels.append(_stack(axis=0, panels=[_text_panel(framed.shape[1], 26, name), framed], gap=0))
    figure = _stack(panels, axis=1, gap=10)
    if title:
        figure = _stack(axis=0, panels=[_text_panel(figure.shape[1], 30, title, size=16), figure], gap=0)
    return _pad(figure, top=4, bottom=8, left=8, right=8)


def align_prediction(pred_points, pred_camera_to_world, gt_points, valid) -> tuple[np.ndarray, np.ndarray]:
    """Move a predicted cloud and its cameras onto the ground truth by the one least-squares similarity
    (Umeyama) between corresponding valid points: a prediction is only defined up to its world frame and scale.

    pred_points, gt_points (M, 3) tensors; pred_camera_to_world (N, 4, 4); valid (M,) bool.
    -> (points (M, 3), camera_to_world (N, 4, 4)) float64 numpy arrays in the ground truth's frame."""
    from g2vlm.geometry.alignment import umeyama_sim3

    pred_points, gt_points = pred_points.double(), gt_points.double()
    scale, rotation, translation = umeyama_sim3(pred_points, gt_points, valid)
    points = scale * pred_points @ rotation.T + translation
    cameras = pred_camera_to_world.double().clone()
    cameras[:, :3, :3] = rotation @ cameras[:, :3, :3]
    cameras[:, :3, 3] = scale * cameras[:, :3, 3] @ rotation.T + translation
    return points.numpy(), cameras.numpy()


def clip_figures(images, depth_m, valid, K, camera_to_world, pred_depth, pred_world_points, pred_camera_to_world,
                 depth_title: str | None = None, clouds_title: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Both figures of one clip from tensors: the depth comparison (each predicted depth map scaled to the ground
    truth by the IRLS-L1 scale of the monocular protocol) and the point clouds (the predicted world points and
    cameras moved onto the ground truth by one similarity). The second is None when no ground-truth depth is valid.

    images (N, 3, H, W) in [0, 1]; depth_m, valid (N, H, W); K (N, 3, 3); camera_to_world (N, 4, 4);
    pred_depth (N, H, W); pred_world_points (N, H, W, 3); pred_camera_to_world (N, 4, 4)."""
    import torch

    from g2vlm.geometry.alignment import irls_l1_scale
    from g2vlm.geometry.camera import transform_points, unproject_depth

    depth_m, valid, K = depth_m.float().cpu(), valid.cpu(), K.float().cpu()
    camera_to_world = camera_to_world.double().cpu()
    pred = pred_depth.detach().float().cpu().clone()
    rgb = (images.detach().permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if not valid.any():
        return depth_comparison_figure(rgb, pred.numpy(), np.ones(pred.shape, bool), pred.numpy(), title=depth_title), None
    for view in range(len(pred)):
        if valid[view].any():
            pred[view] = pred[view] * irls_l1_scale(pred[view][valid[view]], depth_m[view][valid[view]])
    depth = depth_comparison_figure(rgb, depth_m.numpy(), valid.numpy(), pred.numpy(), title=depth_title)
    gt_points = transform_points(camera_to_world[:, None, None], unproject_depth(depth_m.double(), K.double()))
    mask = valid.reshape(-1)
    pred_points, pred_cameras = align_prediction(pred_world_points.detach().cpu().reshape(-1, 3),
                                                 pred_camera_to_world.detach().cpu(), gt_points.reshape(-1, 3), mask)
    mask = mask.numpy()
    clouds = point_cloud_figure(gt_points.reshape(-1, 3).numpy()[mask], camera_to_world.numpy(), pred_points[mask],
                                pred_cameras, rgb.reshape(-1, 3)[mask], title=clouds_title)
    return depth, clouds
