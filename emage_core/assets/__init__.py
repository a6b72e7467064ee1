"""Files shipped inside the package (see README.md here): the baked free bodies, the SMPL-X skeleton,
example speech, checkpoints."""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
CHECKPOINTS = ASSETS.parent / "checkpoints"  # bundled model checkpoints, one folder each
ANNY_BODY = ASSETS / "anny_body.npz"  # the free Anny body (scripts/bake_body.py)
SMPLX_SKELETON = ASSETS / "smplx_skeleton.npz"  # SMPL-X rest joints, mean hand, soles (scripts/bake_smplx_skeleton.py)
MANNEQUIN_BODY = ASSETS / "mannequin_body.npz"  # mannequin-x's wooden mannequin (scripts/bake_smplx_skeleton.py)
MANNEQUIN_LICENSE = ASSETS / "LICENSE.mannequin-x.txt"  # Apache-2.0, for the two files above
EXAMPLE_SPEECH = ASSETS / "speech"


def example_speech() -> list[Path]:
    """The example speech clips (espeak-ng, CC0), sorted by name."""
    return sorted(EXAMPLE_SPEECH.glob("*.wav"))
