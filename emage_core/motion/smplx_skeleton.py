"""The SMPL-X skeleton without the SMPL-X model files: rest joints for a body shape, the mean hand pose,
and the floor under the feet. Every skeleton output uses it (`kinematics.joint_positions`, BVH, the
stick figure, metrics, the bodies and the camera's floor).

Data: ``assets/smplx_skeleton.npz`` (35 KB), extracted by ``scripts/bake_smplx_skeleton.py`` from the
PyPI package mannequin-x 0.3.0 (Apache-2.0; ``assets/LICENSE.mannequin-x.txt``), which computed it
from the SMPL-X neutral model. Nothing here imports mannequin-x.

Conventions (SMPL-X's, as in ``smplx/lbs.py``): metres, the SMPL-X model frame (rest T-pose, Y up,
facing +Z; the neutral pelvis at about (0.003, -0.351, 0.012), the neutral soles at y = -1.302);
joint order and parents as `skeleton.JOINT_NAMES` / `skeleton.PARENTS`.

What is exact and what is not:

- the 52 joints other than jaw and eyes are SMPL-X's (its joint regressor on the shaped template) for
  the first 10 betas, exactly (joints are linear in betas);
- betas 10..299 are ignored. In SMPL-X they do move the rest joints (``J = J_regressor @ (v_template +
  shapedirs @ [betas, expression])``: all 300 betas and even the 100 expression coefficients), but the
  calibration holds only the first 10 directions, so their effect (centimetres at most for BEAT2's
  speakers, whose betas[10:] reach |2|) cannot be measured or applied without the model files;
- jaw (22) and eyes (23, 24) are not in mannequin-x: they are estimated from the Anny body's head
  placed in SMPL-X's head box (about +-2 cm). They are leaves, so no other joint depends on them;
- the mean hand pose (`with_mean_hands`) is SMPL-X's (MANO's ``hands_mean``): BEAT2 stores finger
  rotations relative to it (SMPL-X with ``flat_hand_mean=False``, as EMAGE's renderer uses it).

NumPy in, NumPy out; torch tensors work in `rest_joints` and `with_mean_hands` too (differentiable).
"""
from __future__ import annotations

import functools

import numpy as np

from ..assets import SMPLX_SKELETON
from .skeleton import JOINT_NAMES, N_JOINTS, PARENTS

__all__ = ["SKELETON_ASSET", "N_SHAPE", "ESTIMATED_JOINTS", "DESCRIPTION", "rest_joints", "shape_key", "hand_mean",
           "with_mean_hands", "rest_floor", "floor_height", "clip_floor", "sole_points", "lowest_foot_point",
           "licence"]

SKELETON_ASSET = SMPLX_SKELETON
N_SHAPE = 10  #: shape coefficients the skeleton depends on (of SMPL-X's 300)

#: What every output's metadata says about the skeleton it used.
DESCRIPTION = ("SMPL-X: rest joints from the motion's first 10 betas (mannequin-x 0.3.0 calibration; jaw and eyes "
               "estimated), SMPL-X's mean hand pose added to the finger rotations (flat_hand_mean=False)")


@functools.lru_cache(maxsize=None)
def _asset() -> dict[str, np.ndarray]:
    with np.load(SKELETON_ASSET, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    if tuple(str(s) for s in out["joint_names"]) != JOINT_NAMES or tuple(int(p) for p in out["parents"]) != PARENTS:
        raise ValueError(f"{SKELETON_ASSET}: its joints are not the 55 SMPL-X joints")
    for k in ("rest_joints", "joint_dirs", "hand_mean", "mean_pose", "sole_y_rest", "sole_y_dirs", "sole_points"):
        out[k] = out[k].astype(np.float64)
    for v in out.values():
        v.flags.writeable = False  # shared by every caller
    return out


ESTIMATED_JOINTS: tuple[int, ...] = (22, 23, 24)  #: jaw and eyes: estimated, not SMPL-X's own


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _shape10(betas) -> np.ndarray:
    """(10,) float64: the first 10 betas, zero-padded; None -> zeros."""
    if betas is None:
        return np.zeros(N_SHAPE)
    b = np.asarray(betas, np.float64).reshape(-1)[:N_SHAPE]
    return np.pad(b, (0, N_SHAPE - len(b)))


def shape_key(betas) -> bytes:
    """A hashable key of the shape the skeleton depends on (the first 10 betas, float32), for caches."""
    return _shape10(betas).astype(np.float32).tobytes()


def rest_joints(betas=None):
    """SMPL-X rest (T-pose) joint positions for a body shape.

    Args:
        betas: (B,) shape coefficients, any B (BEAT2 stores 300); only the first 10 are used. None:
            the neutral shape. A torch tensor gives a torch tensor (differentiable in betas[:10]).
    Returns:
        (55, 3) metres in the SMPL-X model frame, float64 (torch: the betas' dtype).
    """
    a = _asset()
    if _is_torch(betas):
        import torch

        b = betas.reshape(-1)[:N_SHAPE]
        if b.shape[0] < N_SHAPE:
            b = torch.cat([b, b.new_zeros(N_SHAPE - b.shape[0])])
        rest = torch.as_tensor(np.array(a["rest_joints"]), dtype=b.dtype, device=b.device)
        dirs = torch.as_tensor(np.array(a["joint_dirs"]), dtype=b.dtype, device=b.device)
        return rest + dirs @ b
    return a["rest_joints"] + a["joint_dirs"] @ _shape10(betas)


def hand_mean() -> np.ndarray:
    """(30, 3) SMPL-X's mean hand pose, axis-angles: left hand joints 25..39, then right 40..54."""
    return np.array(_asset()["hand_mean"])


def with_mean_hands(poses):
    """Finger rotations as SMPL-X applies them with ``flat_hand_mean=False`` (BEAT2, EMAGE): the mean
    hand pose added to joints 25..54. Zero finger rotations then give the relaxed hand.

    Args:
        poses: (..., 55, 3) or (..., 165) axis-angles, NumPy or torch.
    Returns:
        a new array of the same shape and type (NumPy float32 stays float32).
    """
    flat = poses.shape[-1] == 3 * N_JOINTS
    p = poses.reshape(*poses.shape[:-1], N_JOINTS, 3) if flat else poses
    if tuple(p.shape[-2:]) != (N_JOINTS, 3):
        raise ValueError(f"poses must end in (55, 3) or (165,), got {tuple(poses.shape)}")
    if _is_torch(p):
        import torch

        out = p + torch.as_tensor(np.array(_asset()["mean_pose"]), dtype=p.dtype, device=p.device)
    else:
        p = np.asarray(p)
        dtype = p.dtype if p.dtype in (np.float32, np.float64) else np.float64
        out = p.astype(dtype, copy=False) + _asset()["mean_pose"].astype(dtype)
    return out.reshape(poses.shape) if flat else out


def rest_floor(betas=None) -> float:
    """Height (y, metres) of SMPL-X's soles at zero pose and zero translation for a body shape (first
    10 betas), in the model frame: -1.3018 for the neutral shape."""
    a = _asset()
    return float((a["sole_y_rest"] + a["sole_y_dirs"] @ _shape10(betas)).min())


def floor_height(betas=None) -> float:
    """World height of the floor under SMPL-X motion with BEAT2's translations, for a body shape.

    BEAT2's ``trans`` keeps the neutral shape's soles at y = 0 (checked on the BEAT2 sample, whose
    lowest sole point is within 3 cm of this floor in 98% of frames; see tests/test_smplx_skeleton.py),
    so a shape whose soles sit lower in the model frame stands on ``rest_floor(betas) - rest_floor()``.
    0 for the neutral shape (EMAGE's output). Nothing is measured per clip.
    """
    return rest_floor(betas) - rest_floor(None)


def clip_floor(trans, betas=None) -> float:
    """The floor under a clip: `floor_height` for BEAT2-style translations; `rest_floor` (the model
    frame's floor) when the clip has no vertical translation at all (every ``trans[:, 1]`` is 0: the
    global part at rest, e.g. a family that does not generate it). Depends on the shape and on whether
    the clip is translated, never on where its vertices are.

    Args:
        trans: (T, 3) translations; betas: (B,) shape.
    """
    t = np.asarray(trans)
    at_rest = t.size == 0 or not np.any(t[..., 1])
    return rest_floor(betas) if at_rest else floor_height(betas)


def sole_points(betas=None) -> tuple[np.ndarray, np.ndarray]:
    """A footprint under each foot at zero pose, for finding the lowest foot point of a posed body.

    Returns:
        points (P, 3) float64 rest positions (metres, model frame), lowest at ``rest_floor(betas)``;
        joints (P,) the SMPL-X joint carrying each point (ankles 7/8, feet 10/11).
    The footprint is mannequin-x's wooden feet (fitted by mannequin-x to the SMPL-X floor), not SMPL-X's
    own sole vertices, whose heights alone are known: expect about 1 cm differences in x and z.
    """
    a = _asset()
    joints = a["sole_joints"].astype(np.int64)
    pts = rest_joints(betas)[joints] + a["sole_points"]
    pts[:, 1] += rest_floor(betas) - pts[:, 1].min()
    return pts, joints


def lowest_foot_point(poses, trans, betas=None) -> np.ndarray:
    """(T,) world height of the lowest sole point of SMPL-X motion in each frame.

    Args:
        poses: (T, 55, 3) or (T, 165) axis-angles as BEAT2 stores them; trans: (T, 3); betas: (B,).
    """
    from .kinematics import forward_kinematics

    trans = np.asarray(trans, np.float64)
    poses = np.asarray(poses, np.float64).reshape(len(trans), N_JOINTS, 3)
    rest = rest_joints(betas)
    pos, rot = forward_kinematics(poses, trans, rest)  # the mean hand does not move the feet
    pts, joints = sole_points(betas)
    world = pos[:, joints] + np.einsum("tpij,pj->tpi", rot[:, joints], pts - rest[joints])
    return world[..., 1].min(axis=1)


def licence() -> str:
    """The notice stored in the asset: where its arrays come from, and what was changed."""
    return str(_asset()["licence"][0])
