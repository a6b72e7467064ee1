"""The project's quick motion metrics: plain functions on arrays, like librosa's.

These are diagnostics for one clip and its speech (the ``metrics`` command, the model card's quality
table). For the official BEAT2 evaluation (FGD, BC, Diversity, face MSE / LVD with the released
numerics) see `emage_core.metrics.official` and ``python -m emage_core evaluate``.

- `beat_consistency` (BC in EMAGE's spirit, the project's settings): how close the upper body's
  velocity minima sit to speech onsets, in [0, 1], higher = better aligned. Not the official number
  (that is `emage_core.metrics.official_beat_consistency`);
- `variant_l1_distance`: how different several variants for the same speech are (metres). Not
  EMAGE's "Diversity" / L1div (a within-clip variability: `emage_core.metrics.l1div`);
- `jerk`: mean magnitude of the third time derivative of joint positions (m/s^3), lower = smoother;
- `jaw_envelope_correlation`: a lip-sync proxy, Pearson correlation between jaw opening and
  the speech loudness envelope at the motion frame rate.

Arrays: positions (T, J, 3) in metres (from `emage_core.motion.kinematics.joint_positions`), poses
(T, 55, 3) axis-angle, audio (N,) mono float at ``sr`` Hz. `motion_metrics` computes all of it
for a `Motion` and its speech.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.signal import argrelextrema

from ..audio import SAMPLE_RATE
from ..motion.clip import DEFAULT_FPS
from ..motion.skeleton import JAW, UPPER_JOINTS

__all__ = [
    "speech_onsets", "joint_speed", "velocity_minima", "beat_consistency", "variant_l1_distance", "l1_diversity", "jerk",
    "speech_envelope", "jaw_opening", "jaw_envelope_correlation", "motion_metrics",
]

# EMAGE's BC settings (emage_evaltools/mertic.py): Gaussian width in seconds, the half-width in
# frames of a local minimum, and the speed (relative to the normaliser) below which a minimum
# is a rest rather than a beat.
BC_SIGMA = 0.3
BC_ORDER = 7
BC_THRESHOLD = 0.1
ONSET_HOP = 512


def speech_onsets(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Onset times (s) of speech, librosa's onset detector with hop 512 as EMAGE uses it."""
    import librosa  # heavy import (numba): only where onsets are needed

    y = np.ascontiguousarray(audio, dtype=np.float32)
    return librosa.onset.onset_detect(y=y, sr=sr, hop_length=ONSET_HOP, units="time")


def joint_speed(positions: np.ndarray, fps: float = DEFAULT_FPS) -> np.ndarray:
    """(T, J, 3) -> (T, J) speed in m/s: central differences inside, one-sided at both ends."""
    p = np.asarray(positions, np.float64)
    if p.shape[0] < 2:
        return np.zeros(p.shape[:2])
    v = np.gradient(p, 1.0 / fps, axis=0)  # central inside, first-order one-sided at the ends
    return np.linalg.norm(v, axis=-1)


def velocity_minima(speed: np.ndarray, order: int = BC_ORDER, threshold: float = BC_THRESHOLD,
                    normalizer: float | np.ndarray | None = None) -> list[np.ndarray]:
    """Motion beats of each joint: frames where its speed (T, J) is a strict local minimum over
    +-``order`` frames and still above ``threshold`` x ``normalizer`` (a minimum at rest is no beat).

    ``normalizer`` (a scalar or per-joint (J,)) is the typical speed. EMAGE divides by the mean
    joint speed of its whole dataset (a file it downloads); the default here is each joint's
    mean speed over ``speed`` itself. Pass the training data's to compare clips on one scale.
    """
    speed = np.asarray(speed, np.float64)
    norm = speed.mean(axis=0) if normalizer is None else np.asarray(normalizer, np.float64)
    rel = speed / np.maximum(norm, 1e-12)
    beats = []
    for j in range(speed.shape[1]):
        minima = argrelextrema(rel[:, j], np.less, order=order)[0]
        beats.append(minima[rel[minima, j] > threshold])
    return beats


def _gaussian_hit_rate(beats_s: np.ndarray, onsets_s: np.ndarray, sigma: float) -> float:
    """Mean over onsets of exp(-d^2 / 2 sigma^2), d = distance to the nearest beat (EMAGE's GAHR)."""
    d = np.abs(onsets_s[:, None] - beats_s[None, :]).min(axis=1)
    return float(np.mean(np.exp(-(d**2) / (2 * sigma**2))))


def beat_consistency(
    positions: np.ndarray,
    onsets: np.ndarray | None = None,
    *,
    audio: np.ndarray | None = None,
    sr: int = SAMPLE_RATE,
    fps: float = DEFAULT_FPS,
    sigma: float = BC_SIGMA,
    order: int = BC_ORDER,
    threshold: float = BC_THRESHOLD,
    joints: Sequence[int] = UPPER_JOINTS,
    normalizer: float | np.ndarray | None = None,
) -> float:
    """EMAGE's beat consistency of joint positions (T, J, 3) with speech onsets (seconds).

    Give ``onsets`` or ``audio`` (then `speech_onsets`). For each joint in ``joints`` (default the
    upper body 3, 6, 9, 12-21): the mean over onsets of exp(-d^2 / 2 sigma^2), d the distance to
    its nearest velocity minimum (`velocity_minima`); a joint without minima scores 0. BC is the
    mean over those joints. NaN when there are no onsets.
    """
    if onsets is None:
        if audio is None:
            raise ValueError("give onsets or audio")
        onsets = speech_onsets(audio, sr)
    onsets = np.asarray(onsets, np.float64).reshape(-1)
    if onsets.size == 0:
        return math.nan
    speed = joint_speed(positions, fps)
    beats = velocity_minima(speed, order, threshold, normalizer)
    scores = [_gaussian_hit_rate(beats[j] / fps, onsets, sigma) if beats[j].size else 0.0 for j in joints]
    return float(np.mean(scores))


def variant_l1_distance(variants: np.ndarray | Sequence[np.ndarray]) -> float:
    """How much N variants (N, T, ...) of the same clip differ: the L1 distance of each from their
    mean, summed over the feature dims and averaged over variants and frames. For positions
    (N, T, J, 3) the unit is metres. 0 when identical.

    A distance *between* variants generated for one speech (what sampling adds). Not EMAGE's
    "Diversity" (`emage_core.metrics.l1div`), which measures how far one clip's frames stray from
    that clip's own mean pose and needs a single clip.
    """
    x = np.asarray(variants if isinstance(variants, np.ndarray) else np.stack(variants), np.float64)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 variants shaped (N, T, ...), got {x.shape}")
    d = (x - x[0]).reshape(x.shape[0], x.shape[1], -1)  # relative to one variant: exact 0 when identical
    return float(np.abs(d - d.mean(axis=0)).sum(axis=-1).mean())


#: The old name of `variant_l1_distance`, kept for existing callers. It is NOT EMAGE's L1div /
#: "Diversity" (`emage_core.metrics.l1div`); new code should use `variant_l1_distance`.
l1_diversity = variant_l1_distance


def jerk(positions: np.ndarray, fps: float = DEFAULT_FPS) -> float:
    """Mean |d^3 p / dt^3| over frames and joints (m/s^3) of positions (T, J, 3), by third finite
    differences (exact for cubic trajectories). Needs T >= 4."""
    p = np.asarray(positions, np.float64)
    if p.shape[0] < 4:
        raise ValueError(f"jerk needs at least 4 frames, got {p.shape[0]}")
    d3 = np.diff(p, n=3, axis=0) * fps**3
    return float(np.linalg.norm(d3, axis=-1).mean())


def speech_envelope(audio: np.ndarray, sr: int = SAMPLE_RATE, fps: float = DEFAULT_FPS, n_frames: int | None = None) -> np.ndarray:
    """(T,) RMS loudness of each motion frame: frame t covers samples [t sr/fps, (t+1) sr/fps).
    ``n_frames`` defaults to ``floor(N fps / sr)``; frames past the audio are 0."""
    a = np.asarray(audio, np.float64).reshape(-1)
    T = int(a.shape[0] * fps // sr) if n_frames is None else int(n_frames)
    edges = np.round(np.arange(T + 1) * sr / fps).astype(np.int64)
    sq = np.concatenate([[0.0], np.cumsum(a * a)])
    lo, hi = np.minimum(edges[:-1], a.shape[0]), np.minimum(edges[1:], a.shape[0])
    n = np.maximum(hi - lo, 1)
    return np.sqrt(np.maximum(sq[hi] - sq[lo], 0) / n)


def jaw_opening(poses: np.ndarray) -> np.ndarray:
    """(T, 55, 3) or (T, 165) axis-angle -> (T,) jaw rotation angle in radians (0 = closed)."""
    p = np.asarray(poses, np.float64)
    p = p.reshape(p.shape[0], -1, 3)
    return np.linalg.norm(p[:, JAW], axis=-1)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else 0.0  # a constant signal follows nothing


def jaw_envelope_correlation(poses: np.ndarray, audio: np.ndarray, sr: int = SAMPLE_RATE, fps: float = DEFAULT_FPS) -> float:
    """Pearson correlation of `jaw_opening` (poses (T, 55, 3)) with `speech_envelope` of the
    speech, over the frames both cover, no lag. ~0.3 for real BEAT2 capture; 0 for a still jaw."""
    jaw = jaw_opening(poses)
    env = speech_envelope(audio, sr, fps)
    T = min(len(jaw), len(env))
    return _pearson(jaw[:T], env[:T])


def motion_metrics(motion, audio: np.ndarray, sr: int = SAMPLE_RATE,
                   normalizer: float | np.ndarray | None = None) -> dict[str, float]:
    """BC, jerk and jaw-envelope correlation of a `Motion` with its speech (N,) at ``sr``.

    Joint positions come from `emage_core.motion.kinematics.joint_positions`; ``normalizer`` goes to
    `beat_consistency` (e.g. the per-joint mean speed of real data, from `joint_speed`).
    """
    from ..motion.kinematics import joint_positions

    pos = np.asarray(joint_positions(motion))
    T = min(motion.n_frames, int(len(audio) * motion.fps // sr))
    return {
        "frames": motion.n_frames,
        "bc": beat_consistency(pos[:T], audio=audio[: int(round(T * sr / motion.fps))], sr=sr, fps=motion.fps,
                               normalizer=normalizer),
        "jerk": jerk(pos, motion.fps),
        "jaw_envelope_corr": jaw_envelope_correlation(motion.poses, audio, sr, motion.fps),
    }
