"""Export a `Motion` as a BVH file (Biovision hierarchy), for Blender, MotionBuilder, Unity, ...

The file holds the 55 SMPL-X joints under their SMPL-X names (``pelvis`` is the ROOT; or other
names, e.g. Mixamo's):

- units: **centimetres** (the usual BVH convention; Blender's importer then wants scale 0.01);
  offsets are the rest (T-pose, Y up, facing +Z) skeleton's bone vectors: by default SMPL-X's own
  skeleton for the motion's body shape (first 10 betas, `smplx_skeleton`), in SMPL-X's model frame,
  so every joint lands where SMPL-X puts it under the motion's translation;
- every joint has ``Zrotation Xrotation Yrotation`` channels in degrees, the rotation being
  ``Rz @ Rx @ Ry`` (intrinsic Z, X, Y), parent-relative in the world-aligned rest axes, which is
  exactly SMPL-X's local axis-angle. The finger channels (joints 25-54) include SMPL-X's mean hand
  pose (as SMPL-X applies BEAT2's finger rotations, ``flat_hand_mean=False``): zero finger rotations
  in the motion show the relaxed hand, not a flat one;
- the root also has ``Xposition Yposition Zposition`` first: its absolute world position
  (``rest pelvis + trans``), while its OFFSET is the rest pelvis, as Blender and bvhio read it;
- leaves (toes, jaw, eyes, finger tips) end in an ``End Site`` half their bone's length further on;
- ``Frame Time`` is ``1 / fps``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from . import smplx_skeleton
from .kinematics import _axis_angle_to_matrix_np, rest_skeleton
from .clip import Motion
from .skeleton import JOINT_NAMES, N_JOINTS

__all__ = ["write_bvh", "matrix_to_euler_zxy", "BVH_SCALE"]

#: BVH units per metre (centimetres).
BVH_SCALE = 100.0


def matrix_to_euler_zxy(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) angles (z, x, y) in radians with R = Rz(z) Rx(x) Ry(y).

    In gimbal lock (x = +-90 degrees) y is set to 0 and z takes the whole rotation about the vertical.
    """
    R = np.asarray(R, np.float64)
    sx = np.clip(R[..., 2, 1], -1.0, 1.0)
    x = np.arcsin(sx)
    locked = np.abs(sx) > 1 - 1e-9
    z = np.where(locked, np.arctan2(R[..., 1, 0], R[..., 0, 0]), np.arctan2(-R[..., 0, 1], R[..., 1, 1]))
    y = np.where(locked, 0.0, np.arctan2(-R[..., 2, 0], R[..., 2, 2]))
    return np.stack([z, x, y], axis=-1)


def _depth_first(parents: tuple[int, ...]) -> list[int]:
    """Joint indices in the order a BVH hierarchy lists them (depth first, children in index order)."""
    children: list[list[int]] = [[] for _ in parents]
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children[j]))
    return order


def _fmt(values) -> str:
    return " ".join(f"{v:.6f}" for v in values)


def write_bvh(motion: Motion, path: str | os.PathLike, *, skeleton=None, mean_hands: bool = True,
              names: Sequence[str] | None = None) -> Path:
    """Write ``motion`` to ``path`` as a 55-joint SMPL-X BVH in centimetres; returns the path.

    ``skeleton`` gives the rest offsets: a ``(rest_joints (55, 3) metres, parents)`` pair or an object
    with ``rest_joints`` and ``parents``; by default SMPL-X's for the motion's betas
    (`kinematics.rest_skeleton`). ``mean_hands`` adds SMPL-X's mean hand pose to the finger channels
    (as `kinematics.joint_positions` does; False writes the stored rotations as they are). Expressions
    and betas are not part of a BVH and are dropped (the betas shape the skeleton). ``names``: the 55
    joint names to write, in SMPL-X joint order (default `skeleton.JOINT_NAMES`; e.g. Mixamo's from
    `emage_core.export.rigs`), unique and without spaces.
    """
    names = JOINT_NAMES if names is None else tuple(str(n) for n in names)
    if len(names) != N_JOINTS or len(set(names)) != N_JOINTS or any(not n or n.split() != [n] for n in names):
        raise ValueError("names must be 55 unique joint names without spaces")
    if skeleton is None:
        rest, parents = rest_skeleton(motion.betas)
    elif hasattr(skeleton, "rest_joints"):
        rest, parents = skeleton.rest_joints, skeleton.parents
    else:
        rest, parents = skeleton
    rest = np.asarray(rest, np.float64)
    parents = tuple(int(p) for p in parents)
    if rest.shape != (N_JOINTS, 3) or len(parents) != N_JOINTS:
        raise ValueError(f"skeleton must have 55 joints, got rest joints of shape {rest.shape}")

    order = _depth_first(parents)
    children = {j: [c for c in order if parents[c] == j] for j in order}
    offsets = rest - rest[[max(p, 0) for p in parents]]
    offsets[0] = rest[0]

    lines = ["HIERARCHY"]

    def joint(j: int, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}{'ROOT' if depth == 0 else 'JOINT'} {names[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {_fmt(offsets[j] * BVH_SCALE)}")
        position = "Xposition Yposition Zposition " if depth == 0 else ""
        lines.append(f"{pad}  CHANNELS {6 if depth == 0 else 3} {position}Zrotation Xrotation Yrotation")
        for c in children[j]:
            joint(c, depth + 1)
        if not children[j]:
            lines.append(f"{pad}  End Site")
            lines.append(f"{pad}  {{")
            lines.append(f"{pad}    OFFSET {_fmt(0.5 * offsets[j] * BVH_SCALE)}")
            lines.append(f"{pad}  }}")
        lines.append(f"{pad}}}")

    joint(0, 0)

    T = motion.n_frames
    poses = motion.poses.astype(np.float64)
    if mean_hands:
        poses = smplx_skeleton.with_mean_hands(poses)
    euler = np.degrees(matrix_to_euler_zxy(_axis_angle_to_matrix_np(poses)))  # (T, 55, 3)
    root = (rest[0] + motion.trans.astype(np.float64)) * BVH_SCALE  # (T, 3)
    frames = np.concatenate([root, euler[:, order].reshape(T, -1)], axis=1)  # (T, 3 + 55 * 3)

    lines += ["MOTION", f"Frames: {T}", f"Frame Time: {1.0 / motion.fps:.8f}"]
    body = "\n".join(_fmt(row) for row in frames)
    path = Path(path)
    path.write_text("\n".join(lines) + "\n" + body + ("\n" if T else ""))
    return path
