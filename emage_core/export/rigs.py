"""Bone naming conventions for exported skeletons: SMPL-X's own or Mixamo's.

Both rigs are the same 55-joint SMPL-X tree (`skeleton.PARENTS`) with the same rest offsets and
rotations; only the names differ. Mixamo's humanoid tree has exactly SMPL-X's shape (Hips -> Spine ->
Spine1 -> Spine2 -> Neck -> Head, Spine2 -> Shoulder -> Arm -> ForeArm -> Hand -> five three-bone
fingers, Hips -> UpLeg -> Leg -> Foot -> ToeBase), so renaming is all it takes for the retargeters that
map ``mixamorig:`` names automatically (Unity's Humanoid avatar, Unreal's IK Retargeter, Blender
add-ons). Beyond Mixamo's standard bones: ``mixamorig:Jaw`` (Unity's optional jaw bone) and the eyes
(``mixamorig:LeftEye``/``RightEye``, which Mixamo characters with eyes have). Mixamo's end bones
(``HeadTop_End``, ``...Thumb4``, ``Toe_End``) carry no motion and are not written.

"left" is the body's own left in both conventions.
"""
from __future__ import annotations

from ..motion.skeleton import JOINT_NAMES, N_JOINTS

__all__ = ["RIGS", "MIXAMO_PREFIX", "bone_names"]

RIGS = ("smplx", "mixamo")
MIXAMO_PREFIX = "mixamorig:"

_MIXAMO_BODY = {
    "pelvis": "Hips", "spine1": "Spine", "spine2": "Spine1", "spine3": "Spine2", "neck": "Neck", "head": "Head",
    "jaw": "Jaw", "left_eye": "LeftEye", "right_eye": "RightEye",
    "left_hip": "LeftUpLeg", "left_knee": "LeftLeg", "left_ankle": "LeftFoot", "left_foot": "LeftToeBase",
    "right_hip": "RightUpLeg", "right_knee": "RightLeg", "right_ankle": "RightFoot", "right_foot": "RightToeBase",
    "left_collar": "LeftShoulder", "left_shoulder": "LeftArm", "left_elbow": "LeftForeArm", "left_wrist": "LeftHand",
    "right_collar": "RightShoulder", "right_shoulder": "RightArm", "right_elbow": "RightForeArm",
    "right_wrist": "RightHand",
}


def _mixamo(name: str) -> str:
    if name in _MIXAMO_BODY:
        return MIXAMO_PREFIX + _MIXAMO_BODY[name]
    side, finger = name.split("_")  # e.g. left_index2 -> LeftHandIndex2
    return f"{MIXAMO_PREFIX}{side.capitalize()}Hand{finger[:-1].capitalize()}{finger[-1]}"


_NAMES = {"smplx": JOINT_NAMES, "mixamo": tuple(_mixamo(n) for n in JOINT_NAMES)}
assert all(len(set(v)) == N_JOINTS for v in _NAMES.values())


def bone_names(rig: str = "smplx") -> tuple[str, ...]:
    """The 55 bone names of ``rig`` (one of `RIGS`), in SMPL-X joint order."""
    try:
        return _NAMES[rig]
    except KeyError:
        raise ValueError(f"rig must be one of {', '.join(RIGS)}, got {rig!r}") from None
