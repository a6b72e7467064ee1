"""The official EMAGE / BEAT2 evaluation metrics as plain functions (the released numerics reproduced).

FGD     `fgd_features` -> `fgd` / `frechet_terms`  (skeleton-conv evaluator latents, Fréchet distance)
BC      `beat_consistency` (from `.beat`)          (velocity minima vs speech onsets; evaltools / paper)
L1div   `l1div`                                    (EMAGE's "Diversity": within-clip variability of joints)
Face    `face_mse`, `lvd`                          (vertex MSE; velocity (evaltools) or position (paper) L1)

Names: `l1div` here is the paper's Diversity. The project's older `emage_core.metrics.l1_diversity`
(= `variant_l1_distance`) is a different number, the distance between several variants for one speech.
Likewise `beat_consistency` here (re-exported as `emage_core.metrics.official_beat_consistency`) is the
official BC, while `emage_core.metrics.beat_consistency` is the project's quick per-clip BC.

Clips are passed as sequences of per-clip arrays; every metric accumulates over clips the way the
reference's classes do (sums and counts, not a mean of clip means). Values are *raw*; the paper's
tables show FGD x10, BC x10, MSE x1e7, LVD x1e5 (see `DISPLAY_SCALE`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import linalg

from .beat import BCConfig, BeatClip, BeatResult, beat_consistency, clip_beat_consistency, load_speech, speech_from_array
from .fgd_encoder import FGDAutoencoder
from .rot6d import poses_to_rot6d

__all__ = [
    "DISPLAY_SCALE", "display", "SMPLX_GLOBAL_ORIENT", "SMPLX_JAW", "SMPLX_EYES", "body_fk_poses", "face_fk_poses",
    "split_clips", "fgd_features", "paired_fgd_features", "FrechetTerms", "frechet_terms",
    "fgd", "l1div", "face_mse", "lvd", "BCConfig", "BeatClip", "BeatResult", "beat_consistency",
    "clip_beat_consistency", "load_speech", "speech_from_array",
]

#: Factor between raw values and the EMAGE paper's Table 4 (FGD and BC confirmed in PantoMatrix
#: #110; MSE / LVD read off the table header and magnitudes). Diversity is shown raw.
DISPLAY_SCALE = {"fgd": 10.0, "bc": 10.0, "l1div": 1.0, "mse_face": 1e7, "lvd_face": 1e5}


def display(name: str, raw: float) -> tuple[float, float]:
    """(raw, value as the paper's Table 4 prints it) for a metric in DISPLAY_SCALE."""
    return raw, raw * DISPLAY_SCALE[name]


def split_clips(stacked: np.ndarray, lengths: Sequence[int]) -> list[np.ndarray]:
    """(sum T_i, ...) rows stacked clip after clip -> list of (T_i, ...)."""
    return np.split(np.asarray(stacked), np.cumsum(lengths)[:-1])


# ------------------------------------------------------------------- what the kinematics is fed
# BC and L1div read SMPL-X joint positions, face MSE / LVD SMPL-X vertices, each computed from a
# masked pose (see NOTES.md). These helpers apply the masks; the forward kinematics is the caller's.

SMPLX_GLOBAL_ORIENT = 0
SMPLX_JAW = 22
SMPLX_EYES = (23, 24)


def body_fk_poses(poses: np.ndarray) -> np.ndarray:
    """(T, 165) axis-angle -> copy with global orientation, jaw and eyes zeroed: the pose BC and
    L1div positions come from (translation and expressions are zero too, betas the ground truth's)."""
    p = np.array(poses, copy=True).reshape(len(poses), 55, 3)
    p[:, [SMPLX_GLOBAL_ORIENT, SMPLX_JAW, *SMPLX_EYES]] = 0
    return p.reshape(len(poses), 165)


def face_fk_poses(poses: np.ndarray) -> np.ndarray:
    """(T, 165) axis-angle -> copy with everything but the jaw zeroed: the pose face vertices come
    from (with the clip's own 100 FLAME expressions and the ground truth's betas)."""
    p = np.zeros_like(np.asarray(poses)).reshape(len(poses), 55, 3)
    p[:, SMPLX_JAW] = np.asarray(poses).reshape(len(poses), 55, 3)[:, SMPLX_JAW]
    return p.reshape(len(poses), 165)


# ----------------------------------------------------------------------------------------- FGD

def fgd_features(model: FGDAutoencoder, poses: np.ndarray | torch.Tensor) -> np.ndarray:
    """One clip's FGD features: (T, 165) SMPL-X axis-angle -> (2*floor(T/32), D) float32.

    The evaluator reads ``model.config.joints`` as rot6d (no normalisation), the last T mod 32
    frames are dropped and the rest is encoded in one pass (no windows: GroupNorm sees the whole
    clip), one D-dim row per 16 frames. Clips shorter than 32 frames give no row.
    """
    cfg = model.config
    x = poses_to_rot6d(poses, cfg.joints)
    keep = x.shape[0] - x.shape[0] % cfg.vae_test_len
    if keep == 0:
        return np.zeros((0, cfg.vae_length), dtype=np.float32)
    dev = next(model.parameters()).device
    z = model.map2latent(x[None, :keep].to(dev))
    return z.reshape(-1, cfg.vae_length).cpu().numpy()


def paired_fgd_features(model: FGDAutoencoder, gen_clips: Sequence[np.ndarray],
                        real_clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per file, generated and real poses (T_g, 165), (T_r, 165) are cut to the shorter length,
    encoded, and the rows stacked over files -> ((N, D) generated, (N, D) real)."""
    gen, real = [], []
    for g, r in zip(gen_clips, real_clips, strict=True):
        t = min(len(g), len(r))
        gen.append(fgd_features(model, g[:t]))
        real.append(fgd_features(model, r[:t]))
    return np.concatenate(gen, 0), np.concatenate(real, 0)


@dataclass(frozen=True)
class FrechetTerms:
    """FD = mean + trace_gen + trace_real - 2 * trace_sqrt.

    mean: |mu_g - mu_r|^2 (float32, as the reference). trace_*: tr of each covariance.
    trace_sqrt: tr Re sqrtm((S_g + eps I)(S_r + eps I)) (evaltools; paper: eps only as fallback).
    rank_deficient: fewer than D+1 rows on a side - FD defined but noisy; say so next to it.
    """

    value: float
    mean: float
    trace_gen: float
    trace_real: float
    trace_sqrt: float
    n_gen: int
    n_real: int
    dim: int

    @property
    def rank_deficient(self) -> bool:
        return min(self.n_gen, self.n_real) <= self.dim


def frechet_terms(gen_feats: np.ndarray, real_feats: np.ndarray, eps: float = 1e-6,
                  variant: str = "evaltools") -> FrechetTerms:
    """Fréchet distance of two feature sets (N_g, D), (N_r, D) and its terms.

    evaltools (`FGD.frechet_distance`): eps*I always added to both covariances before
    ``scipy.linalg.sqrtm``; a complex root is replaced by its real part, unchecked.
    paper (`FIDCalculator`): sqrtm of the plain product; eps added only if that is not finite; a
    complex root whose diagonal has an imaginary part above 1e-3 makes FD = 1e10.
    Means are float32 (NumPy mean of float32), covariances float64 (np.cov, divisor N-1).
    """
    a = np.asarray(gen_feats, dtype=np.float32)
    b = np.asarray(real_feats, dtype=np.float32)
    mu_a, mu_b = np.mean(a, axis=0), np.mean(b, axis=0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = mu_a - mu_b
    mean = float(diff.dot(diff))  # float32 dot, as the reference
    tr_a, tr_b = float(np.trace(s_a)), float(np.trace(s_b))
    off = np.eye(s_a.shape[0]) * eps
    if variant == "evaltools":
        root = linalg.sqrtm((s_a + off).dot(s_b + off))
    elif variant == "paper":
        root = linalg.sqrtm(s_a.dot(s_b))
        if not np.isfinite(root).all():
            root = linalg.sqrtm((s_a + off).dot(s_b + off))
        if np.iscomplexobj(root) and not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            return FrechetTerms(1e10, mean, tr_a, tr_b, float("nan"), len(a), len(b), a.shape[1])
    else:
        raise ValueError(f"unknown FD variant {variant!r}")
    if np.iscomplexobj(root):
        root = root.real
    tr_root = float(np.trace(root))
    value = mean + tr_a + tr_b - 2 * tr_root
    return FrechetTerms(value, mean, tr_a, tr_b, tr_root, len(a), len(b), a.shape[1])


def fgd(real_feats: np.ndarray, gen_feats: np.ndarray, variant: str = "evaltools") -> float:
    """FGD (raw, not x10) between real (N_r, D) and generated (N_g, D) evaluator features."""
    return frechet_terms(gen_feats, real_feats, variant=variant).value


# -------------------------------------------------------------------------------------- L1div

def l1div(clips: Sequence[np.ndarray]) -> float:
    """EMAGE's "Diversity" (`L1div`): per clip positions (T_i, 55*3) or (T_i, 55, 3) metres ->
    sum over clips, frames and coordinates of |p - clip mean pose| / total frames.

    A within-clip variability (average per-frame L1 distance, summed over 165 coordinates, from the
    clip's own mean pose), NOT a distance between several samples for one speech (that is
    `emage_core.metrics.variant_l1_distance`, formerly ``l1_diversity``). Positions: SMPL-X joints
    from `body_fk_poses` (zero root orientation / translation, jaw, eyes, expressions; the ground
    truth's betas). Computed in float64 (the reference: float32 sums; < 5e-8 relative apart).
    """
    total, frames = 0.0, 0
    for p in clips:
        p = np.asarray(p, dtype=np.float64).reshape(len(p), -1)
        total += np.abs(p - p.mean(axis=0)).sum()
        frames += p.shape[0]
    return total / frames


# --------------------------------------------------------------------------------------- face

def face_mse(pred_clips: Sequence[np.ndarray], target_clips: Sequence[np.ndarray]) -> float:
    """Face vertex MSE: per clip (T_i, 3V) generated and ground-truth vertices (jaw + expressions
    only) -> sum of squared differences / sum of T_i * 3V. Paper-era and evaltools agree."""
    total, count = 0.0, 0
    for p, g in zip(pred_clips, target_clips, strict=True):
        p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
        total += np.square(p - g).sum()
        count += p.size
    return total / count


def lvd(pred_clips: Sequence[np.ndarray], target_clips: Sequence[np.ndarray], variant: str = "evaltools") -> float:
    """Face "LVD" on per-clip (T_i, 3V) vertices.

    evaltools (`LVDFace`): sum |Δpred - Δgt| over the T-1 frame differences / sum of T_i * 3V
    (divides by T, not T-1: kept).
    paper (`emage_trainer.test`): per clip L1Loss((pred[1:] - gt[:-1]), (gt[1:] - gt[:-1])) =
    mean |pred[1:] - gt[1:]| - a *position* error - then weighted by T_i across clips.
    """
    total, count = 0.0, 0
    for p, g in zip(pred_clips, target_clips, strict=True):
        p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
        t = p.shape[0]
        if variant == "evaltools":
            total += np.abs(np.diff(p, axis=0) - np.diff(g, axis=0)).sum()
            count += p.size
        elif variant == "paper":
            total += np.abs(p[1:] - g[1:]).mean() * t
            count += t
        else:
            raise ValueError(f"unknown LVD variant {variant!r}")
    return total / count
