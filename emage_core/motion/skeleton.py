"""The SMPL-X skeleton and the body parts EMAGE models separately.

Everything that needs to know "which joint is what" imports it from here:
the model (part feature layouts), locking, rendering, BVH export, metrics.
"""
from __future__ import annotations

N_JOINTS = 55
N_EXPRESSIONS = 100
N_BETAS = 300

_FINGERS = ("index", "middle", "pinky", "ring", "thumb")

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "jaw", "left_eye", "right_eye",
) + tuple(f"{side}_{finger}{i}" for side in ("left", "right") for finger in _FINGERS for i in (1, 2, 3))

# Parent of each joint (-1 for the root). Fingers chain 1 -> 2 -> 3 from their wrist.
PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
) + tuple(
    wrist if i == 0 else 25 + 15 * s + 3 * f + i - 1
    for s, wrist in enumerate((20, 21))
    for f in range(5)
    for i in range(3)
)

PELVIS, NECK, HEAD, JAW = 0, 12, 15, 22
EYES = (23, 24)
FOOT_JOINTS = (7, 8, 10, 11)  # ankles and toe bases: EMAGE's four foot-contact channels

# Joint sets of EMAGE's compositional parts (the order is the order of the features).
UPPER_JOINTS: tuple[int, ...] = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
HANDS_JOINTS: tuple[int, ...] = tuple(range(25, 55))
LOWER_JOINTS: tuple[int, ...] = (0, 1, 2, 4, 5, 7, 8, 10, 11)
FACE_JOINTS: tuple[int, ...] = (JAW,)
BODY_JOINTS: tuple[int, ...] = tuple(sorted(UPPER_JOINTS + HANDS_JOINTS + LOWER_JOINTS))  # all but the jaw and eyes

#: The lockable / generated parts. "face" also owns the 100 FLAME expressions, "global" the translation.
PARTS: dict[str, tuple[int, ...]] = {
    "face": FACE_JOINTS,
    "upper": UPPER_JOINTS,
    "hands": HANDS_JOINTS,
    "lower": LOWER_JOINTS,
    "global": (),
}
PART_NAMES: tuple[str, ...] = tuple(PARTS)


def joint_index(name: str) -> int:
    """Index of an SMPL-X joint by name, e.g. ``joint_index("right_wrist") == 21``."""
    try:
        return JOINT_NAMES.index(name)
    except ValueError:
        raise KeyError(f"unknown SMPL-X joint {name!r}") from None
