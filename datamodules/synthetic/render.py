"""Ray casting of a `Scene`: exact z-depth, surface ids, normals and a shaded, procedurally textured RGB.

All views of a scene are cast in one vectorised float64 pass. Ray directions are d = R K^-1 (u, v, 1), so the
ray parameter t of a hit *is* its z-depth. Spheres and cylinders use the numerically stable quadratic
(q = -(b + sign(b) sqrt(disc)), roots q/a and c/q), which keeps unprojected depth on the analytic surface to
~1e-12 m in float64.

Surface ids: 0 floor, 1 ceiling, 2 wall x=0, 3 wall x=Lx, 4 wall y=0, 5 wall y=Ly, 6 + i object i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from g2vlm.datamodules.synthetic.scene import Scene, SceneObject

FLOOR, CEILING, WALL_X0, WALL_X1, WALL_Y0, WALL_Y1 = range(6)
FIRST_OBJECT = 6


@dataclass
class Rendering:
    """rgb (V, H, W, 3) uint8; depth_m (V, H, W) float64 z-depth; surface_id (V, H, W) int; normal (V, H, W, 3)
    world-frame unit normals facing the camera."""

    rgb: np.ndarray
    depth_m: np.ndarray
    surface_id: np.ndarray
    normal: np.ndarray


def camera_rays(K: np.ndarray, camera_to_world: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """origins (V, 1, 3) and directions (V, H*W, 3) with camera-frame z = 1 (t = z-depth)."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    pixels = np.stack([u.ravel(), v.ravel(), np.ones(height * width)], axis=-1)  # (P, 3)
    rays_camera = pixels @ np.linalg.inv(K).transpose(0, 2, 1)  # (V, P, 3)
    directions = rays_camera @ camera_to_world[:, :3, :3].transpose(0, 2, 1)
    return camera_to_world[:, None, :3, 3], directions


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Dot product over the last axis of size 2 or 3 (broadcasting); faster than einsum on (M, 3) rows."""
    total = x[..., 0] * y[..., 0] + x[..., 1] * y[..., 1]
    return total + x[..., 2] * y[..., 2] if x.shape[-1] == 3 else total


def _stable_near_root(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Smallest positive root of a t^2 + 2 b t + c = 0 (inf where none), stable in float64."""
    disc = b * b - a * c
    hit = (disc >= 0) & (a > 0)
    root = np.sqrt(np.where(hit, disc, 0.0))
    q = -(b + np.copysign(root, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = q / a
        t2 = c / q
    near = np.minimum(t1, t2)
    far = np.maximum(t1, t2)
    t = np.where(near > 0, near, far)
    return np.where(hit & (t > 0), t, np.inf)


def _yaw_matrix(yaw: float) -> np.ndarray:
    cos, sin = np.cos(yaw), np.sin(yaw)
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def intersect_object(obj: SceneObject, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Ray parameter of the nearest hit with `obj` (inf where missed). origins broadcast with directions (..., 3)."""
    offset = origins - obj.center
    if obj.kind == "sphere":
        a = _dot(directions, directions)
        b = _dot(directions, offset)
        c = _dot(offset, offset) - obj.radius**2
        return _stable_near_root(a, b, np.broadcast_to(c, a.shape))
    if obj.kind == "cylinder":
        half_height = obj.size[2] / 2
        d2, o2 = directions[..., :2], offset[..., :2]
        a = _dot(d2, d2)
        b = _dot(d2, o2)
        c = np.broadcast_to(_dot(o2, o2) - obj.radius**2, a.shape)
        t_side = _stable_near_root(a, b, c)
        z_side = offset[..., 2] + t_side * directions[..., 2]
        t_side = np.where(np.abs(z_side) <= half_height, t_side, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_top = (half_height - offset[..., 2]) / directions[..., 2]
        top_xy = o2 + t_top[..., None] * d2
        inside_top = _dot(top_xy, top_xy) <= obj.radius**2
        t_top = np.where(inside_top & (t_top > 0), t_top, np.inf)
        return np.minimum(t_side, t_top)
    # box: slab test in the box frame
    to_local = _yaw_matrix(obj.yaw).T
    local_origin = offset @ to_local.T
    local_direction = directions @ to_local.T
    half = obj.size / 2
    # A zero direction component becomes a tiny one: its slab then spans (-huge, +huge) or misses, no NaN.
    local_direction = np.where(local_direction == 0, 1e-300, local_direction)
    inverse = 1.0 / local_direction
    t1 = (-half - local_origin) * inverse
    t2 = (half - local_origin) * inverse
    lower, upper = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near = np.maximum(np.maximum(lower[..., 0], lower[..., 1]), lower[..., 2])
    t_far = np.minimum(np.minimum(upper[..., 0], upper[..., 1]), upper[..., 2])
    return np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)


def object_normal(obj: SceneObject, points: np.ndarray) -> np.ndarray:
    """Outward unit normals (N, 3) of `obj` at surface points (N, 3)."""
    local = points - obj.center
    if obj.kind == "sphere":
        return local / np.linalg.norm(local, axis=-1, keepdims=True)
    if obj.kind == "cylinder":
        half_height = obj.size[2] / 2
        on_top = np.abs(local[:, 2] - half_height) < 1e-9 * max(1.0, half_height) + 1e-9
        radial = local * [1.0, 1.0, 0.0]
        radial = radial / np.maximum(np.linalg.norm(radial, axis=-1, keepdims=True), 1e-12)
        return np.where(on_top[:, None], [0.0, 0.0, 1.0], radial)
    rotation = _yaw_matrix(obj.yaw)
    box_local = local @ rotation  # world -> box frame (rotation.T applied on the right as row vectors)
    scaled = np.abs(box_local) / (obj.size / 2)
    axis = np.argmax(scaled, axis=-1)
    normal_local = np.zeros_like(box_local)
    rows = np.arange(len(axis))
    normal_local[rows, axis] = np.sign(box_local[rows, axis])
    return normal_local @ rotation.T


def _hash_noise(cells: np.ndarray) -> np.ndarray:
    """Deterministic value noise in [0, 1) per integer cell (..., 3)."""
    value = np.sin(cells @ np.array([12.9898, 78.233, 37.719])) * 43758.5453
    return value - np.floor(value)


def _albedo(scene: Scene, surface: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Procedural albedo (N, 3) for hit points (N, 3) on surfaces (N,): tiles, stripes, checkers, grain."""
    albedo = np.zeros_like(points)
    floor = surface == FLOOR
    if floor.any():
        p = points[floor]
        tiles = np.floor(p[:, 0] / scene.tile_size) + np.floor(p[:, 1] / scene.tile_size)
        grout = (np.mod(p[:, :2], scene.tile_size) < 0.02).any(axis=1)
        shade = np.where(np.mod(tiles, 2) == 0, 1.0, 0.7) * np.where(grout, 0.5, 1.0)
        albedo[floor] = scene.floor_colour * shade[:, None]
    ceiling = surface == CEILING
    if ceiling.any():
        p = points[ceiling]
        grid = (np.mod(p[:, :2], 1.0) < 0.03).any(axis=1)
        albedo[ceiling] = scene.ceiling_colour * np.where(grid, 0.75, 1.0)[:, None]
    wall = (surface >= WALL_X0) & (surface <= WALL_Y1)
    if wall.any():
        p, s = points[wall], surface[wall]
        along = np.where(s <= WALL_X1, p[:, 1], p[:, 0])
        stripes = np.where(np.mod(np.floor(along / scene.stripe_width), 2) == 0, 1.0, 0.8)
        baseboard = np.where(p[:, 2] < 0.12, 0.45, 1.0)
        tint = 1.0 + 0.08 * (s - WALL_X0)[:, None] * [1.0, -0.5, 0.3] / 4
        albedo[wall] = scene.wall_colour * tint * (stripes * baseboard)[:, None]
    for index, obj in enumerate(scene.objects):
        mine = surface == FIRST_OBJECT + index
        if not mine.any():
            continue
        local = (points[mine] - obj.center) @ _yaw_matrix(obj.yaw)
        if obj.kind == "sphere":
            direction = local / np.linalg.norm(local, axis=-1, keepdims=True)
            longitude = np.arctan2(direction[:, 1], direction[:, 0])
            latitude = np.arcsin(np.clip(direction[:, 2], -1.0, 1.0))
            pattern = np.floor(longitude / (np.pi / 4)) + np.floor(latitude / (np.pi / 4))
        elif obj.kind == "cylinder":
            angle = np.arctan2(local[:, 1], local[:, 0])
            pattern = np.floor(angle / (np.pi / 6)) + np.floor(local[:, 2] / obj.pattern_scale / 2)
        else:
            pattern = np.floor(local / obj.pattern_scale).sum(axis=1)
        shade = np.where(np.mod(pattern, 2) == 0, 1.0, 0.65)
        albedo[mine] = obj.colour * shade[:, None]
    grain = _hash_noise(np.floor(points / 0.04))
    return albedo * (0.88 + 0.24 * grain)[:, None]


def cast_rays(scene: Scene, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of each ray: (t, surface_id), shapes of directions[..., 0]. Origins (broadcast to directions)
    must lie inside the room and outside every object."""
    origins = np.broadcast_to(origins, directions.shape)
    room = scene.room_size
    with np.errstate(divide="ignore", invalid="ignore"):
        bounds = np.where(directions > 0, room, 0.0)
        t_axes = (bounds - origins) / directions
    t_axes = np.where(np.isfinite(t_axes) & (t_axes > 0), t_axes, np.inf)
    axis = np.argmin(t_axes, axis=-1)
    t = np.take_along_axis(t_axes, axis[..., None], axis=-1)[..., 0]
    positive = np.take_along_axis(directions > 0, axis[..., None], axis=-1)[..., 0]
    wall_ids = np.array([[WALL_X0, WALL_X1], [WALL_Y0, WALL_Y1], [FLOOR, CEILING]])
    surface = wall_ids[axis, positive.astype(int)]
    # Objects: cull with each object's bounding sphere, then intersect exactly the rays that may hit it.
    a = _dot(directions, directions)
    for index, obj in enumerate(scene.objects):
        offset = origins - obj.center
        b = _dot(directions, offset)
        c = _dot(offset, offset) - (np.linalg.norm(obj.size) / 2 + 1e-6) ** 2
        disc = b * b - a * c
        # the ray meets the bounding sphere, ahead of the origin, before the current nearest hit
        candidates = np.nonzero((disc >= 0) & (np.sqrt(np.maximum(disc, 0.0)) - b > 0) & ((-b - np.sqrt(np.maximum(disc, 0.0))) < t * a))
        if len(candidates[0]) == 0:
            continue
        t_object = intersect_object(obj, origins[candidates], directions[candidates])
        closer = t_object < t[candidates]
        t[candidates] = np.where(closer, t_object, t[candidates])
        surface[candidates] = np.where(closer, FIRST_OBJECT + index, surface[candidates])
    return t, surface


def surface_normals(scene: Scene, surface: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Outward unit normals (N, 3) at surface points (N, 3) (room faces point into the room)."""
    room_normals = np.array([[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float64)
    normals = room_normals[np.minimum(surface, FIRST_OBJECT - 1)]
    for index, obj in enumerate(scene.objects):
        mine = surface == FIRST_OBJECT + index
        if mine.any():
            normals[mine] = object_normal(obj, points[mine])
    return normals


def _shade(scene: Scene, origins: np.ndarray, directions: np.ndarray):
    """Cast and shade rays (M, 3) -> rgb (M, 3) uint8, t (M,), surface (M,), normal (M, 3)."""
    t, surface = cast_rays(scene, origins, directions)
    points = origins + t[:, None] * directions
    normals = surface_normals(scene, surface, points)
    to_light = scene.light_position - points
    light_distance = np.linalg.norm(to_light, axis=-1)
    diffuse = np.clip(_dot(normals, to_light) / light_distance, 0.0, None)
    intensity = 0.3 + 0.85 * diffuse / (1.0 + 0.04 * light_distance**2)
    linear = _albedo(scene, surface, points) * intensity[:, None]
    rgb = np.clip(linear, 0.0, 1.0) ** (1 / 2.2)
    return (rgb * 255 + 0.5).astype(np.uint8), t, surface, normals


def render(scene: Scene, rays_per_chunk: int = 32768) -> Rendering:
    """Render every view of the scene (rays in chunks, so large images stay in cache)."""
    views, height, width = len(scene.K), scene.height, scene.width
    origins, directions = camera_rays(scene.K, scene.camera_to_world, height, width)
    origins = np.broadcast_to(origins, directions.shape).reshape(-1, 3)
    directions = directions.reshape(-1, 3)
    parts = [
        _shade(scene, origins[start:start + rays_per_chunk], directions[start:start + rays_per_chunk])
        for start in range(0, len(directions), rays_per_chunk)
    ]
    rgb, t, surface, normal = (np.concatenate(arrays) for arrays in zip(*parts))
    return Rendering(
        rgb=rgb.reshape(views, height, width, 3),
        depth_m=t.reshape(views, height, width),
        surface_id=surface.reshape(views, height, width),
        normal=normal.reshape(views, height, width, 3),
    )
