"""Instant 2D stick-figure preview: joint positions drawn as lines, seen from the front.

No OpenGL and no body mesh: joints come from `emage_core.motion.kinematics.joint_positions` (SMPL-X's
skeleton for the motion's shape, with its mean hand pose), are
projected orthographically onto the X-Y plane (the viewer stands on +Z, which the rest pose
faces, so the character's left is on the image's right) and drawn with Pillow. A 256x256 frame
takes well under 5 ms, so previews appear before a mesh render could start.

Use it through `emage_core.render.grid.render_motion(..., renderer="stick")` / `render_grid`, or
directly: ``StickRenderer(w, h, view).fit(joints)`` once, then ``render_frame(joints[t])``.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .camera import check_view
from ..motion.skeleton import EYES, HANDS_JOINTS, HEAD, JAW, JOINT_NAMES, LOWER_JOINTS, NECK, PARENTS, PELVIS

__all__ = ["STICK_BONES", "StickRenderer"]

#: (child, parent) joint pairs drawn as lines: every SMPL-X bone except the two eyes, which sit inside
#: the head circle (52).
STICK_BONES: tuple[tuple[int, int], ...] = tuple(
    (j, PARENTS[j]) for j in range(1, len(PARENTS)) if j not in EYES)

HEAD_RADIUS_M = 0.10
_LEG_JOINTS = tuple(j for j in LOWER_JOINTS if j != PELVIS)

BACKGROUND = (240, 241, 244)
FLOOR = (200, 202, 206)
_COLORS = {"left": (52, 110, 200), "right": (222, 112, 40), "center": (70, 70, 78)}


def _side(j: int) -> str:
    name = JOINT_NAMES[j]
    return "left" if name.startswith("left") else "right" if name.startswith("right") else "center"


_BONE_COLORS = [_COLORS[_side(c)] for c, _ in STICK_BONES]
_IS_FINGER = np.array([c in HANDS_JOINTS for c, _ in STICK_BONES])


class StickRenderer:
    """Draws (55, 3) joint positions as a stick figure on (height, width, 3) uint8 frames.

    Args:
        width, height: image size in pixels.
        view: ``full`` (whole body), ``upper`` (pelvis up) or ``face`` (head close-up).

    Call `fit` with the whole clip's joints first: it fixes the framing for every frame.
    """

    def __init__(self, width: int = 256, height: int = 256, view: str = "full"):
        check_view(view)
        self.width, self.height, self.view = int(width), int(height), view
        self.scale = 1.0  # pixels per metre
        self.center = np.zeros(2)  # world (x, y) at the image centre
        self.floor_y: float | None = None

    def fit(self, joints: np.ndarray, floor_y: float | None = None) -> "StickRenderer":
        """Fix the framing from (T, 55, 3) joints: the view's joints over the whole clip fit.

        ``floor_y``: the floor's height in the full view (for SMPL-X motion `camera.motion_floor`: the
        soles, a few cm below the ankle and foot joints); None: at the lowest joint.
        """
        j = np.asarray(joints, np.float64).reshape(-1, len(PARENTS), 3)
        # pad = (above, elsewhere) in metres: the head circle reaches above the head joint.
        if self.view == "full":
            pts, pad, margin = j, (0.2, 0.06), 1.1
        elif self.view == "upper":
            keep = [k for k in range(len(PARENTS)) if k not in _LEG_JOINTS]
            pts, pad, margin = j[:, keep], (0.2, 0.06), 1.1
        else:
            pts, pad, margin = j[:, [NECK, HEAD, JAW, *EYES]], (0.2, 0.12), 1.15
        lo = pts[..., :2].reshape(-1, 2).min(0) - pad[1]
        hi = pts[..., :2].reshape(-1, 2).max(0) + np.array([pad[1], pad[0]])
        if self.view == "full":
            self.floor_y = float(j[..., 1].min()) if floor_y is None else float(floor_y)
            if lo[1] - 0.3 < self.floor_y < lo[1]:
                lo[1] = self.floor_y - 0.02  # the floor line stays in the picture (unless far away)
        else:
            self.floor_y = None
        extent = np.maximum(hi - lo, 0.2) * margin
        self.scale = float(min(self.width / extent[0], self.height / extent[1]))
        self.center = (lo + hi) / 2
        return self

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 2) pixel coordinates (x right, y down)."""
        p = np.asarray(points, np.float64)
        x = (p[..., 0] - self.center[0]) * self.scale + self.width / 2
        y = (self.center[1] - p[..., 1]) * self.scale + self.height / 2
        return np.stack([x, y], axis=-1)

    def render_frame(self, joints: np.ndarray) -> np.ndarray:
        """(55, 3) joint positions of one frame -> (height, width, 3) uint8."""
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (self.width, self.height), BACKGROUND)
        draw = ImageDraw.Draw(img)
        px = self.to_pixels(joints)
        if self.floor_y is not None:
            fy = float(self.to_pixels(np.array([0.0, self.floor_y, 0.0]))[1])
            draw.line([(0, fy), (self.width, fy)], fill=FLOOR, width=max(1, self.height // 128))
        body_w = max(2, round(self.scale * 0.03))
        finger_w = max(1, round(self.scale * 0.008))
        z = np.asarray(joints)[:, 2]
        # Far bones first so the near arm is drawn over the body.
        order = np.argsort([z[c] + z[p] for c, p in STICK_BONES], kind="stable")
        for b in order:
            c, p = STICK_BONES[b]
            draw.line([tuple(px[p]), tuple(px[c])], fill=_BONE_COLORS[b],
                      width=finger_w if _IS_FINGER[b] else body_w)
        # The head joint sits at the skull base: centre the circle a little further along the neck.
        j = np.asarray(joints, np.float64)
        up = j[HEAD] - j[NECK]
        center = j[HEAD] + up / (np.linalg.norm(up) + 1e-9) * 0.08
        r = HEAD_RADIUS_M * self.scale
        hx, hy = self.to_pixels(center)
        draw.ellipse([hx - r, hy - r, hx + r, hy + r], outline=_COLORS["center"], width=body_w)
        return np.array(img)  # a writable copy (labels are drawn onto frames)

    def render_clip(self, joints: np.ndarray) -> Iterator[np.ndarray]:
        """(T, 55, 3) joints -> frames, framed once for the whole clip."""
        self.fit(joints)
        for j in joints:
            yield self.render_frame(j)
