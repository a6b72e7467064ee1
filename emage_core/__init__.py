"""EMAGE Studio core: speech in, holistic SMPL-X + FLAME co-speech motion out.

Importable without Gradio. The modules, one job each:

- `skeleton`  SMPL-X joint names, parents and EMAGE's body parts
- `rotation`  axis-angle / matrix / 6D / quaternion conversions
- `motion`    the `Motion` clip type and its time operations
- `beat2`     BEAT2 ``.npz`` reading and writing
- `audio`     speech loading (any common format, to 16 kHz mono)
- `hub`       finding and reading checkpoints (local folders, Hugging Face Hub)
- `model`     the EMAGE networks
- `inference` windowed generation over speech of any length
- `cli`       ``python -m emage_core``
"""
from .motion import Motion, MotionError

__version__ = "0.1.0"
__all__ = ["Motion", "MotionError", "__version__"]
