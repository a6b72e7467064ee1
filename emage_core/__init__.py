"""EMAGE Studio core: speech in, holistic SMPL-X + FLAME co-speech motion out.

Importable without Gradio. The folders follow the pipeline, each module one job:

- `audio`             speech loading (any common format, to 16 kHz mono)
- `motion/`           the SMPL-X joints and parts (`skeleton`), the SMPL-X skeleton without SMPL-X files
                      (`smplx_skeleton`), rotations, the `Motion` clip (`clip`), forward kinematics,
                      BEAT2 ``.npz`` and BVH files
- `models/`           checkpoint finding and reading (`hub`); each family's networks: `models/emage/`
                      (`model`, `windows`, `inference`, `streaming` for live mode)
- `edit/`             locked parts (`locks`), explicit expressive controls (`style`), idling in silence (`idle`)
- `generate/`         the generator interface (`interface`), `GenerationSettings` (`settings`), model
                      references and families (`registry`), EMAGE's generator (`emage`), completing
                      missing parts (`complete`), live sessions (`live`)
- `body/`             the free bodies (Anny, the wooden mannequin), the SMPL-X mesh when supplied
- `render/`           the OpenGL context (`gl`), the mesh renderer (`mesh`), videos and grids (`grid`),
                      the stick figure (`stick`), framing (`camera`), mp4 files (`video`)
- `train/`            datasets, learned labels and training (EMAGE, DiffSHEG)
- `metrics/`          motion metrics and the official BEAT2 evaluator (`evaluate`, `parity`)
- `serve/`            one request as a job (`jobs`), the worker process, output folders and retention, a live
                      session in the worker (`live`) and its WebSocket routes (`live_web`)
- `batch/`            stimuli for perception studies
- `cli/`              ``python -m emage_core``
- `assets`, `files`   files shipped in the package; sha256 and atomic writes

Common names are importable from here::

    from emage_core import Motion, GenerationSettings, Lock, generator_for, load_audio, read_beat2, write_beat2
"""
from .motion.clip import Motion, MotionError

__version__ = "0.5.0"

# Heavier names load on first use, so `import emage_core` stays light.
_LAZY = {
    "load_audio": ("audio", "load_audio"),
    "read_beat2": ("motion.beat2", "read_beat2"),
    "write_beat2": ("motion.beat2", "write_beat2"),
    "Lock": ("edit.locks", "Lock"),
    "StyleControls": ("edit.style", "StyleControls"),
    "GenerationSettings": ("generate.settings", "GenerationSettings"),
    "Generator": ("generate.interface", "Generator"),
    "Capabilities": ("generate.interface", "Capabilities"),
    "generator_for": ("generate.registry", "load"),
    "parse_ref": ("generate.registry", "parse_ref"),
    "EmageGenerator": ("generate.emage", "EmageGenerator"),
}

__all__ = ["Motion", "MotionError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'emage_core' has no attribute {name!r}")
