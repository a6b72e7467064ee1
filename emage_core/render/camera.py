"""Framing: one fixed perspective camera per clip, fitted to the clip's extent for a view.

Pure NumPy (no OpenGL): `fit_camera` frames a box, `view_region` picks the vertices a view shows,
`clip_camera` fits the box of a whole clip (a moving camera would make the body look jittery),
`motion_floor` is the floor under SMPL-X motion, from the skeleton's sole heights (never from where a
mesh happens to be). Coordinates are metres, +Y up, the rest pose facing +Z.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..motion import smplx_skeleton
from ..motion.skeleton import HEAD, NECK, PELVIS

__all__ = ["VIEWS", "Camera", "check_view", "fit_camera", "view_region", "clip_camera", "motion_floor"]

VIEWS = ("full", "upper", "face")


@dataclass(frozen=True, eq=False)
class Camera:
    """A fixed perspective camera.

    ``pose`` (4, 4) is camera-to-world in OpenGL convention (the camera looks down its -Z,
    +Y is up in the image); ``target`` (3,) is the point it looks at, the centre of the framed
    box. ``floor_y`` is the height of the floor under the clip.
    """

    pose: np.ndarray
    target: np.ndarray
    yfov: float  # vertical field of view, radians
    aspect: float  # width / height
    znear: float
    zfar: float
    floor_y: float

    def project(self, points: np.ndarray, width: int, height: int) -> np.ndarray:
        """(N, 3) world points -> (N, 2) pixel coordinates (x right, y down)."""
        p = np.asarray(points, np.float64)
        cam = (p - self.pose[:3, 3]) @ self.pose[:3, :3]  # world -> camera coordinates
        f = 1.0 / math.tan(self.yfov / 2)
        x_ndc = f / self.aspect * cam[:, 0] / -cam[:, 2]
        y_ndc = f * cam[:, 1] / -cam[:, 2]
        return np.stack([(x_ndc + 1) * width / 2, (1 - y_ndc) * height / 2], axis=1)


# Per view: vertical field of view (deg), camera elevation (deg, looking down), margin factor.
_VIEW_SETTINGS = {
    "full": (25.0, 6.0, 1.08),
    "upper": (25.0, 4.0, 1.10),
    "face": (20.0, 0.0, 1.25),
}
_MIN_EXTENT = {"full": 0.5, "upper": 0.4, "face": 0.28}  # metres: never zoom in further than this


def check_view(view: str) -> str:
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    return view


def fit_camera(lo: np.ndarray, hi: np.ndarray, aspect: float, view: str = "full",
               floor_y: float | None = None) -> Camera:
    """A camera in front of the body (on +Z, which the rest pose faces) that sees the whole box.

    Args:
        lo, hi: (3,) corners of the axis-aligned box to show, metres.
        aspect: image width / height.
        view: one of `VIEWS`; sets field of view, elevation and margin.
        floor_y: floor height (default: the bottom of the box).
    """
    yfov_deg, elev_deg, margin = _VIEW_SETTINGS[check_view(view)]
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    center = (lo + hi) / 2
    half = np.maximum((hi - lo) / 2, _MIN_EXTENT[view] / 2)
    yfov, elev = math.radians(yfov_deg), math.radians(elev_deg)
    tan_y = math.tan(yfov / 2)
    # Distance from the box's front face that fits its height (tilted by the elevation) and width.
    half_h = half[1] * math.cos(elev) + half[2] * math.sin(elev)
    dist = max(half_h / tan_y, half[0] / (tan_y * aspect)) * margin + half[2]

    forward = np.array([0.0, -math.sin(elev), -math.cos(elev)])  # where the camera looks
    eye = center - forward * dist
    z = -forward
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    pose.flags.writeable = False  # one camera per clip: nothing may nudge it
    return Camera(pose=pose, target=center, yfov=yfov, aspect=float(aspect), znear=max(0.05, dist * 0.1),
                  zfar=dist + 30.0, floor_y=float(lo[1] if floor_y is None else floor_y))


def view_region(rest_vertices: np.ndarray, rest_joints: np.ndarray, view: str) -> np.ndarray | None:
    """(V,) bool: the vertices a view frames, chosen on the rest T-pose; None = all (``full``).

    ``upper``: everything above the pelvis (arms included). ``face``: the head, i.e. above the
    middle of the neck and within 0.15 m of the head's midline (the T-pose hands are lower
    and farther out).
    """
    view = check_view(view)
    if view == "full":
        return None
    v, j = np.asarray(rest_vertices), np.asarray(rest_joints)
    if view == "upper":
        return v[:, 1] >= j[PELVIS, 1]
    return (v[:, 1] >= (j[NECK, 1] + j[HEAD, 1]) / 2) & (np.abs(v[:, 0] - j[HEAD, 0]) < 0.15)


def clip_camera(vertices: np.ndarray | Iterable[np.ndarray], view: str, aspect: float,
                region: np.ndarray | None = None, floor_y: float | None = None) -> Camera:
    """The one camera for a clip: fits the region's extent over all given frames.

    Args:
        vertices: (T, V, 3) or an iterable of (T_i, V, 3) chunks (e.g. every 3rd frame of a long
            clip, so the clip is never in memory whole).
        view: one of `VIEWS`.
        aspect: image width / height.
        region: (V,) bool of the vertices to frame (`view_region`); None: all.
        floor_y: the floor's height, for SMPL-X motion `motion_floor`; None: under the lowest vertex
            of the whole body over the clip (for meshes that are not posed SMPL-X motion).
    """
    chunks = [vertices] if isinstance(vertices, np.ndarray) else vertices
    lo, hi, bottom = np.full(3, np.inf), np.full(3, -np.inf), np.inf
    for chunk in chunks:
        c = np.asarray(chunk, np.float32).reshape(-1, np.shape(chunk)[-2], 3)
        bottom = min(bottom, float(c[..., 1].min()))
        if region is not None:
            c = c[:, region]
        lo = np.minimum(lo, c.reshape(-1, 3).min(0))
        hi = np.maximum(hi, c.reshape(-1, 3).max(0))
    if not np.isfinite(lo).all():
        raise ValueError("cannot frame an empty clip")
    return fit_camera(lo, hi, aspect, view, floor_y=bottom if floor_y is None else floor_y)


def motion_floor(motions) -> float:
    """The floor (world y, metres) under SMPL-X motions shown together: where SMPL-X's soles stand for
    each motion's shape under its translation (`smplx_skeleton.clip_floor`: 0 for the neutral shape
    under BEAT2 / EMAGE translations); the lowest of them when the clips' floors differ (different
    shapes, differ by centimetres). Nothing is measured on the posed body.
    """
    return min(smplx_skeleton.clip_floor(m.trans, m.betas) for m in motions)
