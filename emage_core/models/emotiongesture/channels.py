"""EmotionGesture's pose channels <-> SMPL-X: the upper body and the hands, 43 joints in 6D.

The paper models BEAT's 47-joint upper body (a BVH skeleton). The studio speaks SMPL-X, so the model
works on the SMPL-X joints that cover the same body, in this order:

    joints 3, 6, 9, 12-21  upper: spine1-3, neck, collars, head, shoulders, elbows, wrists (13)
    joints 25-54           hands: 15 finger joints per hand, 3 per finger (30)

BEAT's BVH skeleton has a few more segments in the spine, neck and finger bases than SMPL-X; they
have no SMPL-X counterpart and are simply not there. Everything else SMPL-X has is not modelled and
stays at rest: the face (jaw, eyes, FLAME expressions), the pelvis, global orientation and the legs
(the "lower" part), and the translation ("global").

Each joint is its parent-relative rotation in the 6D representation (the first two rows of the
rotation matrix, `motion.rotation.matrix_to_rot6d`): 43 x 6 = 258 channels, normalised by per-channel
statistics of the training data (saved with the checkpoint).
"""
from __future__ import annotations

import numpy as np

from ...motion import rotation
from ...motion.skeleton import HANDS_JOINTS, N_JOINTS, UPPER_JOINTS

JOINTS: tuple[int, ...] = tuple(UPPER_JOINTS) + tuple(HANDS_JOINTS)  # 43 SMPL-X joints
N_CHANNELS = 6 * len(JOINTS)  # 258


def part_channels(part: str) -> list[int]:
    """Channels of the 258 that a part ("upper" or "hands") owns; [] for parts not modelled."""
    joints = {"upper": UPPER_JOINTS, "hands": HANDS_JOINTS}.get(part, ())
    return [6 * JOINTS.index(j) + k for j in joints for k in range(6)]


def from_smplx(poses: np.ndarray) -> np.ndarray:
    """SMPL-X axis-angle poses (T, 55, 3) or (T, 165) -> (T, 258) float32 6D channels."""
    poses = np.asarray(poses, np.float32).reshape(len(poses), N_JOINTS, 3)
    return rotation.axis_angle_to_rot6d(poses[:, list(JOINTS)]).reshape(len(poses), N_CHANNELS).astype(np.float32)


def to_smplx(channels: np.ndarray) -> np.ndarray:
    """(T, 258) 6D channels (not normalised) -> (T, 55, 3) float32 axis-angle; joints not modelled at rest."""
    channels = np.asarray(channels, np.float32)
    T = channels.shape[0]
    poses = np.zeros((T, N_JOINTS, 3), np.float32)
    poses[:, list(JOINTS)] = rotation.rot6d_to_axis_angle(channels.reshape(T, len(JOINTS), 6))
    return poses


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Channels -> model space: (x - mean) / std, float32."""
    return ((np.asarray(x, np.float32) - mean) / std).astype(np.float32)


def denormalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Model space -> channels: x std + mean, float32."""
    return (np.asarray(x, np.float32) * std + mean).astype(np.float32)
