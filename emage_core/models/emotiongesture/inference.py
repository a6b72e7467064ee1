"""Any length: windows of T frames, each seeded by the S frames before it.

    x = rollout(model, mel, label=..., z=..., window=64)     # (n_frames, 258) normalised poses

Frames are generated window by window. Window k starts where the one before stopped; its seed is the
S frames before its start (the previous window's last frames; before frame 0, the rest seed: the
training data's mean pose), and its audio covers the seed frames and its own (silence past either end).
The Spatial-Temporal Prompter continues from the seed; with ``overlap`` O > 0 (the generator's default:
`DEFAULT_OVERLAP`) each window starts O frames before the previous one stopped and its first O frames are
crossfaded with the previous window's last ones, so what is left of a jump where the model's first frames
do not quite continue the seed is spread over O frames (jerk near the seams of the bundled default: 16x
the jerk elsewhere without the crossfade).

Known frames (locks of the upper body or hands, on their channels) are written over the motion before
every window reads its seed and after it is generated, so locked frames serve as seed frames. When a
lock ends inside a window, the next window starts at its end: the motion continues out of the lock from
its last S frames. (Into a lock, `edit.locks.apply_locks` crossfades afterwards.)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .model import EmotionGestureModel

DEFAULT_OVERLAP = 16  # frames crossfaded between consecutive windows (the generator's default)


def lock_ends(known_mask: np.ndarray | None) -> list[int]:
    """Frames where a run of known frames ends, (T, C) bool -> sorted frame indices (exclusive ends)."""
    if known_mask is None:
        return []
    any_known = known_mask.any(axis=1).astype(np.int8)
    return [int(i) + 1 for i in np.flatnonzero(np.diff(any_known, append=0) == -1)]


@torch.no_grad()
def rollout(model: EmotionGestureModel, mel: np.ndarray, *, label: int, window: int,
            silence: np.ndarray, temperature: float = 0.0, generator: torch.Generator | None = None,
            known: np.ndarray | None = None, known_mask: np.ndarray | None = None,
            guidance: float = 1.0, overlap: int = 0,
            progress: Callable[[float, str], None] | None = None) -> np.ndarray:
    """Generate every frame of a clip.

    mel: (n_frames, n_mels) normalised log-mel, one row per frame; silence: (n_mels,) the normalised row
    of silence (padding). label: the emotion label row (``cfg.null_label`` = none). Each window draws its
    emotion latent z = temperature x N(0, I) from ``generator`` (a CPU generator: the same numbers on every
    device; temperature 0: z = 0, the prior's mean). window: T, frames per window. known / known_mask:
    (n_frames, 258) normalised given values and where they apply. guidance: classifier-free guidance of the label (1 = as trained):
    ``poses = uncond + guidance (cond - uncond)``. overlap: frames each window shares with the one
    before, crossfaded linearly (0 <= overlap < window; not after a lock ends, where the window restarts
    exactly at the lock's end). Returns (n_frames, 258) float32, normalised.
    """
    cfg = model.cfg
    device = next(model.parameters()).device
    S, T, P = cfg.seed_frames, int(window), cfg.pose_dim
    O = int(overlap)
    if not 0 <= O < T:
        raise ValueError(f"overlap must be 0..{T - 1} frames for windows of {T}, got {overlap}")
    n = mel.shape[0]
    motion = np.zeros((S + n + T, P), np.float32)  # row i = frame i - S; rows < S: the rest seed
    audio = np.concatenate([np.repeat(silence[None], S, 0), mel, np.repeat(silence[None], T, 0)]).astype(np.float32)
    given = np.zeros_like(motion, dtype=bool)
    if known is not None:
        given[S:S + n] = known_mask
        motion[S:S + n][known_mask] = known[known_mask]
    ends = lock_ends(known_mask)
    guided = guidance != 1 and label != cfg.null_label
    labels = torch.tensor([label, cfg.null_label] if guided else [label], device=device)
    start, n_windows, k, blend = 0, max(1, -(-n // (T - O))), 0, 0
    ramp = (np.arange(1, O + 1, dtype=np.float32) / (O + 1))[:, None]  # (O, 1) weight of the new window
    while start < n:
        seed = torch.from_numpy(motion[start:start + S])[None].to(device).expand(len(labels), -1, -1)
        mel_w = torch.from_numpy(audio[start:start + S + T])[None].to(device).expand(len(labels), -1, -1)
        z = temperature * torch.randn(cfg.latent_dim, generator=generator) if temperature else torch.zeros(cfg.latent_dim)
        out = model(mel_w, seed, labels, z=z.to(device)[None].expand(len(labels), -1)).poses
        poses = out[1] + guidance * (out[0] - out[1]) if guided else out[0]
        rows = slice(start + S, start + S + T)
        new = poses.cpu().numpy()
        if blend:
            new[:blend] = (1 - ramp) * motion[start + S:start + S + blend] + ramp * new[:blend]
        motion[rows] = np.where(given[rows], motion[rows], new)
        stop = min([e for e in ends if start < e < start + T] + [start + T])
        blend = O if stop == start + T and stop < n else 0  # a lock's end restarts there, unblended
        start, k = stop - blend, k + 1
        if progress is not None:
            progress(min(1.0, start / n), f"window {k} (~{n_windows})")
    return motion[S:S + n].copy()
