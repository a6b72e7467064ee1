"""Locked parts: keep chosen parts of a reference motion over time spans, let the model do the rest.

A lock is ``(part, start_s, end_s)`` over a reference `Motion` aligned with the speech (reference
frame 0 = speech time 0). It covers frames ``[round(start * fps), round(end * fps))``.

Two steps use locks:

1. before generation, `part_frame_masks` says which frames of which part are given, and the
   generator turns that into EMAGE's masked motion input (mask 0 = given), so the model completes
   the free parts around the locked ones;
2. after generation, `apply_locks` copies the locked frames from the reference exactly and blends a
   short crossfade just outside each span, so the hand-over does not pop.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..motion.clip import DEFAULT_FPS
from ..motion import rotation
from ..motion.clip import Motion
from ..motion.skeleton import PARTS

DEFAULT_CROSSFADE = 0.2  # seconds


class LockError(ValueError):
    """A lock that cannot be applied: unknown part, empty span, outside the speech, reference too short."""


@dataclass(frozen=True)
class Lock:
    part: str
    start: float  # seconds
    end: float  # seconds

    @classmethod
    def parse(cls, text: str) -> "Lock":
        """``"upper:1.5-3"`` -> ``Lock("upper", 1.5, 3.0)`` (the CLI's ``--lock PART:START-END``)."""
        m = re.fullmatch(r"\s*(\w+)\s*:\s*([0-9.]+)\s*-\s*([0-9.]+)\s*", text)
        if not m:
            raise LockError(f"cannot read lock {text!r}: expected PART:START-END in seconds, e.g. upper:1.5-3")
        return cls(m.group(1), float(m.group(2)), float(m.group(3)))

    def frames(self, fps: float = DEFAULT_FPS) -> tuple[int, int]:
        """The frame span ``[first, stop)`` this lock covers."""
        return int(round(self.start * fps)), int(round(self.end * fps))

    def __str__(self) -> str:
        return f"{self.part}:{self.start:g}-{self.end:g}"


def validate_locks(locks: list[Lock], n_frames: int, reference: Motion | None, fps: float = DEFAULT_FPS) -> None:
    """Raise `LockError` for the first lock that cannot be honoured on a clip of ``n_frames``."""
    if locks and reference is None:
        raise LockError("locks need a reference motion to take the locked parts from")
    for lock in locks:
        if lock.part not in PARTS:
            raise LockError(f"lock {lock}: unknown part {lock.part!r}; parts are {', '.join(PARTS)}")
        if not (np.isfinite(lock.start) and np.isfinite(lock.end)) or lock.start < 0:
            raise LockError(f"lock {lock}: times must be finite and not negative")
        if lock.start >= lock.end:
            raise LockError(f"lock {lock}: start must be before end")
        first, stop = lock.frames(fps)
        if stop > n_frames:
            raise LockError(f"lock {lock}: ends at {lock.end:g} s, after the speech ({n_frames / fps:.2f} s)")
        if stop <= first:
            raise LockError(f"lock {lock}: shorter than one frame")
        if reference.fps != fps:
            raise LockError(f"the reference motion is at {reference.fps:g} fps; resample it to {fps:g} first")
        if stop > reference.n_frames:
            raise LockError(f"lock {lock}: the reference motion has only {reference.duration:.2f} s "
                            f"({reference.n_frames} frames)")


def part_frame_masks(locks: list[Lock], n_frames: int, fps: float = DEFAULT_FPS) -> dict[str, np.ndarray]:
    """``{part: (T,) bool}``: True where that part is locked. Only locked parts appear."""
    masks: dict[str, np.ndarray] = {}
    for lock in locks:
        first, stop = lock.frames(fps)
        masks.setdefault(lock.part, np.zeros(n_frames, bool))[first:stop] = True
    return masks


def _nearest_locked(locked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each frame: distance in frames to the nearest locked frame, and that frame's index.

    (T,) bool -> (T,) int distance (0 on locked frames, large where nothing is locked), (T,) int index.
    """
    T = locked.shape[0]
    idx = np.arange(T)
    big = T + 1
    # last locked frame at or before t, first locked frame at or after t
    left = np.where(locked, idx, -big)
    left = np.maximum.accumulate(left)
    right = np.where(locked, idx, 2 * big + T)
    right = np.minimum.accumulate(right[::-1])[::-1]
    dl, dr = idx - left, right - idx
    use_left = dl <= dr
    return np.where(use_left, dl, dr), np.where(use_left, left, right).clip(0, T - 1)


def crossfade_weights(distance: np.ndarray, n: int) -> np.ndarray:
    """Weight of the reference at ``distance`` frames outside a span, for a crossfade of ``n`` frames.

    1 inside the span (distance 0), easing (smoothstep) to 0 at distance n + 1 and beyond.
    """
    if n <= 0:
        return (distance == 0).astype(np.float64)
    x = np.clip(distance / (n + 1), 0, 1)
    return 1 - x * x * (3 - 2 * x)


def apply_locks(generated: Motion, reference: Motion, locks: list[Lock], crossfade: float = DEFAULT_CROSSFADE) -> Motion:
    """The generated motion with locked spans copied from ``reference`` and crossfades around them.

    Inside a span the values are the reference's exactly. Within ``crossfade`` seconds outside it,
    rotations are slerped and expressions / translation interpolated from the generated value toward
    the reference value at the nearest locked frame. Farther away, the generated motion is untouched.
    """
    out = generated.slice()
    n = int(round(crossfade * generated.fps))
    for part, locked in part_frame_masks(locks, generated.n_frames, generated.fps).items():
        dist, nearest = _nearest_locked(locked)
        w = crossfade_weights(dist, n)
        touched = w > 0
        if not touched.any():
            continue
        t, src, wt = np.flatnonzero(touched), nearest[touched], w[touched]
        joints = list(PARTS[part])
        if joints:
            q_gen = rotation.axis_angle_to_quaternion(out.poses[t][:, joints].astype(np.float64))
            q_ref = rotation.axis_angle_to_quaternion(reference.poses[src][:, joints].astype(np.float64))
            blended = rotation.quaternion_to_axis_angle(
                rotation.quaternion_slerp(q_gen, q_ref, np.repeat(wt[:, None], len(joints), 1)))
            exact = wt == 1  # copy, don't round-trip through quaternions
            blended[exact] = reference.poses[src[exact]][:, joints]
            out.poses[t[:, None], joints] = blended
        extra = {"face": "expressions", "global": "trans"}.get(part)
        if extra:
            gen, ref = getattr(out, extra), getattr(reference, extra)
            gen[t] = (1 - wt[:, None]) * gen[t] + wt[:, None] * ref[src]
    return out


def locks_from_rows(rows) -> list[Lock]:
    """Table rows ``(part, start, end)`` (strings or numbers, e.g. from the app's lock table) -> locks.

    Blank rows are skipped; a malformed row raises `LockError` naming its row number (1-based).
    """
    locks = []
    for i, row in enumerate(rows or [], 1):
        cells = ["" if c is None or (isinstance(c, float) and np.isnan(c)) else str(c).strip() for c in list(row)[:3]]
        cells += [""] * (3 - len(cells))
        if not any(cells):
            continue
        part, start, end = cells
        if part not in PARTS:
            raise LockError(f"lock row {i}: unknown part {part!r}; parts are {', '.join(PARTS)}")
        try:
            lock = Lock(part, float(start), float(end))
        except ValueError:
            raise LockError(f"lock row {i}: start and end must be numbers of seconds, got {start!r} and {end!r}") from None
        if not lock.start < lock.end:
            raise LockError(f"lock row {i}: start ({lock.start:g} s) must be before end ({lock.end:g} s)")
        locks.append(lock)
    return locks
