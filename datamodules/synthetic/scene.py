"""Procedural scenes: a textured box room with 3-10 objects and a smooth camera trajectory inside it.

World frame: metres, z up, the floor is z = 0, the room spans [0, Lx] x [0, Ly] x [0, Lz]. Cameras are OpenCV
(x right, y down, z forward); `camera_to_world` (V, 4, 4) maps camera to world coordinates. K uses pixel
centres at integer coordinates (cx = (W - 1) / 2).

Everything is drawn from `numpy.random.default_rng([seed, scene_index])`, so a scene depends only on
(seed, scene_index), never on the process that renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Named colours (linear RGB albedo); the names are what the spatial-QA generator can say about an object.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.10, 0.10),
    "green": (0.12, 0.60, 0.20),
    "blue": (0.10, 0.25, 0.80),
    "yellow": (0.90, 0.80, 0.10),
    "orange": (0.95, 0.50, 0.10),
    "purple": (0.50, 0.20, 0.70),
    "pink": (0.95, 0.50, 0.70),
    "cyan": (0.10, 0.75, 0.80),
    "white": (0.92, 0.92, 0.92),
    "black": (0.08, 0.08, 0.08),
    "brown": (0.45, 0.28, 0.12),
    "grey": (0.50, 0.50, 0.50),
}
OBJECT_CLASSES = ("box", "sphere", "cylinder")
MIN_ROOM_HEIGHT_M = 2.4
WALL_MARGIN_M = 0.4  # cameras keep this far from walls, floor and ceiling
OBJECT_MARGIN_M = 0.35  # ... and this far from every object's footprint


@dataclass
class SceneObject:
    """One object standing on the floor. center (3,) is the centre of its 3D box; size (3,) the box's full
    extents along its own axes (dx, dy, dz) before the yaw rotation about +z; radius for spheres/cylinders."""

    kind: str
    colour_name: str
    center: np.ndarray
    size: np.ndarray
    yaw: float
    pattern_scale: float

    @property
    def colour(self) -> np.ndarray:
        return np.asarray(COLOURS[self.colour_name])

    @property
    def radius(self) -> float:
        return float(self.size[0] / 2)

    @property
    def footprint_radius(self) -> float:
        """Radius of a vertical cylinder about the centre that contains the object."""
        return float(np.hypot(self.size[0], self.size[1]) / 2)

    def annotation(self) -> dict:
        return {
            "class": self.kind,
            "colour": self.colour_name,
            "center": [round(float(v), 6) for v in self.center],
            "size": [round(float(v), 6) for v in self.size],
            "yaw": round(float(self.yaw), 6),
        }


@dataclass
class Scene:
    """A room with objects and V cameras. K (V, 3, 3), camera_to_world (V, 4, 4), both float64."""

    room_size: np.ndarray
    objects: list[SceneObject]
    K: np.ndarray
    camera_to_world: np.ndarray
    height: int
    width: int
    floor_colour: np.ndarray
    wall_colour: np.ndarray
    ceiling_colour: np.ndarray
    light_position: np.ndarray
    tile_size: float
    stripe_width: float
    extra: dict = field(default_factory=dict)


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """OpenCV camera_to_world (4, 4) at `eye` looking at `target`, world up +z, rotated by `roll` about z."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    down = np.array([0.0, 0.0, -1.0])
    right = np.cross(down, forward)
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    cos, sin = np.cos(roll), np.sin(roll)
    right, down = cos * right + sin * down, -sin * right + cos * down
    camera_to_world = np.eye(4)
    camera_to_world[:3, 0], camera_to_world[:3, 1], camera_to_world[:3, 2] = right, down, forward
    camera_to_world[:3, 3] = eye
    return camera_to_world


def _sample_objects(rng: np.random.Generator, room: np.ndarray, count: int) -> list[SceneObject]:
    objects: list[SceneObject] = []
    for _ in range(count * 20):
        if len(objects) == count:
            break
        kind = OBJECT_CLASSES[rng.integers(len(OBJECT_CLASSES))]
        if kind == "box":
            size = np.array([rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.4)])
        elif kind == "sphere":
            diameter = rng.uniform(0.3, 1.0)
            size = np.array([diameter, diameter, diameter])
        else:
            diameter = rng.uniform(0.2, 0.8)
            size = np.array([diameter, diameter, rng.uniform(0.3, 1.6)])
        footprint = np.hypot(size[0], size[1]) / 2
        xy = rng.uniform(footprint + 0.05, room[:2] - footprint - 0.05)
        if any(np.hypot(*(xy - o.center[:2])) < footprint + o.footprint_radius + 0.1 for o in objects):
            continue
        colour_name = list(COLOURS)[rng.integers(len(COLOURS))]
        objects.append(SceneObject(
            kind=kind, colour_name=colour_name, center=np.array([xy[0], xy[1], size[2] / 2]), size=size,
            yaw=float(rng.uniform(0, np.pi)) if kind == "box" else 0.0, pattern_scale=float(rng.uniform(0.08, 0.2)),
        ))
    return objects


def _all_free(points: np.ndarray, room: np.ndarray, centres_xy: np.ndarray, clearances: np.ndarray) -> bool:
    """Whether every point (V, 3) keeps the wall margin and stays outside every object's clearance circle."""
    if np.any(points < WALL_MARGIN_M) or np.any(points > room - WALL_MARGIN_M):
        return False
    distances = np.linalg.norm(points[:, None, :2] - centres_xy[None], axis=-1)  # (V, M)
    return bool(np.all(distances > clearances))


def _sample_trajectory(
    rng: np.random.Generator, room: np.ndarray, objects: list[SceneObject], views: int,
    centres_xy: np.ndarray, clearances: np.ndarray, level_camera_height_m: float | None = None,
) -> np.ndarray | None:
    """A quadratic Bezier path of `views` free camera positions, each looking along a smoothly moving target.
    With `level_camera_height_m` every eye and target is moved to that height and the roll is zero: the cameras
    look horizontally, as from a tripod."""
    start = rng.uniform(WALL_MARGIN_M, room - WALL_MARGIN_M)
    start[2] = rng.uniform(1.0, min(1.9, room[2] - WALL_MARGIN_M))
    heading = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.6, 2.2)
    end = start + length * np.array([np.cos(heading), np.sin(heading), 0.0]) + [0.0, 0.0, rng.uniform(-0.25, 0.25)]
    bend = (start + end) / 2 + rng.normal(0.0, 0.3, 3) * [1.0, 1.0, 0.2]
    t = np.linspace(0.0, 1.0, views)[:, None]
    eyes = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
    if not _all_free(eyes, room, centres_xy, clearances):
        return None
    anchors = [o.center for o in objects] + [rng.uniform([0, 0, 0.3], room - [0, 0, 0.3])]
    target_start = anchors[rng.integers(len(anchors))] + rng.normal(0.0, 0.2, 3)
    target_end = anchors[rng.integers(len(anchors))] + rng.normal(0.0, 0.2, 3)
    targets = (1 - t) * target_start + t * target_end
    if level_camera_height_m is not None:
        eyes[:, 2] = targets[:, 2] = level_camera_height_m
        if not _all_free(eyes, room, centres_xy, clearances):
            return None
    offsets = targets - eyes
    distance = np.linalg.norm(offsets, axis=1)
    if np.any(distance < 0.8):
        return None
    pitch = np.arcsin(np.abs(offsets[:, 2]) / distance)
    if np.any(pitch > np.radians(60)):
        return None
    roll_start, roll_end = rng.uniform(-0.08, 0.08, 2)
    if level_camera_height_m is not None:
        roll_start = roll_end = 0.0
    rolls = (1 - t[:, 0]) * roll_start + t[:, 0] * roll_end
    return np.stack([look_at(eye, target, roll) for eye, target, roll in zip(eyes, targets, rolls)])


def check_level_camera_height(level_camera_height_m: float | None) -> None:
    """Raise ValueError unless None or a height that keeps the wall margin in the lowest room."""
    lowest, highest = WALL_MARGIN_M, MIN_ROOM_HEIGHT_M - WALL_MARGIN_M
    if level_camera_height_m is not None and not lowest <= level_camera_height_m <= highest:
        raise ValueError(f"level camera height {level_camera_height_m} m is outside [{lowest}, {highest}] m "
                         f"(the wall margin in the lowest room)")


def sample_scene(seed: int, scene_index: int, views: int, height: int, width: int,
                 level_camera_height_m: float | None = None) -> Scene:
    """Draw the room, 3-10 objects and a trajectory of `views` cameras of size height x width.

    The cameras move at 1.0-1.9 m and look at objects (pitch up to 60 degrees, a little roll); with
    `level_camera_height_m` they stay at that height and look horizontally (no pitch, no roll)."""
    check_level_camera_height(level_camera_height_m)
    rng = np.random.default_rng([seed, scene_index])
    for _ in range(1000):
        room = np.array([rng.uniform(3.0, 8.0), rng.uniform(3.0, 8.0), rng.uniform(MIN_ROOM_HEIGHT_M, 3.2)])
        objects = _sample_objects(rng, room, int(rng.integers(3, 11)))
        if len(objects) < 3:
            continue
        centres_xy = np.array([o.center[:2] for o in objects])
        clearances = np.array([o.footprint_radius + OBJECT_MARGIN_M for o in objects])
        for _ in range(50):
            camera_to_world = _sample_trajectory(rng, room, objects, views, centres_xy, clearances,
                                                 level_camera_height_m)
            if camera_to_world is not None:
                break
        if camera_to_world is not None:
            break
    else:
        raise RuntimeError(f"sample_scene: no valid scene for seed {seed}, index {scene_index}")
    fov_x = np.radians(rng.uniform(50.0, 80.0))
    focal = (width / 2) / np.tan(fov_x / 2)
    K = np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])
    muted = rng.uniform(0.35, 0.85, (3, 3)) * rng.uniform(0.7, 1.0, (3, 1))
    return Scene(
        room_size=room, objects=objects, K=np.repeat(K[None], views, axis=0), camera_to_world=camera_to_world,
        height=height, width=width, floor_colour=muted[0], wall_colour=muted[1], ceiling_colour=0.5 + muted[2] / 2,
        light_position=np.array([room[0] / 2, room[1] / 2, room[2] - 0.2]) + rng.uniform(-0.5, 0.5, 3) * [room[0] / 2, room[1] / 2, 0.2],
        tile_size=float(rng.uniform(0.3, 0.7)), stripe_width=float(rng.uniform(0.1, 0.4)),
    )
