"""The 232 motion channels of DiffSHEG (SHOW) <-> SMPL-X parameters.

Layout (all SMPL-X local axis-angle in radians, except the expression coefficients):

    channels   0-128  gesture: joints 3, 6, 9, 12-21 (spine, neck, collars, head, arms), 25-54 (hands)
    channels 129-131  jaw (joint 22)
    channels 132-231  expression coefficients 0-99

Not modelled (zero = rest): global orientation (0), pelvis children and legs (1, 2, 4, 5, 7, 8,
10, 11), eyes (23, 24), translation.

Normalisation statistics come from the reference's ``talkshow_mean_std.npy`` (165-d pose in the
order jaw, left eye, right eye, global orientation, body 1-21, hands 25-54; 100-d expression).
Quirk reproduced (the released weights depend on it): the jaw's *std* is the jaw's *mean*.
"""
from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from ...motion.skeleton import JAW, N_EXPRESSIONS, N_JOINTS

N_CHANNELS = 232
GESTURE_JOINTS: tuple[int, ...] = (3, 6, 9, *range(12, 22), *range(25, 55))  # 43 joints
JAW_JOINT = JAW
CHANNEL_JOINTS: tuple[int, ...] = GESTURE_JOINTS + (JAW_JOINT,)  # joints of channels 0-131, 3 each
EXPRESSION_SLICE = slice(3 * len(CHANNEL_JOINTS), N_CHANNELS)  # 132:232

# the reference's 165-d pose order -> SMPL-X joint of each 3-block
REFERENCE_POSE_JOINTS: tuple[int, ...] = (22, 23, 24, 0, *range(1, 22), *range(25, 55))


def _joint_channels(joints) -> np.ndarray:
    """Flat axis-angle indices (3j, 3j+1, 3j+2) for each joint."""
    return (3 * np.asarray(joints)[:, None] + np.arange(3)).reshape(-1)


# -----------------------------------------------------------------------------
# Statistics


class _StatsUnpickler(pickle.Unpickler):
    """Allows only what a pickled dict of numpy float arrays needs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":  # numpy 2 renamed numpy.core to numpy._core
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def load_talkshow_stats(path: str) -> dict[str, np.ndarray]:
    """Read ``talkshow_mean_std.npy`` (a 0-d object array holding a pickled dict) safely.

    Returns float64 arrays ``pose_mean``, ``pose_std`` (165), ``expression_mean``, ``expression_std`` (100).
    """
    fmt = np.lib.format
    with open(path, "rb") as f:
        major, _ = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
        _, _, dtype = read_header(f)
        if not dtype.hasobject:
            raise ValueError(f"{path}: expected a pickled dict, found a plain {dtype} array")
        d = _StatsUnpickler(f).load()
    d = d[()] if isinstance(d, np.ndarray) else d
    keys = ("pose_mean", "pose_std", "expression_mean", "expression_std")
    return {k: np.asarray(d[k], dtype=np.float64) for k in keys}


def reference_pose_to_smplx(pose165: np.ndarray) -> np.ndarray:
    """(..., 165) pose in the reference's order -> (..., 165) in SMPL-X joint order (3j)."""
    out = np.zeros_like(pose165)
    out[..., _joint_channels(REFERENCE_POSE_JOINTS)] = pose165
    return out


def norm_stats_232(pose_mean, pose_std, expression_mean, expression_std) -> tuple[np.ndarray, np.ndarray]:
    """(mean232, std232) float32 as the reference's dataset builds them from the statistics file.

    std232's jaw entries are ``pose_mean[0:3]`` (the jaw mean; reference quirk, reproduced).
    """
    gesture = _joint_channels(GESTURE_JOINTS)
    pm = reference_pose_to_smplx(np.asarray(pose_mean, np.float64))
    ps = reference_pose_to_smplx(np.asarray(pose_std, np.float64))
    jaw_mean = np.asarray(pose_mean[0:3], np.float32)
    mean = np.concatenate([pm[gesture].astype(np.float32), jaw_mean, np.asarray(expression_mean, np.float32)])
    std = np.concatenate([ps[gesture].astype(np.float32), jaw_mean, np.asarray(expression_std, np.float32)])
    return mean, std


def denormalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalised model output -> motion: x std + mean (float32)."""
    return (np.asarray(x, np.float32) * std + mean).astype(np.float32)


def normalize(motion: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Motion -> model space: (motion - mean) / std (float32)."""
    return ((np.asarray(motion, np.float32) - mean) / std).astype(np.float32)


# -----------------------------------------------------------------------------
# 232 channels <-> SMPL-X


def to_smplx(motion: np.ndarray) -> dict[str, np.ndarray]:
    """(T, 232) de-normalised motion -> SMPL-X ``poses`` (T, 55, 3) axis-angle, ``expressions``
    (T, 100), ``trans`` (T, 3) zeros. Joints the model does not produce are at rest (0)."""
    motion = np.asarray(motion, np.float32)
    T = motion.shape[0]
    poses = np.zeros((T, 3 * N_JOINTS), np.float32)
    poses[:, _joint_channels(CHANNEL_JOINTS)] = motion[:, : EXPRESSION_SLICE.start]
    return {
        "poses": poses.reshape(T, N_JOINTS, 3),
        "expressions": motion[:, EXPRESSION_SLICE].copy(),
        "trans": np.zeros((T, 3), np.float32),
    }


def from_smplx(poses: np.ndarray, expressions: np.ndarray) -> np.ndarray:
    """SMPL-X ``poses`` (T, 55, 3) or (T, 165) and ``expressions`` (T, >= 100) -> (T, 232) motion."""
    poses = np.asarray(poses, np.float32).reshape(len(poses), -1)
    return np.concatenate(
        [poses[:, _joint_channels(CHANNEL_JOINTS)], np.asarray(expressions, np.float32)[:, :N_EXPRESSIONS]],
        axis=1,
    )
