"""Files shipped inside the package (see README.md here): the baked free body, example speech, checkpoints."""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
CHECKPOINTS = ASSETS.parent / "checkpoints"  # bundled model checkpoints, one folder each
ANNY_BODY = ASSETS / "anny_body.npz"
EXAMPLE_SPEECH = ASSETS / "speech"


def example_speech() -> list[Path]:
    """The example speech clips (espeak-ng, CC0), sorted by name."""
    return sorted(EXAMPLE_SPEECH.glob("*.wav"))
