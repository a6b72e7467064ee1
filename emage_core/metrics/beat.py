"""Beat consistency (BC): how close the upper body's velocity minima sit to speech onsets.

Two variants, both reproduced:
- ``evaltools`` (current `emage_evaltools.mertic.BC` as `evaluation_fn` calls it): threshold 0.1,
  speech read at 16 kHz, onsets between 2 s and the motion's end - 2 s;
- ``paper`` (CVPR 2024 numbers, `utils/metric.alignment` + `emage_trainer.test`): threshold 0.3,
  speech read at 22.05 kHz then resampled to 16 kHz, onsets up to the *audio's* end - 2 s, and
  beats taken from |p - mean_t p| (the trainer's L1div overwrote the positions in place).

Positions are SMPL-X joints (T, 55, 3) in metres, float32; speech is mono at 16 kHz.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from scipy.signal import argrelextrema

__all__ = [
    "UPPER_BODY", "BCConfig", "BeatClip", "BeatResult", "SkippedClip", "NoOnsetError", "ClipTooShort", "load_speech", "speech_from_array",
    "onset_window", "speech_onsets", "normalised_speed", "motion_beats", "alignment", "clip_beat_consistency",
    "beat_consistency", "pad_beats",
]

#: SMPL-X joints BC scores: spine1-3, neck, collars, head, shoulders, elbows, wrists.
UPPER_BODY = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)


@dataclass(frozen=True)
class BCConfig:
    """BC settings; defaults = evaltools. `BCConfig.paper()` = the paper-era variant.

    sigma: Gaussian width (s). order: a beat is lower than ``order`` frames on each side.
    threshold: a minimum is kept when the normalised speed (see `motion_beats`) exceeds it.
    trim_frames: frames ignored at each end (2 s at 30 fps), audio trimmed to match.
    load_sr: the rate speech is first read at (paper: librosa's default 22,050 Hz).
    """

    sigma: float = 0.3
    order: int = 7
    threshold: float = 0.1
    fps: int = 30
    sr: int = 16000
    hop_length: int = 512
    trim_frames: int = 60
    upper_body: tuple[int, ...] = UPPER_BODY
    variant: str = "evaltools"
    load_sr: int = 16000

    def __post_init__(self):
        if self.variant not in ("evaltools", "paper"):
            raise ValueError(f"unknown BC variant {self.variant!r}")

    @classmethod
    def paper(cls, **kw) -> "BCConfig":
        return cls(**{"threshold": 0.3, "variant": "paper", "load_sr": 22050, **kw})


class SkippedClip(ValueError):
    """A clip BC cannot score; `beat_consistency` skips it and reports why."""


class NoOnsetError(SkippedClip):
    """No speech onset between the trims: the reference divides by zero here."""


class ClipTooShort(SkippedClip):
    """Not longer than the two trims (T <= 2 * trim_frames): nothing left to score."""


@dataclass
class BeatClip:
    """One clip's BC. beats: per joint (all J) kept beat frames, relative to frame ``trim_frames``.

    weight: the clip's weight in the length-weighted average (t - 2*trim).
    """

    bc: float
    weight: int
    onsets: np.ndarray
    beats: list[np.ndarray]
    per_joint: dict[int, float] = field(default_factory=dict)


@dataclass
class BeatResult:
    """Accumulated BC over clips (length-weighted), with the clips and any skipped ones."""

    value: float
    clips: list[BeatClip]
    skipped: list[tuple[int, str]]


def speech_from_array(y: np.ndarray, sr: int, cfg: BCConfig = BCConfig()) -> np.ndarray:
    """What the variant's audio path makes of a speech signal (as if it were a file at ``sr``):
    (N,) -> (N',) float32 mono at ``cfg.sr``.

    evaltools: resampled to 16 kHz only when not already (librosa.load(sr=16000)).
    paper: resampled to 22,050 Hz (librosa.load's default rate) and then to 16 kHz, both soxr_hq:
    the round trip changes the onsets.
    """
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if sr != cfg.load_sr:
        y = librosa.resample(y, orig_sr=sr, target_sr=cfg.load_sr)
    if cfg.load_sr != cfg.sr:
        y = librosa.resample(y, orig_sr=cfg.load_sr, target_sr=cfg.sr)
    return y


def load_speech(path: str | os.PathLike, cfg: BCConfig = BCConfig()) -> np.ndarray:
    """Read a speech file the way the variant does -> (N,) float32 mono at ``cfg.sr`` (16 kHz)."""
    import librosa

    y, _ = librosa.load(path, sr=cfg.load_sr)
    if cfg.load_sr != cfg.sr:
        y = librosa.resample(y, orig_sr=cfg.load_sr, target_sr=cfg.sr)
    return y


def onset_window(n_audio: int, t: int, cfg: BCConfig = BCConfig()) -> tuple[int, int]:
    """Sample range [start, end) of a clip's speech (``n_audio`` samples at cfg.sr) searched for
    onsets, for a motion of ``t`` frames. The arithmetic is the reference's, float rounding included.

    evaltools: [trim/fps * sr, int((t - trim)/fps * sr)) - ends 2 s before the motion does.
    paper: the speech is first cut to int(sr/fps * t) samples, then [int(trim * sr/fps),
    n_audio - that): the end is taken from the *uncut* audio, so with audio running on past the
    motion the window ends with the motion, not 2 s before it.
    """
    if cfg.variant == "evaltools":
        return int(cfg.trim_frames / cfg.fps * cfg.sr), int((t - cfg.trim_frames) / cfg.fps * cfg.sr)
    offset = int(cfg.trim_frames * (cfg.sr / cfg.fps))
    cut = min(n_audio, int(cfg.sr / cfg.fps * t))
    return offset, max(offset, min(cut, n_audio - offset))


def speech_onsets(y: np.ndarray, cfg: BCConfig = BCConfig()) -> np.ndarray:
    """(N,) speech at cfg.sr -> (n,) float64 onset times (s) from its first sample.

    librosa's onset detector with hop 512 and every other setting at its default (log-power mel
    spectral flux, normalised envelope, its peak-picking constants), as the reference calls it.
    """
    import librosa

    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.size == 0:
        return np.zeros(0)
    return librosa.onset.onset_detect(y=y, sr=cfg.sr, hop_length=cfg.hop_length, units="time")


def normalised_speed(positions: np.ndarray, mean_vel: np.ndarray, fps: int = 30) -> np.ndarray:
    """(T, J, 3) or (T, 3J) positions -> (T, J) float32 joint speed / per-joint normaliser (J,).

    Finite differences at ``fps``: forward at the first frame, central inside, backward at the
    last, in float32 with the reference's operation order (ties at the threshold stay ties).
    """
    p = np.asarray(positions, dtype=np.float32)
    t = p.shape[0]
    p = p.reshape(t, -1)
    dt = 1 / fps
    vel = np.concatenate([(p[1:2] - p[:1]) / dt, (p[2:] - p[:-2]) / (2 * dt), (p[-1:] - p[-2:-1]) / dt], 0)
    speed = np.linalg.norm(vel.reshape(t, -1, 3), axis=2)
    return speed / np.asarray(mean_vel, dtype=np.float32)


def motion_beats(speed: np.ndarray, start: int, end: int, cfg: BCConfig = BCConfig()) -> list[np.ndarray]:
    """(T, J) normalised speed -> per joint, int64 beat frames relative to ``start``.

    A beat is a strict local minimum of speed[start:end] (``order`` frames each side; the slice's
    edges are clipped, so its first and last frames never qualify) whose speed exceeds the
    threshold. Reference quirk kept on purpose: the threshold is tested at the *relative* index
    used as an absolute frame, i.e. ``start`` frames before the minimum it filters.
    """
    beats = []
    for j in range(speed.shape[1]):
        minima = argrelextrema(speed[start:end, j], np.less, order=cfg.order)[0]
        beats.append(minima[speed[minima, j] > cfg.threshold].astype(np.int64))
    return beats


def alignment(onsets: np.ndarray, beats: Sequence[np.ndarray], cfg: BCConfig = BCConfig()) -> tuple[float, dict[int, float]]:
    """Clip BC and per-joint scores.

    Per upper-body joint: mean over onsets of exp(-d^2 / 2 sigma^2), d = seconds to the joint's
    nearest beat (a joint without beats scores 0). Clip BC = sum / number of upper-body joints
    present (13 with the 55 SMPL-X joints).
    """
    onsets = np.asarray(onsets, dtype=np.float64)
    if onsets.size == 0:
        raise NoOnsetError("no speech onset in the window")
    scores: dict[int, float] = {}
    for j, b in enumerate(beats):  # joint order, like the reference's loop
        if j not in cfg.upper_body:
            continue
        if len(b) == 0:
            scores[j] = 0.0
            continue
        times = np.asarray(b) / cfg.fps
        d = np.abs(onsets[:, None] - times[None, :]).min(axis=1)
        scores[j] = float(np.mean(np.exp(-(d ** 2) / (2 * cfg.sigma ** 2))))
    # evaltools divides by len(upper_body), paper by the joints found: equal for 55-joint input
    denom = len(cfg.upper_body) if cfg.variant == "evaltools" else len(scores)
    return sum(scores.values()) / denom, scores


def clip_beat_consistency(positions: np.ndarray, speech: np.ndarray, mean_vel: np.ndarray,
                          cfg: BCConfig = BCConfig()) -> BeatClip:
    """One clip: positions (T, 55, 3) or (T, 165) float32 metres; speech (N,) at 16 kHz as the
    variant's reader returns it (`load_speech` / `speech_from_array`), starting with the motion.

    Raises NoOnsetError when the window holds no onset (the reference crashes there), ClipTooShort
    when T <= 2 * trim_frames.
    """
    p = np.asarray(positions, dtype=np.float32)
    t = p.shape[0]
    if t <= 2 * cfg.trim_frames:
        raise ClipTooShort(f"{t} frames <= 2 x {cfg.trim_frames} trimmed frames")
    if cfg.variant == "paper":
        # the paper-era trainer ran L1div.run on this array first, which overwrote it in place
        # with |p - mean over frames|: its beats are minima of that signal's speed
        flat = p.reshape(t, -1)
        p = np.abs(flat - np.mean(flat, axis=0))
    lo, hi = onset_window(len(speech), t, cfg)
    onsets = speech_onsets(speech[lo:hi], cfg)
    speed = normalised_speed(p, mean_vel, cfg.fps)
    beats = motion_beats(speed, cfg.trim_frames, t - cfg.trim_frames, cfg)
    bc, per_joint = alignment(onsets, beats, cfg)
    return BeatClip(bc, t - 2 * cfg.trim_frames, onsets, beats, per_joint)


def beat_consistency(clips: Iterable[tuple[np.ndarray, np.ndarray | str | os.PathLike]], mean_vel: np.ndarray,
                     cfg: BCConfig = BCConfig()) -> BeatResult:
    """BC over clips: sum of clip BC x (T - 120) / sum of (T - 120), as both variants accumulate.

    clips: (positions (T, 55, 3), speech) pairs; speech a path (read with `load_speech`) or a
    16 kHz array already read the variant's way. Clips with no onset in their window are skipped
    and listed in ``skipped`` (index, reason) instead of crashing as the reference does.
    """
    done, skipped = [], []
    for i, (pos, speech) in enumerate(clips):
        if isinstance(speech, (str, os.PathLike)):
            speech = load_speech(speech, cfg)
        try:
            done.append(clip_beat_consistency(pos, speech, mean_vel, cfg))
        except SkippedClip as err:
            skipped.append((i, str(err)))
    total = sum(c.weight for c in done)
    value = sum(c.bc * c.weight for c in done) / total if total > 0 else float("nan")
    return BeatResult(value, done, skipped)


def pad_beats(beats: Sequence[np.ndarray]) -> np.ndarray:
    """Per-joint beat lists -> (J, m) int64 padded with -1 (m = the longest list)."""
    m = max((len(b) for b in beats), default=0)
    out = np.full((len(beats), m), -1, dtype=np.int64)
    for j, b in enumerate(beats):
        out[j, :len(b)] = b
    return out
