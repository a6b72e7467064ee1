"""Axis-angle -> rot6d exactly as the FGD evaluator's input is made.

The reference goes axis-angle -> quaternion -> matrix (pytorch3d formulas) and keeps the first two
*rows* of the matrix (R00 R01 R02 R10 R11 R12). The quaternion route and the small-angle series
matter only at float32 rounding level, but following them keeps the encoder input bit-close.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["axis_angle_to_quaternion", "quaternion_to_matrix", "axis_angle_to_rot6d", "poses_to_rot6d"]

_SMALL_ANGLE = 1e-6  # below it sin(θ/2)/θ is replaced by its series 1/2 - θ²/48


def axis_angle_to_quaternion(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 4) quaternion (w, x, y, z), not sign-normalised."""
    angle = torch.linalg.vector_norm(aa, dim=-1, keepdim=True)
    small = angle.abs() < _SMALL_ANGLE
    safe = torch.where(small, torch.ones_like(angle), angle)
    k = torch.where(small, 0.5 - angle * angle / 48, torch.sin(0.5 * safe) / safe)
    return torch.cat([torch.cos(0.5 * angle), aa * k], dim=-1)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion (w, x, y, z), any norm -> (..., 3, 3) rotation matrix."""
    w, x, y, z = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)  # divides out a non-unit norm
    rows = (
        1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
        s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
        s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
    )
    return torch.stack(rows, -1).reshape(q.shape[:-1] + (3, 3))


def axis_angle_to_rot6d(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 6): the rotation matrix's first two rows, row-major."""
    m = quaternion_to_matrix(axis_angle_to_quaternion(aa))
    return m[..., :2, :].reshape(aa.shape[:-1] + (6,))


def poses_to_rot6d(poses: np.ndarray | torch.Tensor, joints: np.ndarray | list[int] | None = None) -> torch.Tensor:
    """BEAT2 poses (T, 3*J_all) axis-angle -> (T, 6*J) float32 encoder input.

    ``joints`` selects which SMPL-X joints (in that order) the encoder reads; None = all.
    Computed in the input's precision and cast to float32 afterwards, as `evaluation_fn` does
    (float64 poses from a generated npz stay float64 through the conversion).
    """
    p = poses if torch.is_tensor(poses) else torch.from_numpy(np.ascontiguousarray(poses))
    if not p.is_floating_point():
        p = p.to(torch.float32)
    p = p.reshape(p.shape[0], -1, 3)
    if joints is not None:
        p = p[:, list(joints)]
    return axis_angle_to_rot6d(p).reshape(p.shape[0], -1).to(torch.float32)
