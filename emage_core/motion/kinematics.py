"""Forward kinematics of the 55-joint SMPL-X skeleton: axis-angles in, joint positions out.

SMPL-X semantics (as in ``smplx/lbs.py``): the rest pose is a T-pose, Y up, facing +Z; each joint's
axis-angle is its rotation relative to its parent, expressed in the world-aligned rest axes; the
root (pelvis) sits at ``rest_joints[0] + trans`` and turns about itself.

The rest skeleton is SMPL-X's own for the motion's body shape (first 10 betas) and finger rotations
get SMPL-X's mean hand pose added, as BEAT2 and EMAGE use them (`smplx_skeleton`: extracted from
mannequin-x, no licence-restricted model file needed). `joint_positions` does both, so metrics, BVH,
the stick figure and style edits see the joints SMPL-X would put there. Everything here is NumPy in /
NumPy out; torch tensors work too (and stay differentiable, e.g. for training losses).
"""
from __future__ import annotations

import functools

from typing import Sequence

import numpy as np
import torch

from . import rotation, smplx_skeleton
from ..assets import ANNY_BODY
from .skeleton import PARENTS

#: The baked free Anny body (made by ``scripts/bake_body.py``); its mesh is posed on the SMPL-X skeleton.
BODY_ASSET = ANNY_BODY

__all__ = ["BODY_ASSET", "forward_kinematics", "rest_skeleton", "joint_positions"]


def forward_kinematics(poses, trans, rest_joints, parents: Sequence[int] = PARENTS):
    """Pose a skeleton: local axis-angles -> world joint positions and rotations.

    Args:
        poses: (..., J, 3) axis-angle of each joint relative to its parent (world-aligned rest axes).
        trans: (..., 3) root translation in metres.
        rest_joints: (J, 3) joint positions of the rest (T-) pose in metres.
        parents: J parent indices, the root's negative; every parent must come before its children
            (true for SMPL-X's order).

    Returns:
        positions: (..., J, 3) world joint positions; ``positions[..., 0] = rest_joints[0] + trans``.
        rotations: (..., J, 3, 3) world rotation of each joint (parent rotation @ local rotation).

    NumPy inputs give NumPy outputs in the poses' dtype (float32 or float64; about 15 ms for
    2000 frames); torch tensors give torch tensors (differentiable).
    """
    if not isinstance(poses, torch.Tensor):
        poses = np.asarray(poses)
        poses = poses.astype(poses.dtype if poses.dtype in (np.float32, np.float64) else np.float64, copy=False)
        rest_joints = np.asarray(rest_joints)
        trans = np.asarray(trans)
    J = poses.shape[-2]
    levels, parent_idx = _levels(tuple(int(p) for p in parents), J)
    if tuple(rest_joints.shape) != (J, 3):
        raise ValueError(f"rest_joints has shape {tuple(rest_joints.shape)}, expected ({J}, 3)")
    if tuple(trans.shape) != tuple(poses.shape[:-2]) + (3,):
        raise ValueError(f"trans has shape {tuple(trans.shape)}, expected {tuple(poses.shape[:-2]) + (3,)}")

    if isinstance(poses, torch.Tensor):
        # np.array copies: the cached rest skeleton is read-only, which torch warns about
        rest, trans = (x.to(poses) if isinstance(x, torch.Tensor) else torch.tensor(np.array(x), dtype=poses.dtype,
                                                                                     device=poses.device)
                       for x in (rest_joints, trans))
        local = rotation.axis_angle_to_matrix(poses)
        rots = [None] * J  # a list, not in-place writes, keeps autograd happy
        pos = [None] * J
        rots[0], pos[0] = local[..., 0, :, :], rest[0] + trans
        offsets = rest - rest[parent_idx]
        for level in levels:
            for j in level:  # torch: per joint (in level order) is simplest and differentiable
                p = parent_idx[j]
                rots[j] = rots[p] @ local[..., j, :, :]
                pos[j] = pos[p] + (rots[p] @ offsets[j, :, None])[..., 0]
        return torch.stack(pos, dim=-2), torch.stack(rots, dim=-3)

    dtype = poses.dtype
    rest = rest_joints.astype(dtype, copy=False)
    local = _axis_angle_to_matrix_np(poses)  # (..., J, 3, 3)
    offsets = rest - rest[parent_idx]  # (J, 3) each joint's rest offset from its parent
    rots = np.empty_like(local)
    pos = np.empty(poses.shape, dtype)
    rots[..., 0, :, :] = local[..., 0, :, :]
    pos[..., 0, :] = rest[0] + trans.astype(dtype, copy=False)
    # One batched product per depth level (10 for SMPL-X) instead of one per joint.
    for level in levels:
        par = parent_idx[level]
        parent_rot = rots[..., par, :, :]
        rots[..., level, :, :] = parent_rot @ local[..., level, :, :]
        pos[..., level, :] = pos[..., par, :] + (parent_rot @ offsets[level, :, None])[..., 0]
    return pos, rots


@functools.lru_cache(maxsize=16)
def _levels(parents: tuple[int, ...], n_joints: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The non-root joints grouped by depth (parents always in an earlier group), and the parent
    index of every joint (the root's set to 0)."""
    if len(parents) != n_joints:
        raise ValueError(f"poses have {n_joints} joints but parents has {len(parents)}")
    if parents[0] >= 0 or any(p < 0 for p in parents[1:]):
        raise ValueError("expected a single root, joint 0")
    depth = [0] * n_joints
    for j, p in enumerate(parents[1:], start=1):
        if p >= j:
            raise ValueError(f"joint {j}'s parent {p} does not come before it")
        depth[j] = depth[p] + 1
    levels = [np.array([j for j in range(n_joints) if depth[j] == d]) for d in range(1, max(depth) + 1)]
    return levels, np.array([max(p, 0) for p in parents])


def _axis_angle_to_matrix_np(aa: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrix (Rodrigues), NumPy, same dtype.

    R = cos(t) I + sinc(t) [a]x + (1 - cos t) / t^2 a a^T, with Taylor forms for t near 0.
    """
    angle = np.linalg.norm(aa, axis=-1)
    small = angle < 1e-4
    safe = np.where(small, 1, angle)
    a2 = angle * angle
    cos = np.cos(angle)
    sinc = np.where(small, 1 - a2 / 6, np.sin(safe) / safe)
    cosc = np.where(small, 0.5 - a2 / 24, (1 - np.cos(safe)) / (safe * safe))
    x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
    R = np.empty(aa.shape + (3,), aa.dtype)
    R[..., 0, 0] = cos + cosc * x * x
    R[..., 0, 1] = cosc * x * y - sinc * z
    R[..., 0, 2] = cosc * x * z + sinc * y
    R[..., 1, 0] = cosc * y * x + sinc * z
    R[..., 1, 1] = cos + cosc * y * y
    R[..., 1, 2] = cosc * y * z - sinc * x
    R[..., 2, 0] = cosc * z * x - sinc * y
    R[..., 2, 1] = cosc * z * y + sinc * x
    R[..., 2, 2] = cos + cosc * z * z
    return R


@functools.lru_cache(maxsize=64)
def _rest_skeleton(key: bytes) -> np.ndarray:
    joints = np.ascontiguousarray(smplx_skeleton.rest_joints(np.frombuffer(key, np.float32)), dtype=np.float32)
    joints.flags.writeable = False  # shared by every caller
    return joints


def rest_skeleton(betas=None) -> tuple[np.ndarray, tuple[int, ...]]:
    """SMPL-X's rest skeleton for a body shape: ``(rest_joints (55, 3) float32 metres, parents)``.

    ``betas`` (B,): only the first 10 matter (see `smplx_skeleton`); None: the neutral shape.
    Cached per shape (the array is read-only; copy it to modify). Rest pose: T-pose, Y up, facing +Z,
    in SMPL-X's model frame (the neutral pelvis at about (0.003, -0.351, 0.012), soles at y = -1.302).
    """
    return _rest_skeleton(smplx_skeleton.shape_key(betas)), PARENTS


def joint_positions(motion) -> np.ndarray:
    """(T, 55, 3) float32 world joint positions of a `Motion`, as SMPL-X puts them: its rest skeleton
    for the motion's ``betas`` (first 10) and its mean hand pose added to the finger rotations."""
    rest, parents = rest_skeleton(motion.betas)
    return forward_kinematics(smplx_skeleton.with_mean_hands(motion.poses), motion.trans, rest, parents)[0]
