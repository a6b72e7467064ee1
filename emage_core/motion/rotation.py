"""Rotation conversions used by every motion representation in EMAGE Studio.

Pure functions on torch tensors with any leading batch shape ``(...)``:

- axis-angle ``(..., 3)``: direction = axis, norm = angle in radians (SMPL-X ``poses``);
- rotation matrix ``(..., 3, 3)``;
- 6D ``(..., 6)``: the first two *rows* of the matrix, as EMAGE uses it
  (identity = ``[1, 0, 0, 0, 1, 0]``); decoding re-orthonormalises with Gram-Schmidt;
- unit quaternion ``(..., 4)`` as ``(w, x, y, z)``, used for slerp.

NumPy arrays are accepted too and come back as NumPy arrays of the same dtype.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_rot6d",
    "rot6d_to_matrix",
    "axis_angle_to_rot6d",
    "rot6d_to_axis_angle",
    "axis_angle_to_quaternion",
    "quaternion_to_axis_angle",
    "quaternion_multiply",
    "quaternion_conjugate",
    "quaternion_slerp",
]


def _numpy_in_numpy_out(fn):
    """Let a torch function take and return NumPy arrays as well."""

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        if isinstance(x, np.ndarray):
            dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
            args = [torch.from_numpy(np.asarray(a, dtype=dtype)) if isinstance(a, np.ndarray) else a for a in args]
            out = fn(torch.from_numpy(np.ascontiguousarray(x, dtype=dtype)), *args, **kwargs)
            return out.numpy()
        return fn(x, *args, **kwargs)

    return wrapper


@_numpy_in_numpy_out
def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrix (Rodrigues; exact near zero)."""
    angle = torch.linalg.norm(aa, dim=-1, keepdim=True)  # (..., 1)
    small = angle < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    # sin(t)/t and (1-cos t)/t^2 with Taylor forms near zero keep gradients and accuracy.
    a2 = angle * angle
    sinc = torch.where(small, 1 - a2 / 6, torch.sin(safe) / safe)
    cosc = torch.where(small, 0.5 - a2 / 24, (1 - torch.cos(safe)) / (safe * safe))
    x, y, z = aa.unbind(-1)
    zeros = torch.zeros_like(x)
    K = torch.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], dim=-1).reshape(aa.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(K.shape)
    return eye + sinc[..., None] * K + cosc[..., None] * (K @ K)


@_numpy_in_numpy_out
def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrix -> (..., 4) unit quaternion (w, x, y, z), w >= 0.

    Picks the best-conditioned of the four candidate formulas per element, so it is
    stable for every angle including 180 degrees.
    """
    m = R.reshape(R.shape[:-2] + (9,))
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    # 4*|q_i|^2 for i in (w, x, y, z)
    q_abs2 = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    q_abs = torch.sqrt(torch.clamp(q_abs2, min=0))
    cands = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    cands = cands / (2.0 * torch.clamp(q_abs[..., None], min=0.1))
    best = q_abs.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


@_numpy_in_numpy_out
def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion (w, x, y, z) -> (..., 3) axis-angle with angle in [0, pi]."""
    q = torch.where(q[..., :1] < 0, -q, q)
    xyz = q[..., 1:]
    s = torch.linalg.norm(xyz, dim=-1, keepdim=True)
    half = torch.atan2(s, q[..., :1])
    small = s < 1e-6
    # angle / sin(angle/2), with its limit 2 / w near zero
    scale = torch.where(small, 2.0 / q[..., :1].clamp(min=1e-12), 2.0 * half / torch.where(small, torch.ones_like(s), s))
    return xyz * scale


@_numpy_in_numpy_out
def axis_angle_to_quaternion(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 4) unit quaternion (w, x, y, z)."""
    angle = torch.linalg.norm(aa, dim=-1, keepdim=True)
    small = angle < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    k = torch.where(small, 0.5 - angle * angle / 48, torch.sin(safe / 2) / safe)
    return torch.cat([torch.cos(angle / 2), aa * k], dim=-1)


@_numpy_in_numpy_out
def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrix -> (..., 3) axis-angle, angle in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


@_numpy_in_numpy_out
def matrix_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows, row-major (EMAGE / PyTorch3D convention)."""
    return R[..., :2, :].reshape(R.shape[:-2] + (6,)).clone()


@_numpy_in_numpy_out
def rot6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two rows; the third row is their cross product."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


@_numpy_in_numpy_out
def axis_angle_to_rot6d(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 6)."""
    return matrix_to_rot6d(axis_angle_to_matrix(aa))


@_numpy_in_numpy_out
def rot6d_to_axis_angle(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3) axis-angle."""
    return matrix_to_axis_angle(rot6d_to_matrix(d6))


@_numpy_in_numpy_out
def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of (..., 4) quaternions (w, x, y, z), broadcasting: rotate by b, then by a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], dim=-1)


@_numpy_in_numpy_out
def quaternion_conjugate(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> (..., 4) conjugate, the inverse of a unit quaternion."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


@_numpy_in_numpy_out
def quaternion_slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of unit quaternions (..., 4) at fractions t (...,) in [0, 1].

    Takes the short way round (flips q1 when the dot product is negative) and falls
    back to normalised lerp for nearly equal rotations.
    """
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6
    safe = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe)
    return F.normalize(w0 * q0 + w1 * q1, dim=-1)
