"""Comparing our outputs with the reference's golden outputs, where rounding cannot be matched exactly.

The reference turns decoded rotations into axis-angle with a quaternion formula that takes every
component from the matrix diagonal: ``x = sqrt(1 + m00 - m11 - m22) / 2``. Where that sum is at float32
rounding level (1e-7), the component is rounding noise amplified by the square root (sqrt(1.2e-7) =
3.5e-4), so two machines whose float kernels round differently (seen: Intel vs AMD EPYC CPUs, same
torch) disagree there by up to ~3e-4, while everything upstream (latents, codes) agrees within 2e-6.
Rotations are therefore compared in two tiers: well-conditioned ones component by component (the
golden tolerance, 1e-4), ill-conditioned ones by the angle between the two rotations (5e-4 rad).
"""
from __future__ import annotations

import numpy as np

from emage_core.motion import rotation

ATOL = 1e-4
ILL_CONDITIONED = 1e-5  # smallest diagonal sum (see above) below which a component is rounding noise
GEODESIC_ATOL = 5e-4  # radians, for ill-conditioned rotations only


def _diagonal_sums(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (...) smallest of the four sums the reference takes square roots of."""
    d = np.diagonal(R, axis1=-2, axis2=-1)
    sums = np.stack([1 + d[..., 0] - d[..., 1] - d[..., 2], 1 - d[..., 0] + d[..., 1] - d[..., 2],
                     1 - d[..., 0] - d[..., 1] + d[..., 2], 1 + d.sum(-1)], -1)
    return sums.min(-1)


def _compare(R_got: np.ndarray, R_want: np.ndarray, got: np.ndarray, want: np.ndarray, what: str) -> None:
    ill = _diagonal_sums(R_want.astype(np.float64)) < ILL_CONDITIONED
    np.testing.assert_allclose(got[~ill], want[~ill], atol=ATOL, rtol=0, err_msg=f"{what} (well-conditioned)")
    rel = np.swapaxes(R_got.astype(np.float64), -1, -2) @ R_want.astype(np.float64)
    angle = np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1) / 2, -1, 1))
    assert angle.max() < GEODESIC_ATOL, f"{what}: rotations {angle.max():.2e} rad apart"
    # identity rotations (the eyes, resting joints) count as ill-conditioned too; most must not be
    assert ill.mean() < 0.1, f"{what}: {ill.mean():.1%} of rotations ill-conditioned; the test would say little"


def assert_axis_angle_matches(got, want, what: str = "motion_axis_angle") -> None:
    """``got``/``want`` (..., 165) or (..., 55, 3) axis-angle."""
    got = np.asarray(got, np.float64).reshape(-1, 3)
    want = np.asarray(want, np.float64).reshape(-1, 3)
    _compare(rotation.axis_angle_to_matrix(got), rotation.axis_angle_to_matrix(want), got, want, what)


def assert_rot6d_motion_matches(got, want, what: str = "all_motion4inference") -> None:
    """``got``/``want`` (..., 337): 55 x 6D rotations, then translation and contacts."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_allclose(got[..., 330:], want[..., 330:], atol=ATOL, rtol=0, err_msg=f"{what} (trans, contact)")
    g6, w6 = got[..., :330].reshape(-1, 6), want[..., :330].reshape(-1, 6)
    _compare(rotation.rot6d_to_matrix(g6), rotation.rot6d_to_matrix(w6), g6, w6, what)
