"""Motion: the SMPL-X skeleton and its parts, rotations, the `Motion` clip, kinematics, BEAT2 and BVH files."""
from .clip import Motion, MotionError

__all__ = ["Motion", "MotionError"]
