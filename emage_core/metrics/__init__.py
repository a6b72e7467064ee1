"""Motion metrics: the project's quick diagnostics, and the official BEAT2 evaluation reproduced exactly.

Two families, deliberately named apart:

- **Quick diagnostics** (`emage_core.metrics.motion`, imported here; NumPy/SciPy only):
  `beat_consistency` (the project's per-clip BC), `variant_l1_distance` (how different several variants
  for one speech are; ``l1_diversity`` is its old name), `jerk`, `jaw_envelope_correlation`,
  `motion_metrics`. The ``metrics`` command and the model card use these.
- **The official evaluation** (EMAGE's Table 4 metrics with the released evaluator's numerics; loaded on
  first use, they need torch): `fgd` / `frechet_terms` / `fgd_features` (FGD with the skeleton-aware
  encoder, `load_evaluator` fetches it from the Hub), `official_beat_consistency` (BC, evaltools or
  paper-era via `BCConfig`), `l1div` (the paper's "Diversity": within-clip variability, NOT
  `variant_l1_distance`), `face_mse`, `lvd` (from SMPL-X vertices, `SMPLXModel`), `DISPLAY_SCALE`.
  ``python -m emage_core evaluate`` runs them over BEAT2's test split (`emage_core.metrics.evaluate`);
  ``python -m emage_core parity evaltools`` checks them against the reference's golden outputs.

Modules: `motion` (quick diagnostics), `official` (FGD, L1div, face metrics, display scale), `beat`
(official BC), `fgd_encoder` + `skeleton_topology` + `rot6d` (the FGD evaluator network), `evaluator`
(its files from the Hub), `smplx_fk` (SMPL-X kinematics from a user's model file), `parity`, `evaluate`.
"""
from __future__ import annotations

from .motion import (
    BC_ORDER,
    BC_SIGMA,
    BC_THRESHOLD,
    ONSET_HOP,
    beat_consistency,
    jaw_envelope_correlation,
    jaw_opening,
    jerk,
    joint_speed,
    l1_diversity,
    motion_metrics,
    speech_envelope,
    speech_onsets,
    variant_l1_distance,
    velocity_minima,
)

# The official evaluation needs torch (and librosa for BC): its names load on first use.
_LAZY = {
    "DISPLAY_SCALE": ("official", "DISPLAY_SCALE"),
    "display": ("official", "display"),
    "fgd": ("official", "fgd"),
    "fgd_features": ("official", "fgd_features"),
    "paired_fgd_features": ("official", "paired_fgd_features"),
    "frechet_terms": ("official", "frechet_terms"),
    "FrechetTerms": ("official", "FrechetTerms"),
    "l1div": ("official", "l1div"),
    "face_mse": ("official", "face_mse"),
    "lvd": ("official", "lvd"),
    "body_fk_poses": ("official", "body_fk_poses"),
    "face_fk_poses": ("official", "face_fk_poses"),
    "BCConfig": ("beat", "BCConfig"),
    "official_beat_consistency": ("beat", "beat_consistency"),
    "official_clip_beat_consistency": ("beat", "clip_beat_consistency"),
    "load_speech": ("beat", "load_speech"),
    "FGDEncoderConfig": ("fgd_encoder", "FGDEncoderConfig"),
    "build_fgd_encoder": ("fgd_encoder", "build_fgd_encoder"),
    "load_fgd_encoder": ("fgd_encoder", "load_fgd_encoder"),
    "Evaluator": ("evaluator", "Evaluator"),
    "load_evaluator": ("evaluator", "load_evaluator"),
    "SMPLXModel": ("smplx_fk", "SMPLXModel"),
    "run_evaluation": ("evaluate", "run_evaluation"),
}

__all__ = [
    "BC_ORDER", "BC_SIGMA", "BC_THRESHOLD", "ONSET_HOP", "beat_consistency", "jaw_envelope_correlation",
    "jaw_opening", "jerk", "joint_speed", "l1_diversity", "motion_metrics", "speech_envelope", "speech_onsets",
    "variant_l1_distance", "velocity_minima", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emage_core.metrics' has no attribute {name!r}")
